#!/usr/bin/env bash
# bench.sh - runs every benchmark of issue 6 side by side with the peer tools
# on this machine and writes the report (docs/BENCHMARKS.md by default).
#
#   scripts/bench.sh [--short] [--out FILE]
#
#   --short     small sizes and few repetitions (a few minutes once built,
#               most of them in the VM): what CI runs so the benchmarks cannot
#               rot.  Writes to a temporary file unless --out is given; never
#               to docs/BENCHMARKS.md.
#   --out FILE  where to write the report.
#   --build DIR use this already configured build tree (benchmarks on, as
#               by default) instead of configuring build-bench/; only the
#               benchmark targets are built there (scripts/test.sh does
#               this with its own build).
#
# It installs the packages it needs through scripts/install-deps.sh, builds
# in its own directory (build-bench/, RelWithDebInfo; CTOFFLOAD_BENCH_BUILD_DIR
# overrides it), and must run as root: the kernel rows make network
# namespaces of their own (the host's ruleset and conntrack table are never
# touched).  It exits non-zero when a benchmark fails to run; slow numbers
# are never a failure.
set -euo pipefail

usage() {
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
}

short=0
out=""
prebuilt=""
while (($#)); do
  case "$1" in
    --short) short=1 ;;
    --out)
      (($# >= 2)) || usage
      out=$2
      shift
      ;;
    --out=*) out=${1#--out=} ;;
    --build)
      (($# >= 2)) || usage
      prebuilt=$2
      shift
      ;;
    -h | --help) usage ;;
    *) usage ;;
  esac
  shift
done

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=${prebuilt:-${CTOFFLOAD_BENCH_BUILD_DIR:-build-bench}}
if [[ -z $prebuilt && ("$build" == "build" || "$build" == "./build") ]]; then
  echo "bench.sh: refusing to reconfigure build/ (the test suite's directory); use --build build" >&2
  exit 2
fi
if [[ -z "$out" ]]; then
  if ((short)); then
    out=$(mktemp /tmp/ctoffload-benchmarks-short-XXXXXX.md)
  else
    out=docs/BENCHMARKS.md
  fi
fi

log() { echo "bench.sh: $*" >&2; }

# Load average before anything of ours runs.
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# Other processes that use the CPU heavily (an emulated VM, a build).
busy_procs() { ps -eo pcpu=,comm= --sort=-pcpu | awk '$1 >= 20 && $2 != "ps" {printf "%s%s (%.0f%% CPU)", sep, $2, $1; sep=", "}'; }
busy_start=$(busy_procs)
started=$(date -u '+%Y-%m-%d %H:%M UTC')
t_start=$(date +%s)

# iperf3 and jq: rows 6 and 6b; ethtool: row 6b.
scripts/install-deps.sh iperf3 jq ethtool >&2
if [[ $(id -u) -ne 0 ]]; then
  log "must run as root (the kernel rows make network namespaces of their own)"
  exit 1
fi

if [[ -n $prebuilt ]]; then
  log "building the benchmarks in the existing tree $build/"
else
  log "configuring and building in $build/"
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCTOFFLOAD_BUILD_TESTS=OFF -DCTOFFLOAD_BUILD_BENCH=ON >"$build.configure.log" 2>&1 ||
    {
      cat "$build.configure.log" >&2
      exit 1
    }
fi
ninja -C "$build" -j "${CTOFFLOAD_BENCH_JOBS:-2}" \
  ctoffload_registry_bench ctoffload_software_bench ctoffload_kernel_bench ctoffloadctl >&2

bin=$build/bench
kb=$bin/ctoffload_kernel_bench

# Sizes.  nf_conntrack_max bounds the conntrack rows (it is not changed).
ct_max=$(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo 0)
ct_big=$(((ct_max - 1000) / 10000 * 10000))
((ct_big > 1000000)) && ct_big=1000000
if ((short)); then
  runs=2
  add_sizes=(2000 10000)
  ct_sizes=(2000 10000)
  ct_filter=(1000/10000)
  rtt=(100 10)
  mem=20000
  gb=(--benchmark_min_time=0.05 --benchmark_repetitions=1 --benchmark_enable_random_interleaving=true)
  sw_filter=(--benchmark_filter=/65536\$)
  mode="short (small sizes, few repetitions: checks that everything runs; the numbers are not results)"
  vm_args=(--n 2000 --rounds 1 --seconds 2)
  row6b_args=(--rounds 1 --seconds 5)
  oneshot_args=(--sizes 2000 --reps 1 --bound 300)
  oneshot_timeout=1200
else
  runs=5
  add_sizes=(10000 100000 1000000)
  ct_sizes=(10000 100000 "$ct_big")
  ct_filter=("$((ct_big / 10))/$ct_big" "100000/$ct_big")
  rtt=(2000 200)
  mem=1000000
  gb=(--benchmark_min_time=0.5 --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
    --benchmark_enable_random_interleaving=true)
  sw_filter=()
  mode="full"
  vm_args=(--n 100000 --rounds 5 --seconds 5)
  row6b_args=(--rounds 5 --seconds 5)
  # Adoption at 1,000,000 once (each run stopped after 20 min): the
  # kernel's set dump is quadratic (docs/RELIABILITY.md, "Load").  The
  # one-shot commands, under a second each, 15 times: their medians move
  # with this machine's load more than with N.
  oneshot_args=(--sizes "10000 100000 1000000" --reps 5 --oneshot-reps 15 --adopt-once-from 1000000 --bound 1200)
  oneshot_timeout=7200
fi
if ((ct_big < 20000)); then
  log "nf_conntrack_max is $ct_max: too small for the conntrack rows"
  exit 1
fi

work=$(mktemp -d /tmp/ctoffload-bench-XXXXXX)
trap 'rm -rf "$work"' EXIT

# Runs one benchmark step; its Markdown lands in $work/NAME.md.
step() {
  local name=$1
  shift
  log "running $name: $*"
  if ! "$@"; then
    log "$name FAILED: $*"
    exit 1
  fi
}

step 1a "$kb" --runs "$runs" --md "$work/1a.md" nft-add "${add_sizes[@]}"
step 1b "$kb" --runs "$runs" --md "$work/1b.md" provider-add "${add_sizes[@]}"
step 2a "$kb" --runs "$runs" --md "$work/2a.md" ct-refresh "${ct_sizes[@]}"
step 2b "$kb" --runs "$runs" --md "$work/2b.md" ct-filter "${ct_filter[@]}"
step del "$kb" --runs "$runs" --md "$work/del.md" ct-delete "${ct_sizes[@]}"
step 3 "$bin/ctoffload_registry_bench" "${gb[@]}" --md="$work/3.md"
step 4 "$bin/ctoffload_software_bench" "${gb[@]}" "${sw_filter[@]}" --md="$work/4.md"
step 5 "$kb" --md "$work/5.md" rtt "${rtt[@]}"
step 7 "$kb" --md "$work/7.md" provider-memory "$mem"

# Rows 1b (whole provider, CLI), 6 (forwarding), 6b (forwarding through the
# simulated NIC) and 8 (one-shot commands on a big table) need flowtables:
# on this kernel when it has them, otherwise in Debian's 6.1 under qemu
# (rows 6b and 8 in boots of their own; row 8 with the memory a million set
# elements and their listings take).  Row 6b needs the simnic module for
# that kernel: built as scripts/test.sh's simnic stage builds it (headers
# installed when missing; kept when up to date).
ctl_path=$(cd "$build" && pwd -P)/ctoffloadctl
simnic_dir=$(cd "$build" && pwd -P)/simnic
vm_rows=(bench/vm_rows.sh --ctl "$ctl_path" "${vm_args[@]}" --md "$work/vm.md")
vm_row6b=(bench/vm_row6b.sh --ctl "$ctl_path" --simnic "$simnic_dir" "${row6b_args[@]}" --md "$work/6b.md")
vm_oneshot=(bench/vm_oneshot.sh --ctl "$ctl_path" "${oneshot_args[@]}" --md "$work/vm8.md")
if [[ $(unshare -n "$build/ctoffloadctl" -j probe 2>/dev/null) == *'"flowtable":true'* ]]; then
  vm_where="this kernel ($(uname -r))"
  step simnic tests/simnic/build.sh --out "$simnic_dir" --install-headers --host
  step vm "${vm_rows[@]}"
  step 6b "${vm_row6b[@]}"
  step 8 "${vm_oneshot[@]}"
else
  vm_where="Debian's 6.1 kernel under qemu (software emulation: ratios only)"
  vm=(scripts/vm/run.sh --kernel 6.1 --share "$work")
  case $(cd "$build" && pwd -P)/ in
    "$root"/*) ;;
    *) vm+=(--share "$(cd "$build" && pwd -P)") ;;
  esac
  step simnic tests/simnic/build.sh --out "$simnic_dir" --install-headers --vm 6.1
  step vm "${vm[@]}" --timeout 3000 -- "${vm_rows[@]}"
  step 6b "${vm[@]}" --timeout 1800 -- "${vm_row6b[@]}"
  step 8 "${vm[@]}" --mem 3072 --timeout "$oneshot_timeout" -- "${vm_oneshot[@]}"
fi

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - t_start))

cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
cores=$(nproc)
mem_total=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
kernel=$(uname -r)
nft_v=$(nft --version 2>/dev/null | head -1)
ct_v=$(conntrack --version 2>&1 | head -1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
# The report of an earlier run, not yet committed, is not a change to what
# was measured.
if [[ -n "$(git status --porcelain -- . ':!docs/BENCHMARKS.md' 2>/dev/null)" ]]; then
  commit="$commit plus uncommitted changes"
fi
virt=$(systemd-detect-virt 2>/dev/null || true)
[[ -z "$virt" ]] && virt="none detected"
grep -qw hypervisor /proc/cpuinfo && virt="$virt; the CPU reports a hypervisor (a virtual machine)"
busy_end=$(busy_procs)

tmp_out="$work/BENCHMARKS.md"
{
  cat <<EOF
# Benchmarks

Written by \`scripts/bench.sh\`$( ((short)) && echo " --short") on $started (commit $commit); mode: $mode.
Issue 6 asks for numbers side by side with the tools people use today, on
the same kernel in the same run.  Rerun everything with
\`sudo scripts/bench.sh\` (it took $((elapsed / 60)) min $((elapsed % 60)) s here, build included); each row below
also names the command that reproduces it alone (after the build).

How to read it: each size was measured ${runs} times (Google Benchmark rows:
its repetitions, interleaved at random with those of the other benchmarks
of the same program, so that ours and the peer share this machine's slow
and fast minutes) and the medians are shown; a ratio is computed within each
run (ours and the peer back to back, alternating who goes first) and the
median of those ratios is shown.  "Wall" is elapsed time; on a loaded
machine it includes waiting for a CPU, which CPU time (user + sys) does not,
so CPU ratios are given too.  "User share" is user / (user + sys): the rest
is the kernel's own work, the floor.  Targets are where the product must
get; a target not met is reported, never hidden, and timing is never
pass/fail.

## Machine

| | |
|---|---|
| CPU | $cpu |
| cores | $cores |
| memory | $mem_total |
| kernel | $kernel (virtualisation: $virt) |
| load average (1, 5, 15 min) | at start: $load_start; at end: $load_end |
| other busy processes (ps, >= 20% CPU) | at start: ${busy_start:-none}; at end: ${busy_end:-none} |
| nf_conntrack_max | $ct_max |
| tools | $nft_v; $ct_v |
| build | RelWithDebInfo (-O2 -g), $build/ |

This is a small, shared machine ($cores cores; load average $load_start at
the start, other busy processes in the table above).  Read the numbers as
what this machine gave under that load; ratios taken within the same run
are the more robust figures.  The host rows run in a network namespace the
benchmark makes itself, with the provider's test layout (the real table,
sets and rules, without the flowtable objects and \`flow add\`), so they
also run on a kernel without flowtables; rows 1b (CLI), 6, 6b and 8 run in
$vm_where.

## Targets at a glance

EOF
  for f in 1a 1b 2a 2b 3 4 5 7 vm 6b vm8; do
    awk '/^### / {sub(/^### /, ""); printf "- **%s**: ", $0; next} /^Target/ {printf "%s ", $0} END {print ""}' "$work/$f.md"
  done
  cat <<EOF
- **Rows 1b (whole provider, CLI), 6 (forwarding), 6b (forwarding through
  the simulated NIC) and 8 (one-shot commands on a big table)**: measured
  in $vm_where, see their sections below.

## Rows

EOF
  for f in 1a 1b 2a 2b del 3 4 5 7; do
    cat "$work/$f.md"
    echo
  done
  cat "$work/vm.md"
  echo
  cat "$work/6b.md"
  echo
  cat "$work/vm8.md"
} >"$tmp_out"

mkdir -p "$(dirname "$out")"
cp "$tmp_out" "$out"
log "done in ${elapsed}s; report written to $out"
