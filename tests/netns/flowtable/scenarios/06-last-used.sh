# Last used advances while packets flow through the fast path and stays put
# while the connection is idle - in one long-running process, and across
# one-shot processes, which share their readings (usage store).
# shellcheck disable=SC2034  # read by run.sh --list
DESC="last used advances while an offloaded flow carries traffic and stays put while it is idle: in one long-running ctoffloadctl watch, and in one-shot show/update processes, each knowing the readings of the earlier ones"

# Samples of the watch output: "LINE LAST_USED PACKETS" for transfer a.
samples() {
  jq -r --arg s "$(src_ep a)" \
    '[.connections[] | select(.src == $s)] | first | "\(.last_used_ms) \(.packets)"' "$S/watch.jsonl" 2>/dev/null |
    awk '{print NR, $0}'
}

lines_at_least() { (($(wc -l <"$S/watch.jsonl") >= $1)); }

scenario() {
  topo_basic
  xfer_start a tcp c "$C4" 40001 "$S4" 5001 s
  xfer_send a 32768
  add_flow a
  xfer_send a 65536
  expect_offloaded a

  # One-shot processes.  The add's own process took the first reading
  # ever (its answer reads the counters); traffic moved them since, so a
  # new process's update knows the connection was used, and when: at its
  # reading.
  local out t0 t1 lu
  conn_of a
  t0=$(now_ms)
  out=$(ctl -j update "${CONN[@]}") || fail "update failed: $out"
  t1=$(now_ms)
  jq -e '.ok == true and .provider == "nft_flowtable" and .packets > 0 and .last_used_known' <<<"$out" >/dev/null ||
    fail "a one-shot update does not know last used of a connection that moved since the add's reading: $out"
  lu=$(jq '.last_used_ms' <<<"$out")
  ((lu >= t0 - 1000 && lu <= t1 + 1000)) || fail "update's last used $lu is not its reading's time ($t0..$t1)"
  log "one-shot update: last used $lu (read at $t0..$t1)"

  # Two one-shot shows 2 s apart while the flow carries traffic: later
  # times.  Then idle: two shows 2 s apart give the same time.
  local s1 s2 s3 s4
  xfer_send a 65536
  ctl_show
  s1=$(show_conn a | jq '.last_used_ms')
  nap 2
  xfer_send a 65536
  ctl_show
  s2=$(show_conn a | jq '.last_used_ms')
  ((s1 > 0 && s2 > s1 + 1000)) || fail "one-shot shows 2 s apart over traffic: $s1 then $s2 (want later times)"
  ctl_show  # The first reading after the traffic stopped.
  s3=$(show_conn a | jq '.last_used_ms')
  nap 2
  ctl_show
  s4=$(show_conn a | jq '.last_used_ms')
  ((s4 == s3 && s3 >= s2)) || fail "one-shot shows 2 s apart while idle: $s3 then $s4 (want the same time)"
  log "one-shot shows: busy $s1 -> $s2, idle $s3 = $s4"

  # One long-lived process samples every 200 ms; the scenario moves the
  # flow between busy and idle and notes which samples fall where.
  bg timeout 90 ip netns exec "${NSP}r" "$CTL" -j watch --interval 200 --count 400 >"$S/watch.jsonl" 2>"$S/watch.err"
  local wpid=$BG_PID
  wait_for 20 "watch printing" lines_at_least 2
  local l_busy0 l_busy1 t_busy0 t_busy1
  l_busy0=$(wc -l <"$S/watch.jsonl")
  t_busy0=$(now_ms)
  local i
  for i in 1 2 3 4 5; do
    xfer_send a 65536
    nap 0.4
  done
  t_busy1=$(now_ms)
  l_busy1=$(wc -l <"$S/watch.jsonl")
  # Idle: at least 8 more samples (1.6 s or more) with no traffic.
  wait_for 30 "8 idle samples" lines_at_least $((l_busy1 + 8))
  kill -TERM "$wpid" 2>/dev/null || true
  wait_pid "$wpid" 5 || true
  local all
  all=$(samples)
  log "samples (line last_used_ms packets), busy lines $l_busy0..$l_busy1:"
  log "$(tr '\n' ';' <<<"$all")"

  # Busy: last used took at least two new values, each inside the busy
  # period (ms since the epoch, with 1 s of slack for the sampling).  The
  # watch starts from what the one-shot processes read before it (the
  # first samples' value), which is older.
  local busy_vals before
  before=$(awk 'NR == 1 {print $2}' <<<"$all")
  ((before == s4)) || fail "the watch's first sample says $before, not the time the earlier processes read ($s4)"
  busy_vals=$(awk -v a="$l_busy0" -v b="$l_busy1" '$1 > a && $1 <= b + 1 {print $2}' <<<"$all" | uniq)
  local prev=0 advances=0 v
  for v in $busy_vals; do
    [[ $v =~ ^[0-9]+$ ]] || fail "last_used_ms '$v' is not a number (samples: $all)"
    ((v >= prev)) || fail "last used went backwards: $prev -> $v"
    if ((v > prev && prev != 0)); then advances=$((advances + 1)); fi
    if ((v != before && (v < t_busy0 - 1000 || v > t_busy1 + 1000))); then
      fail "last used $v is outside the busy period $t_busy0..$t_busy1"
    fi
    prev=$v
  done
  ((advances >= 2)) || fail "last used advanced $advances times while busy (want 2 or more): $busy_vals"

  # Idle: every sample from two after the busy period on has the same
  # non-zero value, the last one seen while busy or later.
  local idle_vals
  idle_vals=$(awk -v b="$l_busy1" '$1 > b + 2 {print $2 " " $3}' <<<"$all" | sort -u)
  [[ $(wc -l <<<"$idle_vals") == 1 ]] || fail "last used or packets changed while idle: $(tr '\n' ';' <<<"$idle_vals")"
  local idle_v=${idle_vals%% *}
  ((idle_v >= prev && idle_v > 0)) || fail "idle last used $idle_v is before the busy ones ($prev)"
  log "last used advanced $advances times while busy, stayed at $idle_v while idle"
  xfer_finish a
}
