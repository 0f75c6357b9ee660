# The NIC's driver unloaded while it holds offloaded flows.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="rmmod of the simulated NIC while two connections are in hardware: no crash or kernel warning, the kernel drops the ports from ft_hw and the provider reports them absent; after insmod and the ports' return, the next operation puts them back in ft_hw and both connections are forwarded by the NIC again, data intact"

# ct_hw_tuple: the flood's connection has [HW_OFFLOAD].
ct_hw_tuple() { [[ $(ct_get udp "$C4" 40010 "$S4" 5010) == *"[HW_OFFLOAD]"* ]]; }

scenario() {
  topo_hw
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start u udp c "$C6" 40002 "$S6" 5002 s
  xfer_send a 16384
  xfer_send u 16384
  add_flow a
  add_flow u
  xfer_send a 65536
  xfer_send u 24576
  expect_hw_offloaded a
  expect_hw_offloaded u
  poll_until 5 nic_rules_are 2 r-c r-s || fail "the NIC should hold 2 rules per port: r-c $(nic r-c rules), r-s $(nic r-s rules)"
  local warn0
  warn0=$(dmesg | grep -cE 'WARNING:|BUG:|Oops|Call Trace' || true)
  # A flood in flight while the driver goes: an echoed UDP stream that
  # the NIC forwards both ways (its data are not checked).
  bg timeout 60 ip netns exec "${NSP}s" socat -b 1200 UDP4-LISTEN:5010,reuseaddr PIPE 2>/dev/null
  wait_for 10 "flood server listening" udp_listening s 5010
  bg timeout 60 ip netns exec "${NSP}c" socat -u -b 1200 OPEN:/dev/zero,readbytes=1200000000 \
    "UDP4:$S4:5010,bind=$C4:40010" 2>/dev/null
  local flood=$BG_PID
  nap 1
  ctl_add --iif r-c --proto udp --src "$C4:40010" --dst "$S4:5010"
  poll_until 30 ct_hw_tuple || fail "the flood did not get [HW_OFFLOAD]: $(ct_get udp "$C4" 40010 "$S4" 5010)"
  log "flood in hardware; NIC r-c hw_rx_packets $(nic r-c hw_rx_packets)"
  rmmod simnic || fail "rmmod simnic failed: $(dmesg | tail -n 3 | tr '\n' ' ')"
  log "simnic unloaded with its rules installed and the flood running"
  kill "$flood" 2>/dev/null || true
  [[ ! -d $SIMNIC_PARAMS ]] || fail "simnic still loaded after rmmod"
  local hw
  hw=$(ft_devices ft_hw | tr '\n' ' ')
  [[ -z ${hw// /} ]] || fail "ft_hw still lists '$hw' after the driver left"
  # The provider, asked now, reports the ports gone.
  ctl_show
  jq -e '[.devices[] | select(.name == "r-c" or .name == "r-s") | .present] | all(. == false)' <<<"$SHOW" >/dev/null ||
    fail "show -j after rmmod should report r-c and r-s absent: $(jq -c .devices <<<"$SHOW")"
  log "after rmmod: $(jq -c .devices <<<"$SHOW")"

  # The driver and the ports come back (new ifindexes); the next operation
  # of the provider puts them into ft_hw again.
  simnic_load
  LINK_KIND=simnic link_client c r-c c-r
  LINK_KIND=simnic link_server s r-s s-r
  # New ports have an empty neighbour table; a stream resumed before its
  # next hop is known stays in software until a later packet (see
  # router_neighbours), which a short transfer may never send.
  router_neighbours
  xfer_start b tcp c "$C4" 40003 "$S4" 5003 s
  xfer_send b 16384
  add_flow b
  xfer_send b 65536
  expect_hw_offloaded b
  hw=$(ft_devices ft_hw | sort | tr '\n' ' ')
  [[ $hw == "r-c r-s " ]] || fail "after the driver's return: ft_hw devices '$hw', expected 'r-c r-s'"
  # The held connections resume and their selections bring them back.
  xfer_send a 65536 60
  xfer_send u 24576 60
  expect_hw_offloaded a
  expect_hw_offloaded u
  hw_path_check a 524288
  hw_path_check u 98304
  local warn1
  warn1=$(dmesg | grep -cE 'WARNING:|BUG:|Oops|Call Trace' || true)
  ((warn1 == warn0)) || fail "the kernel logged a warning: $(dmesg | grep -E -m3 'WARNING:|BUG:|Oops' | tr '\n' ' ')"
  xfer_finish a
  xfer_finish u
  xfer_finish b
}
