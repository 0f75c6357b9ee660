#!/bin/bash
# demo.sh - the README's main-job command: shows ctoffload offloading a live
# TCP stream on a Linux router, from a fresh Debian 12 machine, as root.
#
#   scripts/demo.sh [--short] [--kernel 6.1|6.12] [--vm] [--hw]
#
#   --short          shorter measurements (2 s instead of 4 s), same checks (CI)
#   --kernel SERIES  run in the VM harness with Debian's kernel SERIES
#   --vm             run in the VM harness even when this kernel has flowtables
#   --hw             the router's ports are a simulated NIC that takes
#                    hardware offload (tests/simnic, docs/SIMNIC.md), built
#                    for the kernel the demo runs on
#
# On the host it installs what it needs (scripts/install-deps.sh iperf3),
# builds ctoffloadctl (cmake + ninja in $CTOFFLOAD_BUILD_DIR, default
# build/), and asks it whether this kernel has nftables flowtables.  Then it
# runs scripts/demo/guest.sh, which does the demo itself in three network
# namespaces of its own: directly when the kernel has flowtables, otherwise
# inside scripts/vm/run.sh (Debian's kernel under qemu, see docs/VM.md).
#
# Exit status: 0 when every step passed; otherwise the failing step's
# status (1 for a failed demo step, 125 when the VM harness failed).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
build=${CTOFFLOAD_BUILD_DIR:-$root/build}
jobs=${CTOFFLOAD_JOBS:-$(nproc)}
short=0 kernel="" force_vm=0 hw=0

usage() { sed -n '4,12s/^# \{0,1\}//p' "$0"; }
while (($#)); do
  case $1 in
    --short) short=1; shift ;;
    --kernel) kernel=${2:-}; force_vm=1; shift 2 || { usage >&2; exit 2; } ;;
    --kernel=*) kernel=${1#*=}; force_vm=1; shift ;;
    --vm) force_vm=1; shift ;;
    --hw) hw=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if [[ -n $kernel && $kernel != 6.1 && $kernel != 6.12 ]]; then
  echo "demo.sh: --kernel takes 6.1 or 6.12, not '$kernel'" >&2
  exit 2
fi

start=$SECONDS
heading() { printf '\n== %s\n' "$*"; }
die() {
  printf '\ndemo: FAILED: %s\n' "$*"
  exit 1
}

if [[ $(id -u) -ne 0 ]]; then
  die "run it as root: it installs packages and creates network namespaces"
fi

heading "Packages"
echo "Build tools, the netfilter libraries, nft, conntrack and iperf3, from Debian (only what is missing)."
extra=(iperf3)
((hw)) && extra+=(ethtool)
"$root/scripts/install-deps.sh" "${extra[@]}" || die "scripts/install-deps.sh failed"

heading "Building ctoffloadctl"
echo "cmake and ninja in $build (the first build takes a few minutes on 2 cores)."
if ! mkdir -p "$build"; then die "cannot create $build"; fi
build=$(cd "$build" && pwd -P)
if ! cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build/demo-configure.log" 2>&1; then
  cat "$build/demo-configure.log"
  die "cmake failed (log above)"
fi
ninja -C "$build" -j "$jobs" ctoffloadctl || die "building ctoffloadctl failed (errors above)"
ctl=$build/ctoffloadctl
[[ -x $ctl ]] || die "no $ctl after the build"

heading "Does this kernel have flowtables?"
echo "ctoffloadctl probe tries to create a flowtable in a throw-away network namespace (the host's ruleset is not touched)."
probe=$(unshare -n "$ctl" -j probe 2>/dev/null)
echo "  $probe"
case $probe in
  *'"flowtable":true'*) have_ft=1 ;;
  *'"flowtable":false'*) have_ft=0 ;;
  *) die "ctoffloadctl probe gave no answer" ;;
esac

series=${kernel:-${CTOFFLOAD_VM_KERNEL:-6.1}}
guest=("$root/scripts/demo/guest.sh" --ctl "$ctl")
((short)) && guest+=(--short)
if ((hw)); then
  heading "Building the simulated NIC"
  echo "A kernel module (tests/simnic) built against Debian's headers of the kernel the demo runs on."
  if ((have_ft && !force_vm)); then
    release=$(uname -r)
  else
    release=$("$root/scripts/vm/run.sh" --kernel "$series" --release --quiet) || die "cannot prepare the VM kernel $series"
  fi
  "$root/scripts/install-deps.sh" "linux-headers-$release" || die "cannot install linux-headers-$release"
  "$root/tests/simnic/build.sh" --out "$build/simnic" "$release" || die "building the simulated NIC for $release failed"
  guest+=(--hw --simnic "$build/simnic")
fi
if ((have_ft && !force_vm)); then
  echo "It does ($(uname -r)): the demo runs on this kernel."
  bash "${guest[@]}"
  rc=$?
else
  ((have_ft)) || echo "It does not ($(uname -r)): the demo runs in Debian's kernel $series under qemu (scripts/vm/run.sh, docs/VM.md)."
  ((have_ft)) && echo "It does, but --vm/--kernel asked for the VM: the demo runs in Debian's kernel $series under qemu."
  echo "The VM boots in 15-40 s; its [vm] lines are the harness's."
  vm=("$root/scripts/vm/run.sh" --timeout 900)
  [[ -n $kernel ]] && vm+=(--kernel "$kernel")
  # The guest sees the host's / but fresh /tmp and /run, except the working
  # directory: run from the checkout, and share a build directory that lies
  # outside it below /tmp or /run.
  case $build/ in
    "$root"/*) ;;
    /tmp/* | /run/*) vm+=(--share "$build") ;;
  esac
  (cd "$root" && "${vm[@]}" -- bash "${guest[@]}")
  rc=$?
fi

echo
if ((rc == 0)); then
  echo "demo.sh: done in $((SECONDS - start)) s"
else
  echo "demo.sh: FAILED (status $rc) after $((SECONDS - start)) s"
fi
exit "$rc"
