# What one-shot commands say is what the kernel holds, and a batch kept
# open answers as it is fed.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="one-shot truth: add --iif nosuchdev0 exits 1 with ENODEV and leaves the ruleset byte-identical; add without --iif takes the route's device, a route failure is ENETUNREACH; a one-shot add is what show in the next process lists; a batch fed through a fifo answers each line before the fifo closes"

# batch_answered PATTERN: the fifo-fed batch printed a line matching PATTERN.
batch_answered() { grep -qx -- "$1" "$S/batch.out"; }

scenario() {
  topo_basic

  # A device that does not exist is bad input: ENODEV, the device named,
  # and nothing changes in the kernel (no element, no flowtable device).
  local before after out rc=0
  before=$(ruleset_json)
  out=$(ctl add --iif nosuchdev0 --proto tcp --src "$C4:40009" --dst "$S4:5009" 2>"$S/nodev.err") || rc=$?
  ((rc == 1)) || fail "add --iif nosuchdev0 exited $rc (expected 1): $out $(cat "$S/nodev.err")"
  [[ -z $out ]] || fail "add --iif nosuchdev0 printed on stdout: $out"
  if ! grep -q "(ENODEV)" "$S/nodev.err" || ! grep -q "'nosuchdev0'" "$S/nodev.err"; then
    fail "add --iif nosuchdev0 does not say ENODEV and name the device: $(cat "$S/nodev.err")"
  fi
  after=$(ruleset_json)
  [[ $after == "$before" ]] || fail "the failed add changed the ruleset: $(diff <(jq . <<<"$before") <(jq . <<<"$after") | head -20)"
  log "add --iif nosuchdev0: $(cat "$S/nodev.err")"

  # No --iif: the device is the route's towards the source; no route, no add.
  rc=0
  out=$(ctl -j add --proto tcp --src 192.0.2.9:40009 --dst "$S4:5009" 2>&1) || rc=$?
  if ((rc != 1)) || ! jq -e '.ok == false and .errno == "ENETUNREACH"' <<<"$out" >/dev/null; then
    fail "add without --iif and without a route towards the source: exit $rc, $out (expected 1, ENETUNREACH)"
  fi
  [[ $(ruleset_json) == "$before" ]] || fail "the add without a route changed the ruleset"

  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_send a 65536
  conn_of a
  CTL_OUT=$(ctl -j add "${CONN[@]}" 2>"$S/ctl.err") || fail "one-shot add of a without --iif failed: $CTL_OUT $(cat "$S/ctl.err")"
  jq -e '.ok and .provider == "nft_flowtable" and .iif == "r-c"' <<<"$CTL_OUT" >/dev/null ||
    fail "add of a without --iif should say nft_flowtable on r-c (the route towards $C4): $CTL_OUT"
  xfer_send a 131072
  expect_offloaded a

  # The next process lists what the add said, and only that.
  ctl_show
  local c
  c=$(show_conn a)
  jq -e '.provider == "nft_flowtable" and .offloaded and .iif == "r-c"' <<<"$c" >/dev/null ||
    fail "show -j in the next process does not list a as the add said: ${c:-$SHOW}"
  [[ $(jq '.connections | length' <<<"$SHOW") == 1 ]] || fail "show -j lists more than a: $SHOW"

  # A batch kept open: each line is answered while the fifo stays open.
  mkfifo "$S/ops"
  bg timeout 60 ip netns exec "${NSP}r" "$CTL" batch "$S/ops" >"$S/batch.out" 2>"$S/batch.err"
  local batch_pid=$BG_PID fd
  # Read-write: opening never waits, and the batch sees no end of input
  # until this descriptor closes.
  exec {fd}<>"$S/ops"
  printf 'add --iif r-c --proto tcp --src %s --dst %s\n' "$C4:40010" "$S4:5010" >&"$fd"
  poll_until 15 batch_answered "line 1: ok" ||
    fail "the batch did not answer line 1 within 15s while its fifo is open: $(cat "$S/batch.out") $(head -c 300 "$S/batch.err")"
  printf 'add --iif nosuchdev0 --proto tcp --src %s --dst %s\n' "$C4:40011" "$S4:5011" >&"$fd"
  poll_until 15 batch_answered "line 2: error ENODEV: .*'nosuchdev0'.*" ||
    fail "the batch did not answer line 2 with ENODEV within 15s: $(cat "$S/batch.out")"
  kill -0 "$batch_pid" 2>/dev/null || fail "the batch ended before its input did"
  log "batch answered two lines through an open fifo: $(tr '\n' '|' <"$S/batch.out")"
  exec {fd}>&-
  wait_pid "$batch_pid" 15 || fail "the batch did not end within 15s of the end of its input"
  grep -qx "1 ok, 1 failed" "$S/batch.out" || fail "batch summary: $(cat "$S/batch.out")"

  # What the batch added is what the next process lists, beside a.
  ctl_show
  [[ $(jq -c '[.connections[].src] | sort' <<<"$SHOW") == "[\"$C4:40001\",\"$C4:40010\"]" ]] ||
    fail "show -j after the batch should list a and the batch's add: $SHOW"

  xfer_send a 65536
  expect_offloaded a
  del_flow a
  ctl_del --proto tcp --src "$C4:40010" --dst "$S4:5010"
  ctl_show
  [[ $(jq '.connections | length' <<<"$SHOW") == 0 ]] || fail "show -j after del in other processes: $SHOW"
  xfer_finish a
}
