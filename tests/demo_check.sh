#!/bin/bash
# demo_check.sh - runs the README's demo (scripts/demo.sh --short) and checks
# what it printed: the router's conntrack entry of the stream flagged
# [OFFLOAD], the throughput ratio line, the clean-up line and the demo's own
# verdict, and that it exited 0.  Ends with "1 passed, 0 failed" or
# "0 passed, 1 failed" and exits 0 or 1 accordingly.
#
#   tests/demo_check.sh [DEMO_OPTIONS...]     e.g. --kernel 6.12, --hw
#
# With --hw (the router's ports are the simulated NIC, docs/SIMNIC.md) it
# also checks that the entry was flagged [HW_OFFLOAD] and that the demo
# printed the NIC's forwarding line ("nic: ...") with a non-zero rate.
#
# Needs root (the demo installs packages and creates network namespaces).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
out=$(mktemp /tmp/ctoffload-demo-check.XXXXXX) || exit 1
trap 'rm -f "$out"' EXIT

"$root/scripts/demo.sh" --short "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}

hw=0
for a in "$@"; do [[ $a == --hw ]] && hw=1; done

problems=()
((rc == 0)) || problems+=("scripts/demo.sh exited with status $rc")
# conntrack -L's line for the demo stream (client port 40000 to iperf3's
# 5201) with the kernel's offload flag.
grep -Eq '^ +tcp +6 .*src=10\.0\.1\.2 dst=10\.0\.2\.2 sport=40000 dport=5201 .*\[(HW_)?OFFLOAD\]' "$out" ||
  problems+=("no conntrack entry of the stream with [OFFLOAD]")
grep -Eq '^ratio: offloaded / slow path = [0-9]+\.[0-9]{2}x$' "$out" ||
  problems+=("no 'ratio: offloaded / slow path = N.NNx' line")
grep -Eq '^cleanup: removed 3 namespaces \(ctdemo-[0-9]+-\*\) and stopped the [0-9]+ processes the demo started' "$out" ||
  problems+=("no successful 'cleanup: removed 3 namespaces ...' line")
grep -qx 'demo: PASSED' "$out" || problems+=("no 'demo: PASSED' line")
if ((hw)); then
  grep -Eq '^ +tcp +6 .*src=10\.0\.1\.2 dst=10\.0\.2\.2 sport=40000 dport=5201 .*\[HW_OFFLOAD\]' "$out" ||
    problems+=("--hw: no conntrack entry of the stream with [HW_OFFLOAD]")
  grep -Eq '^nic: the simulated NIC forwarded [1-9][0-9]* packets/s itself; the router.s stack received [0-9]+ packets/s' "$out" ||
    problems+=("--hw: no 'nic: the simulated NIC forwarded N packets/s itself ...' line with N > 0")
fi

echo
if ((${#problems[@]} == 0)); then
  echo "demo_check: the demo offloaded the stream, measured it, and cleaned up"
  echo "1 passed, 0 failed"
  exit 0
fi
for p in "${problems[@]}"; do echo "demo_check: FAIL: $p"; done
echo "0 passed, 1 failed"
exit 1
