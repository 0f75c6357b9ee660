# An admin's `nft flush ruleset`: the provider restores what it owns.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="nft flush ruleset while connections are offloaded: the provider process that holds them (a long-running ctoffloadctl watch) restores its table and connections on its next refresh, and they offload again"

# The provider's state lives in its process (the kernel table is what an
# admin flushed), so the process that restores it must outlive the flush:
# a `watch`, whose every round is a refresh.  A one-shot command started
# after the flush has nothing to restore from.
lines_at_least() { (($(wc -l <"$S/watch.jsonl") >= $1)); }
table_handle() {
  rx nft -j -p list table inet "$PTABLE" 2>/dev/null | jq -r '.nftables[] | select(.table) | .table.handle' 2>/dev/null
}
table_remade() {
  local h
  h=$(table_handle)
  [[ -n $h && $h != "$before" ]]
}

scenario() {
  topo_basic
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start u udp c "$C6" 40002 "$S6" 5002 s
  xfer_send a 32768
  xfer_send u 32768
  add_flow a
  add_flow u
  xfer_send a 65536
  xfer_send u 32768
  expect_offloaded a
  expect_offloaded u

  bg timeout 120 ip netns exec "${NSP}r" "$CTL" -j watch --interval 300 >"$S/watch.jsonl" 2>"$S/watch.err"
  local wpid=$BG_PID
  wait_for 20 "watch printing" lines_at_least 1
  jq -e '.connections | length == 2' <(head -1 "$S/watch.jsonl") >/dev/null ||
    fail "the watch process did not adopt both connections: $(head -1 "$S/watch.jsonl")"

  local before
  before=$(table_handle)
  [[ -n $before ]] || fail "no handle for table inet $PTABLE before the flush"
  rx nft flush ruleset || fail "nft flush ruleset failed"
  log "ruleset flushed (table inet $PTABLE had handle $before)"
  # The test's own table goes back (an admin reloading theirs).  The watch
  # may already have put ours back: a table with a new handle says it was
  # flushed and made again, whenever that happened.
  test_table_base | rx nft -f - || fail "cannot reload the test table"

  poll_until 10 table_remade ||
    fail "table inet $PTABLE not restored within 10s by the running provider process (watch); its stderr: $(head -c 300 "$S/watch.err")"
  log "table inet $PTABLE is back with handle $(table_handle)"
  local n devs
  poll_until 5 elements_are 2 || fail "after the restore, $(prov_elements) selection elements (expected 2)"
  devs=$(ft_devices ft_sw | sort | tr '\n' ' ')
  [[ $devs == "r-c r-s " ]] || fail "ft_sw devices after the restore are '$devs', expected 'r-c r-s'"
  log "table restored with both elements, devices $devs"

  xfer_send a 65536
  xfer_send u 32768
  expect_offloaded a
  expect_offloaded u
  fast_path_check a 1048576
  kill -TERM "$wpid" 2>/dev/null || true

  # And a one-shot command now sees the restored connections.
  ctl_show
  jq -e '.connections | length == 2 and all(.[]; .offloaded)' <<<"$SHOW" >/dev/null ||
    fail "show -j after the restore: $SHOW"
  xfer_finish a
  xfer_finish u
}

elements_are() { (($(prov_elements) == $1)); }
