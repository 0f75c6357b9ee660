# hw_offload=off on hardware ports, then auto, then a port replugged.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="hw_offload=off keeps simnic ports in ft_sw (no rule in the NIC, [OFFLOAD] only, mode sw); after flush, auto puts them in ft_hw; a port deleted and recreated (new ifindex) rejoins ft_hw and the held TCP connection and a new one are forwarded by the NIC again"

scenario() {
  topo_hw
  # off: software only, even on ports that advertise hw-tc-offload.
  CTL_GLOBAL=(--hw-offload off)
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_send a 16384
  add_flow a
  xfer_send a 65536
  expect_offloaded a
  sw_only a || fail "a: hardware offload with hw_offload=off: $(ct_of a)"
  local sw hw
  sw=$(ft_devices ft_sw | sort | tr '\n' ' ')
  hw=$(ft_devices ft_hw | tr '\n' ' ')
  [[ $sw == "r-c r-s " && -z ${hw// /} ]] || fail "hw_offload=off: ft_sw '$sw' (expected r-c r-s), ft_hw '$hw' (expected none)"
  ctl_show
  jq -e '.mode == "sw" and .flowtable == "ft_sw"' <<<"$(show_conn a)" >/dev/null || fail "a should be mode sw in ft_sw: $(show_conn a)"
  jq -e '[.devices[] | select(.name == "r-c" or .name == "r-s") | .mode] == ["sw", "sw"]' <<<"$SHOW" >/dev/null ||
    fail "hw_offload=off should list both ports in mode sw: $(jq -c .devices <<<"$SHOW")"
  fast_path_check a 524288
  (($(nic_sum replace r-c r-s) == 0)) || fail "the NIC got REPLACE with hw_offload=off"
  ctl flush >/dev/null 2>"$S/ctl.err" || fail "flush failed: $(head -c 300 "$S/ctl.err")"
  CTL_GLOBAL=()

  # auto: the same ports now go to ft_hw.
  add_flow a
  xfer_send a 65536
  expect_hw_offloaded a
  hw=$(ft_devices ft_hw | sort | tr '\n' ' ')
  [[ $hw == "r-c r-s " ]] || fail "after flush and auto: ft_hw devices '$hw', expected 'r-c r-s'"
  hw_path_check a 524288

  # Replug: the client-side pair goes and comes back with a new ifindex.
  local old new
  old=$(rx cat /sys/class/net/r-c/ifindex)
  rx ip link del r-c || fail "cannot delete r-c"
  nap 1
  hw=$(ft_devices ft_hw | tr "\n" " ")
  [[ " $hw " != *" r-c "* ]] || fail "the kernel kept the deleted r-c in ft_hw: $hw"
  LINK_KIND=simnic link_client c r-c c-r
  new=$(rx cat /sys/class/net/r-c/ifindex)
  log "r-c replugged: ifindex $old -> $new"
  ((new != old)) || fail "r-c came back with the same ifindex $old"
  # The next operation of the provider puts the new r-c back into ft_hw.
  xfer_start b tcp c "$C4" 40002 "$S4" 5002 s
  xfer_send b 16384
  add_flow b
  xfer_send b 65536
  expect_hw_offloaded b
  hw=$(ft_devices ft_hw | sort | tr '\n' ' ')
  [[ $hw == "r-c r-s " ]] || fail "after the replug: ft_hw devices '$hw', expected 'r-c r-s'"
  # The held connection resumes (TCP retransmits) and its selection
  # brings it back to the NIC.
  xfer_send a 65536 60
  expect_hw_offloaded a
  poll_until 5 nic_rules_are 2 r-c r-s || fail "the NIC should hold 2 rules per port after the replug: r-c $(nic r-c rules), r-s $(nic r-s rules)"
  hw_path_check a 524288
  hw_path_check b 524288
  xfer_finish a
  xfer_finish b
}
