#!/usr/bin/env bash
# vm_rows.sh - the benchmark rows that need nftables flowtables (issue 6,
# rows 1b and 6), run on a kernel that has them: in the VM of
# scripts/vm/run.sh on this project's machines (scripts/bench.sh --vm).
#
#   bench/vm_rows.sh --ctl PATH [--n N] [--rounds R] [--seconds T] [--md FILE]
#
# Row 1b: N connections offloaded through the whole provider - one
#   `ctoffloadctl batch` process (provider start-up, devices into the
#   flowtable, every element, one result line per op) - against `nft -f`
#   adding the same N elements, with the comment the provider writes, to a
#   copy of its sets (`nft -t list`, renamed; the elements are generated:
#   nft lists big sets slowly, minutes for 10,000 under emulation).
#   Both are whole processes timed by bash (wall, user, sys).
# Row 6: forwarding through the router, iperf3 TCP, T seconds per run:
#   runs on the slow path alternate with runs whose tuple was given to the
#   provider (`ctoffloadctl add` before the stream starts, so the whole
#   stream takes the flowtable once established; [OFFLOAD] is checked
#   during each such run), R rounds; medians and the per-round ratio.
#
# Everything happens in network namespaces this script creates (bench-<pid>-*)
# and removes on exit.  Prints Markdown (to --md FILE, appended, or stdout).
# Exit status non-zero when a step fails to run; timing never fails it.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 2

ctl="" n=20000 rounds=5 secs=5 md=/dev/stdout
while (($#)); do
  case $1 in
    --ctl) ctl=$2; shift 2 ;;
    --n) n=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --md) md=$2; shift 2 ;;
    -h | --help) usage_help; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done
[[ -x $ctl ]] || usage_error "--ctl PATH (ctoffloadctl) is required"
need_tools ip nft conntrack iperf3 jq

bench_start bench vmrows

# ---- Topology: client - router - server --------------------------------
topology veth

# ---- Row 1b ---------------------------------------------------------------
route_far
# One connection first, to read the element comment the provider writes
# (listing a small set is quick; nft's listing of a big one is slow, and
# under emulation minutes long, so the peer's input is generated, not
# listed back).
conns 0 1 >"$work/one.txt"
rx "$ctl" batch "$work/one.txt" >/dev/null || die "ctoffloadctl batch of one connection failed"
note=$(rx nft list set inet ctoffload sel4 | elem_comment)
[[ -n $note ]] || die "no element comment in set sel4: $(rx nft list set inet ctoffload sel4 | head -c 400)"
layout=$(rx nft -t list table inet ctoffload) || die "nft -t list table inet ctoffload"
rx "$ctl" flush >/dev/null || die "ctoffloadctl flush"

log "row 1b: $n connections through ctoffloadctl batch, then the same elements with nft -f"
conns 0 "$n" >"$work/batch.txt"
timed rx "$ctl" batch "$work/batch.txt" || die "ctoffloadctl batch failed"
log "ctoffloadctl batch: ${t_wall}s"
ours_wall=$t_wall ours_user=$t_user ours_sys=$t_sys
ok=$(grep -c '^line [0-9]*: ok$' "$work/timed.out" || true)
((ok == n)) || die "ctoffloadctl batch: $ok of $n ops ok; first lines: $(head -3 "$work/timed.out")"
# The peer: the provider's sets (not its flowtable, whose devices are the
# provider's), in a table of its own, and the same elements with the same
# comment in one nft -f.
{
  echo "table inet peer {"
  awk '/^\tset / { inset = 1 } inset { print } inset && /^\t}/ { inset = 0 }' <<<"$layout"
  echo "}"
  awk -v n="$n" -v note="$note" "$conn_awk"'
    BEGIN {
      print "add element inet peer sel4 {"
      for (i = 0; i < n; i++)
        printf "  %s . 10.200.0.1 . tcp . %d . 80 comment \"%s\"%s\n", conn_src(i), conn_sport(i), note, (i + 1 < n ? "," : "")
      print "}"
    }'
} >"$work/peer.nft"
timed rx nft -f "$work/peer.nft" || die "nft -f of the peer table failed"
log "nft -f: ${t_wall}s"
peer_wall=$t_wall peer_user=$t_user peer_sys=$t_sys
rx nft delete table inet peer
rx "$ctl" flush >/dev/null || die "ctoffloadctl flush"

# ---- Row 6 ----------------------------------------------------------------
log "row 6: iperf3 through the router, $rounds rounds of ${secs}s slow path and ${secs}s offloaded"
iperf_server
run_iperf() {  # cport -> prints Mbit/s received
  iperf_client "$1" "$secs" ||
    { echo "iperf3 failed: $(head -c 300 "$work/iperf.json")" >&2; return 1; }
  jq '.end.sum_received.bits_per_second / 1e5 | round / 10' "$work/iperf.json"
}
: >"$work/slow" && : >"$work/fast" && : >"$work/ratio"
for ((r = 0; r < rounds; r++)); do
  slow=$(run_iperf $((42000 + 2 * r))) || die "iperf3 (slow path) failed"
  port=$((42001 + 2 * r))
  rx "$ctl" add --iif r-c --proto tcp --src "10.0.1.2:$port" --dst 10.0.2.2:5201 >/dev/null ||
    die "ctoffloadctl add failed"
  ( sleep $((secs / 2 > 0 ? secs / 2 : 1)); rx conntrack -L -p tcp --orig-port-src "$port" 2>/dev/null >"$work/ct" ) &
  probe=$!
  fast=$(run_iperf "$port") || die "iperf3 (offloaded) failed"
  wait "$probe"
  grep -q 'OFFLOAD' "$work/ct" || die "round $r: the offloaded run's conntrack entry has no [OFFLOAD]: $(cat "$work/ct")"
  rx "$ctl" del --proto tcp --src "10.0.1.2:$port" --dst 10.0.2.2:5201 >/dev/null 2>&1 || true
  echo "$slow" >>"$work/slow"
  echo "$fast" >>"$work/fast"
  awk -v f="$fast" -v s="$slow" 'BEGIN { printf "%.2f\n", f / s }' >>"$work/ratio"
  log "round $((r + 1)): slow $slow Mbit/s, offloaded $fast Mbit/s"
done

# ---- Report ---------------------------------------------------------------
rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.0f", n / t }'; }
share() { awk -v u="$1" -v s="$2" 'BEGIN { if (u + s > 0) printf "%.0f%%", 100 * u / (u + s); else print "-" }'; }
ratio1b=$(awk -v a="$peer_wall" -v b="$ours_wall" 'BEGIN { printf "%.2f", a / b }')
cpu1b=$(awk -v a="$peer_user" -v b="$peer_sys" -v c="$ours_user" -v d="$ours_sys" 'BEGIN { printf "%.2f", (a + b) / (c + d) }')
slow_m=$(median <"$work/slow") fast_m=$(median <"$work/fast") ratio_m=$(median <"$work/ratio")
{
  cat <<EOF
### 1b (VM, kernel $(uname -r)): $n connections through the whole provider

Ours: one \`ctoffloadctl batch\` process (start-up, devices, $n adds through
the registry in batches, a result line per op).  Peer: \`nft -f\` adding
the same $n elements with the same comment (\`$note\`) to a copy of the
sets the provider built (\`nft -t list\`, renamed).  One run each, under software emulation: the ratio is the
figure.

| | wall s | user s | sys s | connections/s (wall) | user share |
|---|---|---|---|---|---|
| ctoffloadctl batch | $ours_wall | $ours_user | $ours_sys | $(rate "$n" "$ours_wall") | $(share "$ours_user" "$ours_sys") |
| nft -f | $peer_wall | $peer_user | $peer_sys | $(rate "$n" "$peer_wall") | $(share "$peer_user" "$peer_sys") |

Target >= 2x faster than nft -f: $(awk -v r="$ratio1b" 'BEGIN { print (r >= 2 ? "met" : "not met") }') (nft -f / ours: wall ${ratio1b}x, CPU ${cpu1b}x).

### 6 (VM, kernel $(uname -r)): forwarding through the router with and without offload

iperf3 TCP, client - router - server over veth, ${secs} s per run, $rounds
rounds alternating slow path and offloaded (the tuple given to
\`ctoffloadctl add\` before the stream starts; \`[OFFLOAD]\` checked during
every offloaded run).  Medians of the received throughput; the ratio is the
median of the per-round ratios.  Software emulation (TCG) makes absolute
figures meaningless; the firewalld project measured +58% on hardware.

| slow path Mbit/s | offloaded Mbit/s | ratio (offloaded / slow) |
|---|---|---|
| $slow_m | $fast_m | ${ratio_m}x |

Target: the ratio reported (offloaded / slow path ${ratio_m}x).

Per round (slow, offloaded): $(paste -d/ "$work/slow" "$work/fast" | tr '\n' ' ')
EOF
} >>"$md"
log "done"
