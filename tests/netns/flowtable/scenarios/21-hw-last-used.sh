# Last used and counters when the NIC forwards: only its stats tell.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="Last used from hardware stats: while the NIC forwards, one-shot show -j gives later last_used_ms; idle, the same one; once synced, conntrack's packets and bytes since the offload equal the NIC's counters (the kernel asks for stats every 3-4 s)"

# last_used ID: transfer ID's last_used_ms and packets from a one-shot show.
last_used() {
  ctl_show
  jq -r '"\(.last_used_ms) \(.packets) \(.last_used_known)"' <<<"$(show_conn "$1")"
}

# ct_dir_counts ID: "PKTS_ORIG BYTES_ORIG PKTS_REPLY BYTES_REPLY".
ct_dir_counts() {
  local w out=()
  for w in $(ct_of "$1"); do
    case $w in packets=* | bytes=*) out+=("${w#*=}") ;; esac
  done
  printf '%s %s %s %s' "${out[0]:-0}" "${out[1]:-0}" "${out[2]:-0}" "${out[3]:-0}"
}

scenario() {
  topo_hw
  xfer_start a udp c "$C4" 40001 "$S4" 5001 s
  xfer_send a 24000
  add_flow a
  xfer_send a 12000
  expect_hw_offloaded a
  # Whatever conntrack counted until now was the slow path's (and the few
  # packets the software flowtable took before the rule was in the NIC):
  # wait until the NIC's counters and conntrack's are both at rest.
  nap 6
  local p0o b0o p0r b0r n0o n0ob n0r n0rb
  read -r p0o b0o p0r b0r <<<"$(ct_dir_counts a)"
  nic_read r-c; n0o=${NIC[hw_rx_packets]} n0ob=${NIC[hw_rx_bytes]}
  nic_read r-s; n0r=${NIC[hw_rx_packets]} n0rb=${NIC[hw_rx_bytes]}
  local t0 k0
  read -r t0 _ k0 <<<"$(last_used a)"
  log "at rest: conntrack $p0o/$b0o, $p0r/$b0r; NIC r-c $n0o/$n0ob, r-s $n0r/$n0rb; last used $t0 ($k0)"

  # Busy: the NIC forwards 480 datagrams each way; the kernel learns of
  # them from STATS, so conntrack and last used follow within ~4 s.
  local t_busy0 t1 t2 p1 p2
  t_busy0=$(now_ms)
  hw_path_check a 98304
  nap 4.5
  read -r t1 p1 _ <<<"$(last_used a)"
  xfer_send a 98304
  nap 4.5
  read -r t2 p2 _ <<<"$(last_used a)"
  log "busy: last used $t0 -> $t1 -> $t2, packets -> $p1 -> $p2"
  ((t1 > t0 && t2 > t1)) || fail "last used did not advance while the NIC forwarded: $t0 -> $t1 -> $t2"
  ((t1 >= t_busy0 - 1000)) || fail "last used $t1 is older than the traffic that started at $t_busy0"
  ((p2 > p1)) || fail "packets did not advance while the NIC forwarded: $p1 -> $p2"

  # Idle: nothing invented.  Two readings 5 s apart, after the last stats
  # of the busy period are in, give the same time and the same packets.
  nap 5
  local t3 p3 t4 p4
  read -r t3 p3 _ <<<"$(last_used a)"
  nap 5
  read -r t4 p4 _ <<<"$(last_used a)"
  log "idle: last used $t3 -> $t4, packets $p3 -> $p4"
  ((t3 == t4 && p3 == p4)) || fail "idle connection moved: last used $t3 -> $t4, packets $p3 -> $p4"
  ((t3 >= t2)) || fail "last used went back: $t2 -> $t3"

  # Synced: what conntrack gained since the offload is what the NIC counted.
  local p1o b1o p1r b1r n1o n1ob n1r n1rb
  read -r p1o b1o p1r b1r <<<"$(ct_dir_counts a)"
  nic_read r-c; n1o=${NIC[hw_rx_packets]} n1ob=${NIC[hw_rx_bytes]}
  nic_read r-s; n1r=${NIC[hw_rx_packets]} n1rb=${NIC[hw_rx_bytes]}
  log "conntrack gained $((p1o - p0o)) packets/$((b1o - b0o)) bytes original, $((p1r - p0r))/$((b1r - b0r)) reply;" \
    "the NIC forwarded $((n1o - n0o))/$((n1ob - n0ob)) on r-c, $((n1r - n0r))/$((n1rb - n0rb)) on r-s"
  ((p1o - p0o == n1o - n0o && b1o - b0o == n1ob - n0ob)) ||
    fail "original direction: conntrack gained $((p1o - p0o)) packets/$((b1o - b0o)) bytes, the NIC counted $((n1o - n0o))/$((n1ob - n0ob))"
  ((p1r - p0r == n1r - n0r && b1r - b0r == n1rb - n0rb)) ||
    fail "reply direction: conntrack gained $((p1r - p0r)) packets/$((b1r - b0r)) bytes, the NIC counted $((n1r - n0r))/$((n1rb - n0rb))"
  nic_read r-c
  ((NIC[stats] > 0)) || fail "the NIC was never asked for stats"
  log "r-c answered ${NIC[stats]} STATS"
  xfer_finish a
}
