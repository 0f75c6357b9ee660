# Thousands of connections through one batch.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="3000 connections added by one ctoffloadctl batch: all in the kernel's set, listed by one show refreshed with one conntrack dump, deleted cleanly by a second batch"

N=3000

# `batch -j` prints JSON Lines: one object per result, the summary
# {"ok":N,"failed":M} last.
# batch_summary OUT FIELD: FIELD of the summary.
batch_summary() { tail -n 1 <<<"$1" | jq "$2"; }
# batch_failures OUT: the first three failed results.
batch_failures() { jq -c 'select(.line and (.ok | not))' <<<"$1" 2>/dev/null | head -3 | tr '\n' ' ' || true; }

scenario() {
  topo_basic
  # Connections need not carry traffic.  Addresses 10.0.1.10-39, ports
  # 20000-20099: 3000 distinct original tuples; every other one UDP.
  local i a p proto adds="" dels=""
  for ((i = 0; i < N; i++)); do
    a=10.0.1.$((10 + i / 100))
    p=$((20000 + i % 100))
    proto=tcp
    ((i % 2)) && proto=udp
    adds+="add --iif r-c --proto $proto --src $a:$p --dst $S4:80"$'\n'
    dels+="del --proto $proto --src $a:$p --dst $S4:80"$'\n'
  done
  printf '%s' "$adds" >"$S/adds"
  printf '%s' "$dels" >"$S/dels"

  local t0 t1 out
  t0=$(now_ms)
  out=$(ctl -j batch "$S/adds" 2>"$S/batch.err") || fail "batch add failed: $(batch_failures "$out") $(head -c 300 "$S/batch.err")"
  t1=$(now_ms)
  [[ $(batch_summary "$out" .ok) == "$N" ]] || fail "batch add: $(tail -n 1 <<<"$out")"
  log "batch of $N adds: $((t1 - t0)) ms"

  # Every connection is in the kernel: TCP and UDP over IPv4 in zone 0 all
  # go to set sel4.
  local n
  t0=$(now_ms)
  n=$(set_elements sel4)
  t1=$(now_ms)
  log "nft -j list set sel4: $n elements ($((t1 - t0)) ms)"
  ((n == N)) || fail "set sel4 holds $n elements after the batch (expected $N)"

  # One show: every connection listed; the counters of all of them come
  # from one conntrack dump, not a request each (few netlink sends).
  t0=$(now_ms)
  rx strace -f -qq -e trace=sendto,sendmsg -o "$S/show.trace" "$CTL" -j show >"$S/show.json" 2>"$S/show.err" ||
    fail "show under strace failed: $(head -c 300 "$S/show.err")"
  t1=$(now_ms)
  n=$(jq '.connections | length' "$S/show.json")
  ((n == N)) || fail "show -j lists $n connections (expected $N)"
  local sends
  sends=$(grep -c 'send' "$S/show.trace")
  log "show -j of $N connections: $((t1 - t0)) ms under strace, $sends netlink sends"
  ((sends < 100)) || fail "show -j made $sends sends for $N connections: not one dump"

  t0=$(now_ms)
  out=$(ctl -j batch "$S/dels" 2>"$S/batch.err") || fail "batch del failed: $(batch_failures "$out") $(head -c 300 "$S/batch.err")"
  t1=$(now_ms)
  [[ $(batch_summary "$out" .ok) == "$N" ]] || fail "batch del: $(tail -n 1 <<<"$out")"
  log "batch of $N deletes: $((t1 - t0)) ms"
  n=$(prov_elements)
  ((n == 0)) || fail "$n elements left in the kernel's sets after deleting all"
  log "no element left"
  ctl_show
  [[ $(jq '.connections | length' <<<"$SHOW") == 0 ]] || fail "show -j after deleting all: $(head -c 300 <<<"$SHOW")"
}
