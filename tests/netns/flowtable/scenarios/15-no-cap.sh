# Without CAP_NET_ADMIN: a clear error, nothing installed.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="ctoffloadctl without CAP_NET_ADMIN: probe and add say so clearly (EPERM), the software fallback takes it only when --providers names it, nothing reaches the kernel, the connection is not offloaded"

# Runs ctoffloadctl in the router with CAP_NET_ADMIN dropped from every
# capability set (still uid 0).
ctl_nocap() {
  ip netns exec "${NSP}r" setpriv --inh-caps=-all --ambient-caps=-all --bounding-set=-net_admin -- "$CTL" "$@"
}

scenario() {
  TOPO_NO_INIT=1 topo_basic
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_send a 32768

  # The drop itself works: the process really lacks CAP_NET_ADMIN.
  local caps
  caps=$(ip netns exec "${NSP}r" setpriv --inh-caps=-all --ambient-caps=-all --bounding-set=-net_admin -- \
    sh -c 'grep CapEff /proc/self/status')
  (( ((0x${caps##*[[:space:]]} >> 12) & 1) == 0 )) || fail "the capability drop did not work: $caps"

  local out rc=0
  out=$(ctl_nocap -j probe 2>&1) || rc=$?
  jq -e '.privileges == false and .errno == "EPERM" and (.reason | length) > 0' <<<"$out" >/dev/null ||
    fail "probe without CAP_NET_ADMIN should say privileges false, EPERM: $out"
  log "probe: $(jq -r .reason <<<"$out")"

  # Only the kernel provider: add fails with a clear error.
  rc=0
  conn_of a
  out=$(ctl_nocap --providers nft_flowtable add --iif r-c "${CONN[@]}" 2>&1) || rc=$?
  ((rc == 1)) || fail "add without CAP_NET_ADMIN exited $rc (expected 1): $out"
  [[ $out == *EPERM* || $out == *CAP_NET_ADMIN* || $out == *"not permitted"* ]] ||
    fail "add without CAP_NET_ADMIN does not say why: $out"
  log "add: $out"

  # Default providers: the kernel provider only, so the same failure; the
  # software fallback takes it only when named, and says so.
  rc=0
  out=$(ctl_nocap add --iif r-c "${CONN[@]}" 2>&1) || rc=$?
  if ((rc != 1)) || [[ $out != *EPERM* || $out == *"provider took it"* ]]; then
    fail "add with the default providers should fail with EPERM, not fall back: exit $rc, $out"
  fi
  rc=0
  out=$(ctl_nocap --providers nft_flowtable,software add --iif r-c "${CONN[@]}" 2>&1) || rc=$?
  if ((rc != 0)) || [[ $out != *"software (sw)"* || $out != *"lives in this process only"* ]]; then
    fail "add with --providers nft_flowtable,software should fall back to software and say so: exit $rc, $out"
  fi

  # Nothing reached the kernel.
  local tables
  tables=$(rx nft list tables)
  [[ $tables != *"$PTABLE"* ]] || fail "a table was installed without CAP_NET_ADMIN: $tables"
  [[ $(rx cat /proc/sys/net/netfilter/nf_conntrack_acct) == 0 ]] ||
    fail "nf_conntrack_acct was changed without CAP_NET_ADMIN"
  xfer_send a 131072
  expect_not_offloaded a
  xfer_finish a
}
