#!/usr/bin/env bash
# offload-from-events.sh - offload the TCP connections to one destination
# port once conntrack reports them established, and stop offloading each
# when it closes.  One long-lived `ctoffloadctl batch -` does all of it.
#
#   offload-from-events.sh [--ctl PATH] [--del-on close|destroy] PORT
#
#   PORT         the original destination port (the one clients connect
#                to, before any DNAT)
#   --ctl PATH   the ctoffloadctl to run (default: $CTOFFLOADCTL, then
#                ctoffloadctl from $PATH)
#   --del-on     close (default): delete at the first closing TCP state
#                (FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE) or the
#                DESTROY event, whichever comes first; destroy: only at
#                DESTROY (see docs/RECIPES.md for when to prefer it)
#
# Run it as root in the router's network namespace.  Each operation it
# sends goes to stderr as "> add ..." / "> del ...", and ctoffloadctl's
# answer to stdout as "line N: ok" or "line N: error ERRNO: ..." (line N
# answers the Nth operation).  It runs until it gets SIGINT or SIGTERM,
# then lets ctoffloadctl answer what it was sent and print its summary.
set -euo pipefail

ctl=${CTOFFLOADCTL:-ctoffloadctl}
del_on=close
while (($#)); do
  case $1 in
    --ctl) ctl=${2:?--ctl needs a path}; shift 2 ;;
    --del-on) del_on=${2:?--del-on needs close or destroy}; shift 2 ;;
    -h | --help) sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    -*) echo "offload-from-events.sh: unknown option '$1'" >&2; exit 2 ;;
    *) break ;;
  esac
done
port=${1:-}
if [[ ! $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)) || (($# != 1)); then
  echo "usage: offload-from-events.sh [--ctl PATH] [--del-on close|destroy] PORT" >&2
  exit 2
fi
[[ $del_on == close || $del_on == destroy ]] || { echo "--del-on: close or destroy, not '$del_on'" >&2; exit 2; }

# Every stage must pass each line on as soon as it has it.  conntrack -E
# flushes after every event (checked with conntrack-tools 1.4.7 writing
# into a pipe).  awk buffers its output into a pipe, hence fflush() after
# each line; mawk (Debian's awk) also reads a pipe in blocks unless run
# with -W interactive.  ctoffloadctl batch answers within --flush-ms (5 ms)
# and flushes each answer.
# (Asked without a pipe: under pipefail, grep -q leaving early could kill
# awk with SIGPIPE and make the test fail now and then.)
awk=(awk)
if [[ $(awk -W version 2>/dev/null) == mawk* ]]; then awk=(awk -W interactive); fi

# One event per line, e.g. (conntrack -E, default output format)
#  [UPDATE] tcp 6 432000 ESTABLISHED src=10.0.1.2 dst=10.0.2.2 sport=40001
#    dport=5001 src=10.0.2.2 dst=10.0.1.2 sport=5001 dport=40001 [ASSURED]
# The first src/dst/sport/dport are the original direction, the second the
# reply direction, which under NAT differs from the mirror; zone=N follows
# for connections outside zone 0.
# shellcheck disable=SC2016  # awk's $ fields, not the shell's
prog='
function ep(addr, port) { return (addr ~ /:/ ? "[" addr "]" : addr) ":" port }
function send(op) {
  print op
  fflush()
  print "> " op > "/dev/stderr"
}
{
  n = 0; state = ""; assured = 0; zone = ""
  for (i = 2; i <= NF; i++) {
    if ($i ~ /^src=/) { n++; src[n] = substr($i, 5) }
    else if ($i ~ /^dst=/) dst[n] = substr($i, 5)
    else if ($i ~ /^sport=/) sport[n] = substr($i, 7)
    else if ($i ~ /^dport=/) dport[n] = substr($i, 7)
    else if ($i == "[ASSURED]") assured = 1
    else if ($i ~ /^zone=/) zone = " --zone " substr($i, 6)
    else if (n == 0 && $i ~ /^[A-Z_]+$/) state = $i
  }
  if (n < 2) next
  conn = "--proto tcp --src " ep(src[1], sport[1]) " --dst " ep(dst[1], dport[1]) zone
  ended = $1 == "[DESTROY]" || (del_on == "close" && state ~ /^(FIN_WAIT|CLOSE_WAIT|LAST_ACK|TIME_WAIT|CLOSE)$/)
  if (ended) {
    if (conn in held) { delete held[conn]; send("del " conn) }
  } else if ($1 == "[UPDATE]" && state == "ESTABLISHED" && assured && !(conn in held)) {
    # No --iif: events carry no device, ctoffloadctl takes the route
    # towards the source.  The reply tuple makes NAT-ed connections exact.
    held[conn] = 1
    send("add " conn " --reply-src " ep(src[2], sport[2]) " --reply-dst " ep(dst[2], dport[2]))
  }
}'

# conntrack runs on its own so that a signal can end it alone: awk and
# ctoffloadctl then see the end of their input and finish their work.
exec {events}< <(exec conntrack -E -e UPDATE,DESTROY -p tcp --dport "$port")
conntrack_pid=$!
# shellcheck disable=SC2317  # called by the trap
stop() { kill "$conntrack_pid" 2>/dev/null || true; }
trap stop INT TERM EXIT

"${awk[@]}" -v del_on="$del_on" "$prog" <&"$events" | "$ctl" batch - &
pipeline=$!
exec {events}<&-
status=0
wait "$pipeline" || status=$?
# A signal ends the first wait early; the pipeline is still draining.
if kill -0 "$pipeline" 2>/dev/null; then
  status=0
  wait "$pipeline" || status=$?
fi
exit "$status"
