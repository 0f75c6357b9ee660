# conn_del ends the offload at once; flush leaves nothing of ours offloaded.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="del ends the offload within a second and the transfer goes on intact on the slow path; flush leaves no connection offloaded and no element or device behind"

scenario() {
  topo_basic
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start b udp c "$C6" 40002 "$S6" 5002 s
  xfer_start t tcp c "$C6" 40003 "$S6" 5003 s
  xfer_send a 32768
  xfer_send b 32768
  xfer_send t 32768
  add_flow a
  add_flow b
  add_flow t
  xfer_send a 65536
  xfer_send b 32768
  xfer_send t 65536
  expect_offloaded a
  expect_offloaded b
  expect_offloaded t

  # del: the [OFFLOAD] bit is gone within a second of del returning.
  del_flow a
  poll_until 1 no_off a || fail "a still offloaded 1s after del: $(ct_of a)"
  log "a: offload ended after del"
  # The connection goes on, on the slow path, and is not offloaded again.
  xfer_send a 262144
  expect_not_offloaded a
  expect_offloaded b
  expect_offloaded t
  local n
  n=$(prov_elements)
  ((n == 2)) || fail "after del, $n selection elements (expected 2)"

  # flush: nothing of ours stays offloaded, even with traffic going on.
  local out
  out=$(ctl -j flush) || fail "flush failed: $out"
  poll_until 2 no_off b || fail "b still offloaded 2s after flush: $(ct_of b)"
  poll_until 2 no_off t || fail "t still offloaded 2s after flush: $(ct_of t)"
  xfer_send a 65536
  xfer_send b 32768
  xfer_send t 65536
  expect_not_offloaded a
  expect_not_offloaded b
  expect_not_offloaded t
  n=$(prov_elements)
  ((n == 0)) || fail "after flush, $n selection elements remain"
  local devs
  devs=$(ft_devices ft_sw | tr '\n' ' ')
  [[ -z ${devs// /} ]] || fail "after flush, flowtable ft_sw still lists devices: $devs"
  ctl_show
  [[ $(jq '.connections | length' <<<"$SHOW") == 0 ]] || fail "show -j after flush: $SHOW"

  xfer_finish a
  xfer_finish b
  xfer_finish t
}
