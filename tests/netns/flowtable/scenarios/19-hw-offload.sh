# Hardware offload to the simulated NIC: TCP and UDP over IPv4 and IPv6.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="Ports advertising hw-tc-offload (simnic) go to ft_hw; TCP and UDP over IPv4 and IPv6 get [HW_OFFLOAD] and mode hw; the NIC forwards them while the router's forward hook and stack stay under 5%; data intact"

scenario() {
  topo_hw
  local id
  xfer_start t4 tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start u4 udp c "$C4" 40002 "$S4" 5002 s
  xfer_start t6 tcp c "$C6" 40003 "$S6" 5003 s
  xfer_start u6 udp c "$C6" 40004 "$S6" 5004 s
  for id in t4 u4 t6 u6; do xfer_send "$id" 16384; done
  expect_not_offloaded t4
  nic_rules_are 0 r-c r-s || fail "the NIC holds rules before any offload"

  for id in t4 u4 t6 u6; do add_flow "$id"; done
  [[ $CTL_OUT == *'"mode":"hw"'* || $CTL_OUT == *'"mode":"sw"'* ]] || fail "add did not report a mode: $CTL_OUT"
  for id in t4 u4 t6 u6; do xfer_send "$id" 16384; done
  for id in t4 u4 t6 u6; do expect_hw_offloaded "$id"; done

  # The kernel: both ports in the hardware flowtable, none in ft_sw; the
  # connections selected through the _hw sets.
  local hw sw
  hw=$(ft_devices ft_hw | sort | tr '\n' ' ')
  sw=$(ft_devices ft_sw | tr '\n' ' ')
  [[ $hw == "r-c r-s " ]] || fail "ft_hw devices are '$hw', expected 'r-c r-s'"
  [[ -z ${sw// /} ]] || fail "ft_sw lists devices: $sw"
  # The NIC: one rule per direction, each on the port its packets enter.
  poll_until 5 nic_rules_are 4 r-c r-s || fail "the NIC should hold 4 rules on r-c and 4 on r-s: r-c $(nic r-c rules), r-s $(nic r-s rules)"
  nic_read r-c
  log "r-c: replace ${NIC[replace]}, replace_other_port ${NIC[replace_other_port]}, refused_unsupported ${NIC[refused_unsupported]}"

  # What the provider reports: per connection, as conntrack says.
  ctl_show
  local c
  for id in t4 u4 t6 u6; do
    c=$(show_conn "$id")
    jq -e '.offloaded and .hw_offloaded and .mode == "hw" and .flowtable == "ft_hw" and .iif == "r-c" and .reply_iif == "r-s"' \
      <<<"$c" >/dev/null || fail "show -j entry of $id should say mode hw in ft_hw: ${c:-$SHOW}"
  done
  jq -e '[.devices[] | select(.name == "r-c" or .name == "r-s") | .mode] == ["hw", "hw"]' <<<"$SHOW" >/dev/null ||
    fail "show -j should list r-c and r-s in mode hw: $(jq -c .devices <<<"$SHOW")"

  # The packets: forwarded by the NIC, not by the router.
  hw_path_check t4 1048576
  hw_path_check u4 98304
  hw_path_check t6 1048576
  hw_path_check u6 98304
  for id in t4 u4 t6 u6; do expect_hw_offloaded "$id" 1; done
  for id in t4 u4 t6 u6; do xfer_finish "$id"; done

  # The port as ethtool sees it: hw-tc-offload on, and the same counters
  # as /proc/simnic (read while nothing flows).
  rx ethtool -k r-c | grep -qx 'hw-tc-offload: on' || fail "ethtool -k r-c does not say hw-tc-offload: on"
  local k v et=""
  while read -r k v; do [[ $k == hw_rx_packets: ]] && et=$v; done < <(rx ethtool -S r-c)
  nic_read r-c
  [[ $et == "${NIC[hw_rx_packets]}" ]] || fail "ethtool -S r-c says hw_rx_packets $et, /proc/simnic ${NIC[hw_rx_packets]}"
  log "ethtool -S r-c: hw_rx_packets $et, as /proc/simnic"
}
