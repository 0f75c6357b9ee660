# A new process sees and manages connections an earlier one added.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="one process per command: connections added by one ctoffloadctl are listed, updated, deleted by later ones, and later adds coexist with them"

scenario() {
  topo_basic
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start b tcp c "$C6" 40002 "$S6" 5002 s
  xfer_send a 32768
  xfer_send b 32768

  add_flow a                             # process 1
  xfer_send a 65536
  expect_offloaded a

  ctl_show                               # process 2
  local c
  c=$(show_conn a)
  jq -e '.offloaded == true and .iif == "r-c" and .reply_iif == "r-s" and .packets > 0' <<<"$c" >/dev/null ||
    fail "a new process does not see a as offloaded: ${c:-$SHOW}"

  local out                              # process 3
  conn_of a
  out=$(ctl -j update "${CONN[@]}") || fail "update of a from a new process failed: $out"
  [[ $out == *'"provider":"nft_flowtable"'* ]] || fail "update of a: $out"

  # The kernel provider of a new process knows a is held: a second add is
  # refused with EEXIST.  (Only that provider: with the default list the
  # registry would hand the refused connection to the software fallback.)
  local rc=0                             # process 4
  conn_of a
  out=$(ctl --providers nft_flowtable -j add --iif r-c "${CONN[@]}" 2>&1) || rc=$?
  if ((rc == 0)) || [[ $out != *EEXIST* ]]; then
    fail "adding a again from a new process: exit $rc, $out"
  fi

  add_flow b                             # process 5
  xfer_send b 65536
  expect_offloaded b
  expect_offloaded a

  del_flow a                             # process 6
  poll_until 1 no_off a || fail "a still offloaded 1s after del from a new process: $(ct_of a)"
  xfer_send a 65536
  xfer_send b 65536
  expect_not_offloaded a
  expect_offloaded b

  ctl_show                               # process 7
  jq -e --arg b "$(src_ep b)" '.connections | length == 1 and .[0].src == $b' <<<"$SHOW" >/dev/null ||
    fail "after del, show -j should list b only: $SHOW"
  xfer_finish a
  xfer_finish b
}
