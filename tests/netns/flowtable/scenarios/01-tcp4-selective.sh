# TCP over IPv4, selective: only the connection given to the provider is
# offloaded.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="TCP/IPv4 offloaded through the provider; a second connection on the same path, not given to it, stays on the slow path"

scenario() {
  topo_basic
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start b tcp c "$C4" 40002 "$S4" 5002 s
  xfer_send a 65536
  xfer_send b 65536
  expect_not_offloaded a

  add_flow a
  xfer_send a 262144
  xfer_send b 262144
  expect_offloaded a
  expect_not_offloaded b

  # What the kernel holds: one selection element, both input devices in
  # the software flowtable.
  local n devs
  n=$(prov_elements)
  ((n == 1)) || fail "expected 1 selection element in table inet $PTABLE, found $n"
  devs=$(ft_devices ft_sw | sort | tr '\n' ' ')
  [[ $devs == "r-c r-s " ]] || fail "flowtable ft_sw devices are '$devs', expected 'r-c r-s'"

  # What the provider reports.
  ctl_show
  local c
  c=$(show_conn a)
  [[ -n $c ]] || fail "show -j does not list a: $SHOW"
  [[ $(jq '.connections | length' <<<"$SHOW") == 1 ]] || fail "show -j lists more than a: $SHOW"
  jq -e '.provider == "nft_flowtable" and .offloaded == true and .mode == "sw" and .iif == "r-c"
         and .reply_iif == "r-s" and .proto == "tcp" and .zone == 0' <<<"$c" >/dev/null ||
    fail "show -j entry of a is wrong: $c"

  xfer_send a 262144
  xfer_send b 65536
  expect_not_offloaded b
  xfer_finish a
  xfer_finish b
}
