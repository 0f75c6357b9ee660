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
