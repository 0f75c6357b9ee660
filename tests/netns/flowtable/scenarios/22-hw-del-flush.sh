# conn_del and flush with the NIC holding the flows.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="del of a hardware-offloaded connection: the NIC's rules are destroyed (DESTROY counted) within 3 s and the stream goes on, intact, through the router's stack; flush: no rule left in the NIC, no offload, nothing listed"

scenario() {
  topo_hw
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start b udp c "$C6" 40002 "$S6" 5002 s
  xfer_start k tcp c "$C6" 40003 "$S6" 5003 s
  local id
  for id in a b k; do xfer_send "$id" 16384; done
  for id in a b k; do add_flow "$id"; done
  for id in a b k; do xfer_send "$id" 16384; done
  for id in a b k; do expect_hw_offloaded "$id"; done
  poll_until 5 nic_rules_are 3 r-c r-s || fail "the NIC should hold 3 rules per port: r-c $(nic r-c rules), r-s $(nic r-s rules)"
  hw_path_check a 524288

  # del: the kernel destroys the rules of a (one per port), k and b stay.
  local d0c d0s
  d0c=$(nic r-c destroy)
  d0s=$(nic r-s destroy)
  del_flow a
  local t0
  t0=$(now_ms)
  poll_until 3 nic_rules_are 2 r-c r-s ||
    fail "3 s after del the NIC still holds r-c $(nic r-c rules), r-s $(nic r-s rules) rules (expected 2 each)"
  log "a: the NIC's rules were gone $(($(now_ms) - t0)) ms after the del returned"
  (($(nic r-c destroy) == d0c + 1 && $(nic r-s destroy) == d0s + 1)) ||
    fail "expected one DESTROY per port: r-c $d0c -> $(nic r-c destroy), r-s $d0s -> $(nic r-s destroy)"
  # The stream carries on through the stack, not offloaded again.
  local c0 h0 c1 h1
  read -r c0 _ <<<"$(test_counter forwarded)"
  h0=$(nic_sum hw_rx_packets r-c r-s)
  xfer_send a 524288
  read -r c1 _ <<<"$(test_counter forwarded)"
  h1=$(nic_sum hw_rx_packets r-c r-s)
  log "a after del: forward hook $((c1 - c0)) packets, the NIC $((h1 - h0))"
  ((c1 - c0 >= 50)) || fail "a: only $((c1 - c0)) packets crossed the forward hook after the del"
  ((h1 - h0 <= 2)) || fail "a: the NIC still forwarded $((h1 - h0)) packets after the del"
  no_off a || fail "a is offloaded again after the del: $(ct_of a)"
  hw_off k || fail "k lost its hardware offload with a's del: $(ct_of k)"
  xfer_finish a

  # flush: every rule leaves the NIC, nothing stays offloaded.
  local rc=0
  CTL_OUT=$(ctl -j flush 2>"$S/ctl.err") || rc=$?
  ((rc == 0)) || fail "ctoffloadctl flush -> exit $rc: $CTL_OUT $(head -c 300 "$S/ctl.err")"
  poll_until 3 nic_rules_are 0 r-c r-s ||
    fail "3 s after flush the NIC still holds r-c $(nic r-c rules), r-s $(nic r-s rules) rules"
  poll_until 3 no_off b || fail "b still offloaded 3 s after flush: $(ct_of b)"
  poll_until 3 no_off k || fail "k still offloaded 3 s after flush: $(ct_of k)"
  xfer_send b 49152
  xfer_send k 131072
  nic_rules_are 0 r-c r-s || fail "rules came back after flush: r-c $(nic r-c rules), r-s $(nic r-s rules)"
  no_off b && no_off k || fail "offloaded again after flush: $(ct_of b) / $(ct_of k)"
  ctl_show
  [[ $(jq '.connections | length' <<<"$SHOW") == 0 ]] || fail "show -j lists connections after flush: $SHOW"
  nic_read r-c
  log "r-c after flush: destroy ${NIC[destroy]}, purged ${NIC[purged]}"
  xfer_finish b
  xfer_finish k
}
