# Hardware offload asked for on veth: refused, software flowtable instead.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="--hw-offload on with veth: the kernel refuses hardware offload, the devices fall back to the software flowtable and show -j says mode sw with a note"

scenario() {
  topo_basic
  CTL_GLOBAL=(--hw-offload on)
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_send a 32768
  # -v: the provider logs each device's fate to stderr.
  CTL_GLOBAL=(--hw-offload on -v)
  conn_of a
  ctl_add --iif r-c "${CONN[@]}"
  [[ $CTL_OUT == *'"mode":"sw"'* ]] || fail "add with --hw-offload on did not report mode sw: $CTL_OUT"
  local d
  for d in r-c r-s; do
    grep -q "$d.*hardware offload refused" "$S/ctl.err" ||
      fail "add did not log that hardware offload was refused on $d: $(tr '\n' ' ' <"$S/ctl.err" | head -c 600)"
  done
  log "add logged: $(grep -h 'refused' "$S/ctl.err" | head -2 | tr '\n' ' ')"
  CTL_GLOBAL=(--hw-offload on)
  xfer_send a 131072
  expect_offloaded a
  local l
  l=$(ct_of a)
  [[ $l != *HW_OFFLOAD* ]] || fail "a claims hardware offload on veth: $l"

  # A later process (one per command) still reports the software mode.
  ctl_show
  for d in r-c r-s; do
    jq -e --arg d "$d" '[.devices[] | select(.name == $d)] | length == 1 and .[0].mode == "sw" and (.[0].note | length) > 0' \
      <<<"$SHOW" >/dev/null || fail "show -j should report $d in mode sw with a note: $SHOW"
  done
  log "devices: $(jq -c '.devices' <<<"$SHOW")"
  jq -e '.connections[0].mode == "sw" and .connections[0].hw_offloaded == false' <<<"$SHOW" >/dev/null ||
    fail "show -j should report the connection in mode sw: $SHOW"

  # The kernel: the devices are in the software flowtable, none in the
  # hardware one.
  local sw hw
  sw=$(ft_devices ft_sw | sort | tr '\n' ' ')
  hw=$(ft_devices ft_hw | tr '\n' ' ')
  [[ $sw == "r-c r-s " ]] || fail "ft_sw devices are '$sw', expected 'r-c r-s'"
  [[ -z ${hw// /} ]] || fail "ft_hw lists devices on veth: $hw"
  xfer_send a 131072
  xfer_finish a
}
