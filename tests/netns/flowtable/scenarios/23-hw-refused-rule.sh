# The NIC refuses a rule, or is full: the connection stays in the software
# flowtable, and the provider says so per connection.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="The NIC refuses REPLACE (EOPNOTSUPP, then ENOSPC) or its table is full (max_rules): [OFFLOAD] without [HW_OFFLOAD], show -j says mode sw for that connection (mode hw for the one that fits, ft_hw for both); freed room lets the kernel's retry put it in hardware"

# mode_of ID: "MODE FLOWTABLE" of transfer ID in a fresh show -j.
mode_of() {
  ctl_show
  jq -r '"\(.mode) \(.flowtable)"' <<<"$(show_conn "$1")"
}

# send_then_hw ID: a little traffic on ID, then whether it is in hardware.
send_then_hw() {
  xfer_send "$1" 16384
  hw_off "$1"
}

scenario() {
  topo_hw
  local id errno name
  xfer_start e tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start n udp c "$C6" 40002 "$S6" 5002 s
  xfer_start f tcp c "$C4" 40003 "$S4" 5003 s
  xfer_start g tcp c "$C4" 40004 "$S4" 5004 s
  for id in e n f g; do xfer_send "$id" 16384; done

  # Refused with an errno: e under EOPNOTSUPP, n under ENOSPC.
  for pair in "e 95 EOPNOTSUPP" "n 28 ENOSPC"; do
    read -r id errno name <<<"$pair"
    local r0
    r0=$(nic_sum refused_knob r-c r-s)
    simnic_knob refuse "$errno"
    add_flow "$id"
    xfer_send "$id" 65536
    expect_offloaded "$id"
    # The kernel asks again at each software refresh (about once a
    # second): still refused, still software.
    xfer_send "$id" 65536
    sw_only "$id" || fail "$id: expected [OFFLOAD] without [HW_OFFLOAD] while the NIC refuses with $name: $(ct_of "$id")"
    (($(nic_sum refused_knob r-c r-s) > r0)) || fail "$id: the NIC counted no refusal"
    nic_rules_are 0 r-c r-s || fail "$id: the NIC holds rules although it refused them"
    [[ $(mode_of "$id") == "sw ft_hw" ]] || fail "$id refused by the NIC ($name): show -j should say mode sw in ft_hw, says '$(mode_of "$id")': $(show_conn "$id")"
    log "$id: refused with $name ($(($(nic_sum refused_knob r-c r-s) - r0)) refusals), mode sw in ft_hw"
    fast_path_check "$id" 262144
    simnic_knob refuse 0
  done

  # A full NIC: room for one rule per port.  The first connection fits,
  # the second does not.  e and n still retry; one of them may win the
  # room first, so free it: delete both.
  del_flow e
  del_flow n
  poll_until 3 nic_rules_are 0 r-c r-s || fail "rules left after deleting e and n: r-c $(nic r-c rules), r-s $(nic r-s rules)"
  simnic_knob max_rules 1
  add_flow f
  xfer_send f 65536
  expect_hw_offloaded f
  local full0
  full0=$(nic_sum refused_full r-c r-s)
  add_flow g
  xfer_send g 65536
  expect_offloaded g
  xfer_send g 65536
  sw_only g || fail "g: expected [OFFLOAD] without [HW_OFFLOAD] with the NIC full: $(ct_of g)"
  (($(nic_sum refused_full r-c r-s) > full0)) || fail "g: the NIC counted no refusal for being full"
  [[ $(mode_of f) == "hw ft_hw" ]] || fail "f should be mode hw in ft_hw: $(show_conn f)"
  [[ $(mode_of g) == "sw ft_hw" ]] || fail "g should be mode sw in ft_hw (the NIC is full): $(show_conn g)"
  log "full NIC: f in hardware, g in software ($(($(nic_sum refused_full r-c r-s) - full0)) refusals)"

  # Room again: f goes, and the kernel's next refresh of g puts it in.
  del_flow f
  poll_until 3 nic_rules_are 0 r-c r-s || fail "f's rules were not destroyed"
  # The kernel retries REPLACE when it refreshes a flow on the software
  # path, at most once a second: keep g busy meanwhile.
  poll_until 10 send_then_hw g || fail "g did not get [HW_OFFLOAD] once the NIC had room: $(ct_of g)"
  [[ $(mode_of g) == "hw ft_hw" ]] || fail "g in hardware now, but show -j says: $(show_conn g)"
  log "g: in hardware once f left"
  # A NIC that accepts rules but does not forward (forward=N): the kernel
  # still says [HW_OFFLOAD], the packets reach the router's stack, and its
  # software flowtable, which holds the flow too, forwards them.
  simnic_knob forward N
  local nf0 rx0
  nf0=$(nic r-c hw_noforward)
  rx0=$(stack_rx r-c)
  xfer_send g 131072
  (($(nic r-c hw_noforward) > nf0 && $(stack_rx r-c) > rx0)) ||
    fail "forward=N: the NIC should hand g's packets to the stack: hw_noforward $nf0 -> $(nic r-c hw_noforward), stack rx $rx0 -> $(stack_rx r-c)"
  hw_off g || fail "g lost [HW_OFFLOAD] with forward=N: $(ct_of g)"
  log "forward=N: $(($(nic r-c hw_noforward) - nf0)) packets of g handed to the stack, still [HW_OFFLOAD]"
  simnic_knob forward Y
  xfer_send g 65536
  for id in e n f g; do xfer_finish "$id"; done
}
