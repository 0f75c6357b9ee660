# An admin saves the ruleset (`nft list ruleset > /etc/nftables.conf`),
# flushes it (or reboots) and loads it back (`nft -f`, what Debian's
# nftables.service does at boot): the file loads, and ctoffload adopts the
# restored table and keeps working on it.  The same with nft's JSON form.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="save, flush, restore, adopt, keep working: nft list ruleset > file loads back with nft -f (and -j), connections (NAT included) offload again, and new ctoffloadctl processes list, update, delete, re-add and flush them"

# counter_flag: whether the provider's ft_sw has its `counter` flag.
counter_flag() { [[ $(rx nft list flowtable inet "$PTABLE" ft_sw 2>/dev/null) == *counter* ]]; }

# save_restore FORM: saves the ruleset in FORM ("text" or "json"), checks
# it with -c, flushes, loads it back.
save_restore() {
  local flag=() file=$S/saved.nft
  if [[ $1 == json ]]; then
    flag=(-j)
    file=$S/saved.json
  fi
  rx nft "${flag[@]}" list ruleset >"$file" || fail "nft ${flag[*]} list ruleset failed"
  rx nft "${flag[@]}" -c -f "$file" 2>"$S/check.err" ||
    fail "nft ${flag[*]} -c -f of the saved ruleset refuses it: $(head -c 400 "$S/check.err")"
  rx nft flush ruleset || fail "nft flush ruleset failed"
  rx nft "${flag[@]}" -f "$file" 2>"$S/load.err" ||
    fail "nft ${flag[*]} -f of the saved ruleset failed after the flush: $(head -c 400 "$S/load.err")"
  log "ruleset saved ($1), flushed and loaded back"
}

scenario() {
  topo_basic
  rx nft -f - <<EOT || fail "cannot load the NAT rules"
table inet fttest_nat {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "r-c" ip daddr $R4C tcp dport 8080 dnat ip to $S4:5002
  }
}
EOT
  # a: plain TCP/IPv4; d: DNAT to S4:5002; u: UDP/IPv6.
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start d tcp c "$C4" 40002 "$R4C" 8080 s 5002
  xfer_start u udp c "$C6" 40003 "$S6" 5003 s
  local id
  for id in a d u; do xfer_send "$id" 32768; done
  add_flow a
  local rs rsp rd rdp
  read -r rs rsp rd rdp <<<"$(ct_reply "$(ct_of d)")"
  add_flow d r-c --reply-src "$(ep "$rs" "$rsp")" --reply-dst "$(ep "$rd" "$rdp")"
  add_flow u
  for id in a d u; do xfer_send "$id" 65536; done
  for id in a d u; do expect_offloaded "$id"; done
  local listed
  listed=$(rx nft list ruleset)

  # ---- The text form: exactly what was saved comes back.
  save_restore text
  [[ $(rx nft list ruleset | sed 's/counter packets [0-9]* bytes [0-9]*/counter/') == \
    "$(sed 's/counter packets [0-9]* bytes [0-9]*/counter/' <<<"$listed")" ]] ||
    fail "the restored ruleset differs from the saved one"
  # The flush tore the offloads down; the restored selection offloads the
  # connections again at their next packets.
  for id in a d u; do xfer_send "$id" 65536; done
  for id in a d u; do expect_offloaded "$id"; done
  fast_path_check a 1048576

  # A new process adopts the restored table: it lists all three, NAT too.
  ctl_show
  jq -e '.connections | length == 3 and all(.[]; .offloaded and .iif == "r-c")' <<<"$SHOW" >/dev/null ||
    fail "a new process does not list the three restored connections as offloaded: $SHOW"
  local c
  c=$(show_conn d)
  jq -e --arg rs "$(ep "$rs" "$rsp")" '.reply_src == $rs' <<<"$c" >/dev/null ||
    fail "d's NAT reply tuple did not survive the restore: ${c:-$SHOW}"
  # update: last used is known (the readings of earlier processes are in
  # /run, untouched by nft).
  conn_of a
  local out
  out=$(ctl -j update "${CONN[@]}") || fail "update of a after the restore failed: $out"
  jq -e '.ok and .last_used_known' <<<"$out" >/dev/null || fail "update of a after the restore: $out"
  # del ends the offload; add offloads again; flush leaves nothing.
  del_flow a
  poll_until 2 no_off a || fail "a still offloaded after del on the restored table: $(ct_of a)"
  xfer_send a 65536
  expect_not_offloaded a
  add_flow a
  xfer_send a 65536
  expect_offloaded a
  log "the restored table works: show, update, del, add"

  # ---- The JSON form: nft 1.0.6 drops the table comment and the
  # flowtable flags there; the next process adopts the table anyway and
  # sets ft_sw's counter flag again (else last used would stop moving).
  save_restore json
  if counter_flag; then
    log "nft's JSON kept ft_sw's counter flag"
  else
    log "nft's JSON dropped ft_sw's counter flag, as nft 1.0.6 does"
  fi
  ctl_show
  jq -e '.connections | length == 3' <<<"$SHOW" >/dev/null || fail "after the JSON restore, show lists: $SHOW"
  counter_flag || fail "ft_sw has no counter flag after a new process adopted the JSON-restored table"
  for id in a d u; do xfer_send "$id" 65536; done
  for id in a d u; do expect_offloaded "$id"; done
  fast_path_check d 1048576

  ctl -j flush >/dev/null || fail "flush on the restored table failed"
  (($(prov_elements) == 0)) || fail "flush left $(prov_elements) elements"
  for id in a d u; do xfer_send "$id" 65536; done
  for id in a d u; do expect_not_offloaded "$id"; done
  for id in a d u; do xfer_finish "$id"; done
}
