#!/usr/bin/env bash
# kernel-suite.sh - every real-kernel test, on a kernel that has nftables
# flowtables: the GoogleTest netns binaries (each under `unshare -n`, with
# CTOFFLOAD_REQUIRE_FLOWTABLES=1 so that a flowtable case fails instead of
# skipping), the RFC series' contract test over the kernel provider
# (tests/package/rfc_contract_kernel.sh) and then the flowtable scenario
# suite (tests/netns/flowtable).
#
#   tests/netns/kernel-suite.sh --build DIR [--reports DIR]
#
#   --build DIR     the build directory (its tests/netns/*_test and ctoffloadctl,
#                   DIR/simnic: the simulated NIC built for this kernel by
#                   tests/simnic/build.sh, which the hardware scenarios load,
#                   and DIR/rfc-contract: the RFC series' contract test built
#                   against the installed package by scripts/test.sh)
#   --reports DIR   write GoogleTest XML reports and the scenario suite's
#                   output there (a directory the caller can read afterwards;
#                   in the VM, one under the shared working directory)
#
# scripts/test.sh runs it directly when the host kernel has flowtables and
# through scripts/vm/run.sh (one boot per kernel series) otherwise.  Prints
# `PASS name` / `FAIL name` per binary and per scenario, then `PASS
# dmesg-clean` when the kernel logged no WARNING/BUG/Oops during the run
# (`FAIL` with the lines otherwise), and last the line
# `kernel-suite: N passed, N failed`.  Exit status 0 only when all passed;
# 3 when this kernel has no flowtables or a binary is missing (it never
# skips).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build="" reports=""
while (($#)); do
  case $1 in
    --build) build=${2:?--build needs a directory}; shift 2 ;;
    --reports) reports=${2:?--reports needs a directory}; shift 2 ;;
    -h | --help) sed -n '2,27s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) echo "kernel-suite.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ -n $build ]] || { echo "kernel-suite.sh: --build DIR is required" >&2; exit 2; }
build=$(cd "$build" && pwd -P) || exit 3
ctl=$build/ctoffloadctl
[[ -x $ctl ]] || { echo "kernel-suite.sh: REFUSING TO RUN: no $ctl (build it first)" >&2; exit 3; }
if [[ -n $reports ]]; then
  mkdir -p "$reports" || exit 3
  reports=$(cd "$reports" && pwd -P)
fi

probe=$(unshare -n "$ctl" -j probe 2>&1)
if [[ $probe != *'"flowtable":true'* ]]; then
  echo "kernel-suite.sh: REFUSING TO RUN: kernel $(uname -r) has no usable flowtables: $probe" >&2
  exit 3
fi
echo "kernel-suite: kernel $(uname -r), build $build"
# What the kernel logged before this run is not this run's doing.
dmesg_start=$(dmesg 2>/dev/null | wc -l)

passed=0 failed=0
result() {  # name, status
  if (($2 == 0)); then
    echo "PASS $1"
    passed=$((passed + 1))
  else
    echo "FAIL $1 (status $2)"
    failed=$((failed + 1))
  fi
}

found=0
for t in "$build"/tests/netns/*_test; do
  [[ -x $t ]] || continue
  found=$((found + 1))
  name=$(basename "$t")
  args=(--gtest_brief=1)
  [[ -n $reports ]] && args+=("--gtest_output=xml:$reports/$name.xml")
  echo "--- $name"
  # The load test at 20,000 connections a cycle (its default 100,000 is the
  # host netns stage's; under emulation each cycle is ten times slower).
  CTOFFLOAD_REQUIRE_FLOWTABLES=1 CTOFFLOAD_LOAD_CONNS=${CTOFFLOAD_LOAD_CONNS:-20000} unshare -n "$t" "${args[@]}"
  result "$name" $?
done
if ((found == 0)); then
  echo "kernel-suite.sh: no netns test binaries in $build/tests/netns" >&2
  exit 3
fi

# The RFC series' contract test (tests/package/rfc_contract.c) over the
# kernel provider: a C datapath built against the installed package
# (scripts/test.sh's contract stage puts it in DIR/rfc-contract), its
# batches, established-once and the series' sweep on real connections.
echo "--- rfc-contract-kernel"
contract=$build/rfc-contract/consumer/rfc_contract_cmake
if [[ -x $contract ]]; then
  prefix=$build/rfc-contract/prefix
  LD_LIBRARY_PATH="$prefix/lib:$prefix/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    "$here/../package/rfc_contract_kernel.sh" "$contract"
  result rfc-contract-kernel $?
else
  echo "kernel-suite.sh: no $contract (scripts/test.sh's contract stage builds it)" >&2
  result rfc-contract-kernel 3
fi

echo "--- flowtable scenario suite"
if [[ -n $reports ]]; then
  "$here/flowtable/run.sh" --ctl "$ctl" --simnic "$build/simnic" 2>&1 | tee "$reports/flowtable.txt"
  rc=${PIPESTATUS[0]}
else
  "$here/flowtable/run.sh" --ctl "$ctl" --simnic "$build/simnic"
  rc=$?
fi
result flowtable-scenarios "$rc"

# A warning, BUG or Oops anywhere in the run (the simulated NIC's module
# included) fails the suite even when every test passed.
trouble=$(dmesg 2>/dev/null | tail -n +"$((dmesg_start + 1))" | grep -E 'WARNING:|BUG:|Oops|Call Trace:|general protection|refcount_t:|unregister_netdevice: waiting')
if [[ -z $trouble ]]; then
  result dmesg-clean 0
else
  echo "$trouble" | head -n 40 | sed 's/^/  dmesg: /'
  [[ -n $reports ]] && dmesg >"$reports/dmesg.txt" 2>&1
  result dmesg-clean 1
fi

echo "kernel-suite: $passed passed, $failed failed"
((failed == 0))
