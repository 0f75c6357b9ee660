# Conntrack zones: the same tuple in two zones, only the selected one
# offloaded.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="the same TCP/IPv4 tuple in zones 1 and 2 (two client/server pairs with identical addresses, a VRF each in the router): only the zone given to the provider is offloaded"

scenario() {
  # Router: vrf1 = r-c1 + r-s1 (zone 1), vrf2 = r-c2 + r-s2 (zone 2); both
  # sides use the same addresses, so only the zone tells them apart.
  ns_create c1 c2 r s1 s2
  ip -n "${NSP}r" -b - <<EOT || fail "cannot create the VRFs"
link add vrf1 type vrf table 1
link set vrf1 up
link add vrf2 type vrf table 2
link set vrf2 up
EOT
  link_client c1 r-c1 c-r vrf1
  link_client c2 r-c2 c-r vrf2
  link_server s1 r-s1 s-r vrf1
  link_server s2 r-s2 s-r vrf2
  router_forwarding
  test_table_base | rx nft -f - || fail "cannot load the test table"
  rx nft -f - <<EOT || fail "cannot load the zone rules"
table inet fttest_zone {
  chain raw {
    type filter hook prerouting priority raw; policy accept;
    iifname { "r-c1", "r-s1" } ct zone set 1
    iifname { "r-c2", "r-s2" } ct zone set 2
  }
}
EOT
  provider_init
  log "topology up: two client - router - server paths in zones 1 and 2"

  # z1 and z2: the same tuple, one per zone.  o2: another connection in
  # zone 2, offloaded, so zone 2's devices are in the flowtable too and
  # only the zone tells z1 and z2 apart.
  xfer_start z1 tcp c1 "$C4" 40001 "$S4" 5001 s1
  flow_zone z1 1
  xfer_start z2 tcp c2 "$C4" 40001 "$S4" 5001 s2
  flow_zone z2 2
  xfer_start o2 tcp c2 "$C4" 40002 "$S4" 5002 s2
  flow_zone o2 2
  xfer_send z1 32768
  xfer_send z2 32768
  xfer_send o2 32768
  expect_not_offloaded z1
  expect_not_offloaded z2

  add_flow z1 r-c1
  add_flow o2 r-c2
  xfer_send z1 131072
  xfer_send z2 131072
  xfer_send o2 131072
  expect_offloaded z1
  expect_offloaded o2
  expect_not_offloaded z2

  ctl_show
  jq -e --arg s "$(src_ep z1)" '[.connections[] | select(.src == $s)] | length == 1 and .[0].zone == 1 and .[0].offloaded' \
    <<<"$SHOW" >/dev/null || fail "show -j should list the tuple once, in zone 1: $SHOW"

  xfer_send z1 131072
  xfer_send z2 131072
  expect_not_offloaded z2
  xfer_finish z1
  xfer_finish z2
  xfer_finish o2
}
