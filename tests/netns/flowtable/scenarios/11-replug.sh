# A device unplugged and plugged back in: connections on it offload again.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="the client-side veth deleted and recreated under the same name: the held connection and a new one offload again on the new device, through the fast path"

scenario() {
  topo_basic
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_send a 32768
  add_flow a
  xfer_send a 65536
  expect_offloaded a
  local idx0
  idx0=$(rx cat /sys/class/net/r-c/ifindex)

  # Unplug while a is idle (everything sent has arrived), then plug a new
  # pair with the same names and addresses back in.
  ip -n "${NSP}r" link del r-c || fail "cannot delete r-c"
  log "r-c (ifindex $idx0) deleted"
  # Let the provider see the device gone (its next operation).
  ctl_show
  link_client c r-c c-r
  local idx1
  idx1=$(rx cat /sys/class/net/r-c/ifindex)
  ((idx1 != idx0)) || fail "the new r-c has the old ifindex $idx0; the test proves nothing"
  log "r-c is back as ifindex $idx1"

  # A new connection on the new device.
  xfer_start b tcp c "$C4" 40002 "$S4" 5002 s
  xfer_send b 32768
  add_flow b
  xfer_send b 65536
  # The old connection resumes over the new device (TCP kept its state).
  xfer_send a 65536
  expect_offloaded b
  expect_offloaded a
  local devs
  devs=$(ft_devices ft_sw | sort | tr '\n' ' ')
  [[ $devs == "r-c r-s " ]] || fail "ft_sw devices after the replug are '$devs', expected 'r-c r-s'"
  # The new r-c really is in the flowtable: packets skip the forward hook.
  fast_path_check b 1048576
  fast_path_check a 1048576
  xfer_finish a
  xfer_finish b
}
