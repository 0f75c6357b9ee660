# shellcheck shell=bash
# lib.sh - what the VM benchmark scripts (vm_rows.sh, vm_row6b.sh,
# vm_oneshot.sh) share.  Each sources it right after `set -uo pipefail`:
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 2
#
# Sourcing it only defines the functions below and bench_name (the
# script's file name, the prefix of every message); nothing runs.  Messages
# go to stderr.  Exit statuses: 2 for a bad argument or a missing tool
# (before anything is made), 1 for a step that failed to run.
#
# Arguments and messages
#   usage_help          prints the script's header comment, from its second
#                       line to `set -uo pipefail`, without the leading "# "
#                       (for -h).
#   usage_error MSG...  prints "NAME: MSG" and exits 2.
#   need_tools TOOL...  usage_error "TOOL is missing" for the first TOOL
#                       not on PATH; returns 0 when all are.
#   die MSG...          prints "NAME: MSG" and exits 1.
#   log MSG...          prints "NAME: [Ts] MSG", T the seconds since the
#                       script started.
#
# Namespaces, work directory, cleanup
#   bench_start PREFIX TAG
#                       sets nsc, nsr, nss to PREFIX-PID-c, -r, -s (client,
#                       router, server; not created yet), work to a new
#                       directory /tmp/ctoffload-TAG.XXXXXX and server_pid
#                       to "", and makes bench_cleanup the EXIT trap (it
#                       runs on failure and on Ctrl-C too).
#   bench_cleanup       kills server_pid if set, deletes the three
#                       namespaces (the provider's table and the ports go
#                       with them) and removes work.  Prints nothing.
#   topology KIND       creates the namespaces and the router between them:
#                       client eth0 10.0.1.2/24 - r-c 10.0.1.1/24 (router)
#                       r-s 10.0.2.1/24 - server eth0 10.0.2.2/24, pairs of
#                       link type KIND (veth, or simnic: IP_LIB_DIR set and
#                       the module loaded), lo and every port up, the
#                       client's and server's default routes via the router,
#                       IPv4 forwarding on in the router.  Dies on failure.
#   rx CMD...           runs CMD in the router's namespace; its status.
#   route_far           routes 10.200.0.0/16 (the generated connections'
#                       destinations) from the router out of r-s, so that
#                       the provider finds the reply device itself, as it
#                       would for real traffic.  Dies on failure.
#
# Traffic: iperf3, TCP from the client to the server's 10.0.2.2:5201
#   iperf_server        starts `iperf3 -s -p 5201` in the server's namespace
#                       (its output in work/server.log), sets server_pid,
#                       and waits up to 10 s for it to listen (if it does
#                       not, the first client fails).
#   iperf_client CPORT SECS
#                       runs the client in the client's namespace from
#                       port CPORT for SECS seconds, its JSON report (or
#                       its error) in work/iperf.json; iperf3's status.
#
# The provider's table
#   conn_awk            (a variable) awk functions to put before an awk
#                       program, which define connection i (0, 1, ...) of
#                       the generated tables: conn_src(i) its source
#                       address "10.A.B.C", conn_sport(i) its source port;
#                       TCP to 10.200.0.1:80 (route_far), as every caller
#                       writes it.
#   conns FROM TO       prints the connections FROM .. TO-1 as
#                       `ctoffloadctl batch` lines ("add --iif r-c ...").
#   elem_comment        reads `nft list set` output and prints the first
#                       element's comment (what the provider writes), or
#                       nothing.
#
# Measuring
#   median              reads one number a line, prints their median
#                       (%.6g for the mean of the middle two), or "nan"
#                       when there is none.
#   timed CMD...        runs CMD, its stdout in work/timed.out and stderr in
#                       work/timed.err, and sets t_wall, t_user, t_sys
#                       (seconds, bash's `time`).  When CMD fails: prints
#                       "NAME: failed: CMD :" and the first 600 bytes of its
#                       stderr, and returns 1 (t_* untouched).

bench_name=${0##*/}

usage_help() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }
usage_error() { echo "$bench_name: $*" >&2; exit 2; }
need_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || usage_error "$tool is missing"
  done
}
die() { echo "$bench_name: $*" >&2; exit 1; }
log() { echo "$bench_name: [${SECONDS}s] $*" >&2; }

bench_start() {
  local p=$1-$$
  nsc=$p-c nsr=$p-r nss=$p-s
  work=$(mktemp -d "/tmp/ctoffload-$2.XXXXXX")
  server_pid=""
  trap bench_cleanup EXIT
}
# shellcheck disable=SC2317  # Invoked through the EXIT trap.
bench_cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
  # The provider's table goes with the router's namespace; the ports go
  # with their namespaces (deleting one end of a pair deletes both).
  local ns
  for ns in "$nsc" "$nsr" "$nss"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
}

topology() {
  local kind=$1 ns
  for ns in "$nsc" "$nsr" "$nss"; do ip netns add "$ns" || die "ip netns add $ns"; done
  {
    ip -n "$nsr" link add r-c type "$kind" peer name eth0 netns "$nsc" &&
      ip -n "$nsr" link add r-s type "$kind" peer name eth0 netns "$nss" &&
      ip -n "$nsc" addr add 10.0.1.2/24 dev eth0 && ip -n "$nsr" addr add 10.0.1.1/24 dev r-c &&
      ip -n "$nsr" addr add 10.0.2.1/24 dev r-s && ip -n "$nss" addr add 10.0.2.2/24 dev eth0 &&
      for ns in "$nsc" "$nsr" "$nss"; do ip -n "$ns" link set lo up; done &&
      ip -n "$nsc" link set eth0 up && ip -n "$nss" link set eth0 up &&
      ip -n "$nsr" link set r-c up && ip -n "$nsr" link set r-s up &&
      ip -n "$nsc" route add default via 10.0.1.1 && ip -n "$nss" route add default via 10.0.2.1 &&
      ip netns exec "$nsr" sysctl -qw net.ipv4.ip_forward=1
  } || die "could not build the topology"
}
rx() { ip netns exec "$nsr" "$@"; }
route_far() { rx ip route add 10.200.0.0/16 via 10.0.2.2 || die "route in the router"; }

iperf_server() {
  ip netns exec "$nss" iperf3 -s -p 5201 >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 50); do
    ip netns exec "$nss" ss -ltn 2>/dev/null | grep -q ':5201 ' && break
    sleep 0.2
  done
}
iperf_client() {
  ip netns exec "$nsc" iperf3 -c 10.0.2.2 -p 5201 --cport "$1" -t "$2" -J >"$work/iperf.json" 2>&1
}

conn_awk='
  function conn_src(i) { return sprintf("10.%d.%d.%d", 1 + int(i / 62500), int(i / 250) % 250, i % 250 + 1) }
  function conn_sport(i) { return 1024 + i % 60000 }'
conns() {
  awk -v from="$1" -v to="$2" "$conn_awk"'
    BEGIN {
      for (i = from; i < to; i++)
        printf "add --iif r-c --proto tcp --src %s:%d --dst 10.200.0.1:80\n", conn_src(i), conn_sport(i)
    }'
}
elem_comment() { sed -n 's/.* comment "\([^"]*\)".*/\1/p' | head -1; }

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

timed() {
  local TIMEFORMAT='%R %U %S' out
  { out=$( { time "$@" >"$work/timed.out" 2>"$work/timed.err"; } 2>&1); } || {
    echo "$bench_name: failed: $* :" >&2
    head -c 600 "$work/timed.err" >&2
    return 1
  }
  # shellcheck disable=SC2034  # For the caller.
  read -r t_wall t_user t_sys <<<"$out"
}
