# A connection between a hardware port and a veth.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="A connection between a simnic port (ft_hw) and a veth (ft_sw): it is selected into ft_sw, no rule reaches the NIC, [OFFLOAD] without [HW_OFFLOAD]; the direction entering on the veth takes the software fast path, the one entering on the hardware port still crosses the forward hook (its ingress hook is ft_hw's, where the flow is not)"

scenario() {
  simnic_load
  ns_create c r s
  LINK_KIND=simnic link_client c r-c c-r
  link_server s r-s s-r
  router_forwarding
  test_table_base | rx nft -f - || fail "cannot load the test table"
  # Forward-hook packets by input port, to tell the directions apart.
  rx nft -f - <<'EOT' || fail "cannot load the per-direction counters"
table inet fttest_dir {
  counter from_c { }
  counter from_s { }
  chain forward {
    type filter hook forward priority filter - 5; policy accept;
    iifname "r-c" counter name from_c
    iifname "r-s" counter name from_s
  }
}
EOT
  provider_init
  log "topology up: client - [simnic] router [veth] - server"

  xfer_start a udp c "$C4" 40001 "$S4" 5001 s
  xfer_send a 24000
  add_flow a
  xfer_send a 24000
  expect_offloaded a
  local hw sw
  hw=$(ft_devices ft_hw | tr '\n' ' ')
  sw=$(ft_devices ft_sw | tr '\n' ' ')
  log "ft_hw: $hw; ft_sw: $sw"
  [[ $hw == "r-c " && $sw == "r-s " ]] || fail "expected r-c in ft_hw and r-s in ft_sw, found ft_hw '$hw', ft_sw '$sw'"
  ctl_show
  local c
  c=$(show_conn a)
  log "show -j: $c"
  jq -e '.offloaded and (.hw_offloaded | not) and .mode == "sw" and .flowtable == "ft_sw"' <<<"$c" >/dev/null ||
    fail "show -j should say mode sw in ft_sw for a: $c"
  sw_only a || fail "a: expected [OFFLOAD] without [HW_OFFLOAD]: $(ct_of a)"

  # 240 datagrams each way: count which ones crossed the forward hook.
  local fc0 fs0 fc1 fs1
  read -r fc0 _ <<<"$(rx nft -j -p list counter inet fttest_dir from_c | jq -r '.nftables[] | select(.counter) | .counter.packets')"
  read -r fs0 _ <<<"$(rx nft -j -p list counter inet fttest_dir from_s | jq -r '.nftables[] | select(.counter) | .counter.packets')"
  xfer_send a 288000
  read -r fc1 _ <<<"$(rx nft -j -p list counter inet fttest_dir from_c | jq -r '.nftables[] | select(.counter) | .counter.packets')"
  read -r fs1 _ <<<"$(rx nft -j -p list counter inet fttest_dir from_s | jq -r '.nftables[] | select(.counter) | .counter.packets')"
  log "240 datagrams each way: $((fc1 - fc0)) from the client (hardware port) crossed the forward hook, $((fs1 - fs0)) from the server (veth)"
  ((fc1 - fc0 >= 228)) || fail "the direction entering on the hardware port should cross the forward hook: $((fc1 - fc0)) of 240"
  ((fs1 - fs0 <= 12)) || fail "the direction entering on the veth should take the fast path: $((fs1 - fs0)) of 240 crossed the forward hook"
  nic_read r-c
  ((NIC[rules] == 0 && NIC[replace] == 0)) || fail "the NIC got rules for a connection in ft_sw: rules ${NIC[rules]}, replace ${NIC[replace]}"
  ((NIC[hw_rx_packets] == 0)) || fail "the NIC forwarded ${NIC[hw_rx_packets]} packets of a connection it has no rule for"
  sw_only a || fail "a changed: $(ct_of a)"
  xfer_finish a
}
