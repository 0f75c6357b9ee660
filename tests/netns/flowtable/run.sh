#!/usr/bin/env bash
# run.sh - the real-kernel flowtable scenario suite.
#
#   tests/netns/flowtable/run.sh [options] [SCENARIO...]
#
# Runs every scenario in scenarios/ (or those named: by name, number or
# file name), each in a fresh bash process with namespaces of its own
# (client - router - server over veth), real TCP/UDP traffic, and
# ctoffloadctl run in the router namespace.  Prints `PASS name` or
# `FAIL name: why` per scenario and ends with `N passed, N failed`; the exit
# status is 0 only when every scenario passed.
#
# It needs root and a kernel with nftables flowtables.  On a kernel without
# them it refuses to run (exit status 3) rather than skipping anything:
# there use scripts/vm/run.sh (docs/TESTING.md).
#
# Options:
#   --ctl PATH       ctoffloadctl to test (default: $CTOFFLOAD_CTL, then
#                    build/ctoffloadctl in the checkout, then $PATH)
#   --simnic DIR     the simulated NIC built by tests/simnic/build.sh
#                    (DIR/RELEASE/simnic.ko, DIR/link_simnic.so) for the
#                    hardware scenarios (default: $CTOFFLOAD_SIMNIC_DIR,
#                    then simnic/ beside the ctoffloadctl tested)
#   --timeout SEC    limit per scenario (default 240; then it fails)
#   --keep           keep each scenario's scratch directory and log
#   -v, --verbose    stream each scenario's log to stderr while it runs
#   --list           list the scenarios and what each proves, run nothing
#   -h, --help       this text
#
# Exit status: 0 all passed, 1 a scenario failed, 2 usage error, 3 this
# host cannot run the suite (not root, a tool missing, no flowtables).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../.." && pwd)

# ---- One scenario (internal: run.sh --one FILE) ----
#
# Runs in its own bash process so that a time limit can end it and its
# EXIT trap still tears its namespaces down.
if [[ ${1:-} == --one ]]; then
  file=$2
  # Environment from the runner: CTL, S, NSP.
  set -eEo pipefail
  SCEN_T0=${EPOCHREALTIME/./}
  mkfifo "$S/nap"
  exec {NAP_FD}<>"$S/nap"
  # shellcheck source=lib.sh
  source "$here/lib.sh"
  # shellcheck disable=SC1090
  source "$file"
  # shellcheck disable=SC2317  # called from the ERR trap
  on_err() {
    # The first unexpected failure is the reason; fail() writes its own.
    [[ -s $S/why ]] || printf 'unexpected failure (status %s) at %s line %s: %s\n' \
      "$1" "$(basename "$file")" "$2" "$3" >"$S/why"
  }
  trap 'on_err $? $LINENO "$BASH_COMMAND"' ERR
  trap 'set +eE; trap - ERR; cleanup_scenario' EXIT
  # A time limit (SIGTERM from timeout) still runs the EXIT trap.
  trap 'printf "time limit reached\n" >"$S/why.timeout"; exit 124' TERM
  scenario
  exit 0
fi

usage() { sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }

ctl=${CTOFFLOAD_CTL:-}
simnic_dir=${CTOFFLOAD_SIMNIC_DIR:-}
scen_timeout=240
keep=0
verbose=0
list=0
selected=()
while (($#)); do
  case $1 in
    --ctl) ctl=${2:?--ctl needs a path}; shift 2 ;;
    --ctl=*) ctl=${1#--ctl=}; shift ;;
    --simnic) simnic_dir=${2:?--simnic needs a directory}; shift 2 ;;
    --simnic=*) simnic_dir=${1#--simnic=}; shift ;;
    --timeout) scen_timeout=${2:?--timeout needs seconds}; shift 2 ;;
    --keep) keep=1; shift ;;
    -v | --verbose) verbose=1; shift ;;
    --list) list=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    *) selected+=("$1"); shift ;;
  esac
done

# ---- The scenarios ----

declare -a files=() names=()
for f in "$here"/scenarios/[0-9][0-9]-*.sh; do
  [[ -e $f ]] || continue
  b=$(basename "$f" .sh)
  files+=("$f")
  names+=("${b#[0-9][0-9]-}")
done
if ((${#files[@]} == 0)); then
  echo "run.sh: no scenarios in $here/scenarios" >&2
  exit 2
fi

# Picks the scenarios named on the command line (name, "NN" or "NN-name").
declare -a run_idx=()
if ((${#selected[@]} == 0)); then
  run_idx=("${!files[@]}")
else
  for want in "${selected[@]}"; do
    found=
    for i in "${!files[@]}"; do
      b=$(basename "${files[$i]}" .sh)
      if [[ $want == "${names[$i]}" || $want == "$b" || $want == "${b%%-*}" || $want == "$((10#${b%%-*}))" ]]; then
        run_idx+=("$i")
        found=1
      fi
    done
    if [[ -z $found ]]; then
      echo "run.sh: no scenario named '$want' (see --list)" >&2
      exit 2
    fi
  done
fi

if ((list)); then
  for i in "${!files[@]}"; do
    desc=$(sed -n 's/^DESC="\(.*\)"$/\1/p' "${files[$i]}" | head -1)
    printf '%-16s %s\n' "${names[$i]}" "$desc"
  done
  exit 0
fi

# ---- Can this host run it? ----

refuse() {
  echo "run.sh: REFUSING TO RUN: $*" >&2
  echo "0 passed, 1 failed"
  exit 3
}

[[ $(id -u) -eq 0 ]] || refuse "needs root (network namespaces, nftables, conntrack)"
missing=()
for t in ip nft conntrack socat jq sha256sum setpriv taskset timeout stat ss strace unshare mkfifo ethtool insmod rmmod; do
  command -v "$t" >/dev/null 2>&1 || missing+=("$t")
done
((${#missing[@]} == 0)) || refuse "missing tools: ${missing[*]} (scripts/install-deps.sh installs them)"

if [[ -z $ctl ]]; then
  if [[ -x $root/build/ctoffloadctl ]]; then
    ctl=$root/build/ctoffloadctl
  else
    ctl=$(command -v ctoffloadctl || true)
  fi
fi
[[ -n $ctl && -x $ctl ]] || refuse "no ctoffloadctl found (build it, or give --ctl PATH / CTOFFLOAD_CTL)"
ctl=$(cd "$(dirname "$ctl")" && pwd)/$(basename "$ctl")
# The hardware scenarios load the simulated NIC from here; without it they
# fail (saying how to build it), the others do not need it.
[[ -n $simnic_dir ]] || simnic_dir=$(dirname "$ctl")/simnic
[[ -d $simnic_dir ]] && simnic_dir=$(cd "$simnic_dir" && pwd -P)

# The product's own probe, in a throwaway namespace: it creates and deletes
# a flowtable there.  No flowtables means this suite cannot prove anything.
probe=$(unshare -n "$ctl" -j probe 2>&1) || true
if [[ $(jq -r '.flowtable' <<<"$probe" 2>/dev/null) != true ]]; then
  reason=$(jq -r '.reason // empty' <<<"$probe" 2>/dev/null || true)
  refuse "kernel $(uname -r) has no usable nftables flowtables: ${reason:-$probe}" \
    "- run it under scripts/vm/run.sh (docs/TESTING.md)"
fi

echo "flowtable suite: kernel $(uname -r), $ctl, ${#run_idx[@]} scenario(s)"
if [[ -s $simnic_dir/$(uname -r)/simnic.ko ]]; then
  echo "flowtable suite: simulated NIC $simnic_dir/$(uname -r)/simnic.ko"
else
  echo "flowtable suite: no simulated NIC for $(uname -r) in $simnic_dir: the hardware scenarios will fail"
fi

# ---- Run ----

passed=0
failed=0
t_all=${EPOCHREALTIME/./}
declare -a timing=()
for i in "${run_idx[@]}"; do
  name=${names[$i]}
  file=${files[$i]}
  scratch=$(mktemp -d "${TMPDIR:-/tmp}/ctoffload-ft.$name.XXXXXX")
  t0=${EPOCHREALTIME/./}
  env_args=(CTL="$ctl" S="$scratch" NSP="ft$$-$i-" SIMNIC_DIR="$simnic_dir")
  if ((verbose)); then
    env "${env_args[@]}" timeout -k 15 "$scen_timeout" bash "$0" --one "$file" \
      > >(tee "$scratch/log") 2>&1
    rc=$?
  else
    env "${env_args[@]}" timeout -k 15 "$scen_timeout" bash "$0" --one "$file" >"$scratch/log" 2>&1
    rc=$?
  fi
  t1=${EPOCHREALTIME/./}
  secs=$(printf '%d.%d' "$(((t1 - t0) / 1000000))" "$((((t1 - t0) / 100000) % 10))")
  timing+=("$(printf '%-16s %6ss' "$name" "$secs")")
  if ((rc == 0)); then
    echo "PASS $name"
    passed=$((passed + 1))
  else
    why=""
    [[ -s $scratch/why ]] && why=$(head -1 "$scratch/why")
    if [[ -z $why ]]; then
      if ((rc == 124)) || [[ -e $scratch/why.timeout ]]; then
        why="time limit of ${scen_timeout}s reached"
      else
        why="exit status $rc without a reason (see the log)"
      fi
    fi
    echo "FAIL $name: $why"
    failed=$((failed + 1))
    if ((!verbose)); then
      echo "----- log of $name (last 60 lines) -----" >&2
      tail -n 60 "$scratch/log" | sed 's/^/  | /' >&2
      echo "-----" >&2
    fi
  fi
  if ((keep)); then
    echo "  (kept $scratch)" >&2
  else
    rm -rf "$scratch"
  fi
done
t_end=${EPOCHREALTIME/./}

echo "timings:"
for l in "${timing[@]}"; do echo "  $l"; done
printf '  %-16s %6ss\n' total "$(((t_end - t_all) / 1000000)).$((((t_end - t_all) / 100000) % 10))"
echo "$passed passed, $failed failed"
((failed == 0))
