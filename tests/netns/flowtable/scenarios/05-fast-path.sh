# The fast path is real: offloaded packets bypass the forward hook.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="offloaded TCP/IPv4 and UDP/IPv6 packets bypass the forward hook: a forward-chain counter of our own stays far below the packets conntrack counts"

scenario() {
  topo_basic
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start u udp c "$C6" 40002 "$S6" 5002 s
  xfer_send a 65536
  xfer_send u 32768

  # Control: before the offload every packet crosses the forward hook, so
  # the counter does see this traffic.
  local c0 c1 p0 p1
  read -r c0 _ <<<"$(test_counter forwarded)"
  p0=$(($(ct_packets "$(ct_of a)") + $(ct_packets "$(ct_of u)")))
  xfer_send a 131072
  xfer_send u 65536
  read -r c1 _ <<<"$(test_counter forwarded)"
  p1=$(($(ct_packets "$(ct_of a)") + $(ct_packets "$(ct_of u)")))
  log "slow path: $((p1 - p0)) packets counted by conntrack, $((c1 - c0)) through the forward hook"
  ((p1 - p0 > 0)) || fail "conntrack counted no packets on the slow path (nf_conntrack_acct off?)"
  (((c1 - c0) * 10 >= (p1 - p0) * 9)) ||
    fail "control failed: the forward counter saw $((c1 - c0)) of $((p1 - p0)) slow-path packets"

  add_flow a
  add_flow u
  xfer_send a 65536
  xfer_send u 32768
  expect_offloaded a
  expect_offloaded u

  fast_path_check a 4194304
  fast_path_check u 262144
  xfer_finish a
  xfer_finish u
}
