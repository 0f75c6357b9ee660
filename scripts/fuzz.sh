#!/usr/bin/env bash
# fuzz.sh - builds the libFuzzer targets (tests/fuzz/) and runs each one for
# a bounded time on a copy of its seed corpus.
#
#   scripts/fuzz.sh [--seconds N] [--build DIR]
#
#   --seconds N   how long each target runs (default 20)
#   --build DIR   the build directory (default build-fuzz/, a clang build
#                 with -DCTOFFLOAD_FUZZ=ON; tests and benchmarks off)
#   CTOFFLOAD_JOBS=N   build parallelism (default 2)
#
# Prints one line per target:
#   fuzz <target>: <executions> execs, cov <edges> ft <features>, corp <inputs>, OK|CRASH|FAIL
# and exits non-zero when a target crashed (a sanitizer report, a failed
# check, a timeout or running out of memory) or could not run.  A target
# runs its full time even after a crash; crashing inputs are kept in
# DIR/fuzz-run/<target>/artifacts/, reports in DIR/fuzz-run/<target>/log.
# The corpus in the repository is only read: new inputs go to
# DIR/fuzz-run/<target>/corpus/.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=20
build=$root/build-fuzz
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --seconds)
      seconds=${2:-}
      shift 2 || { usage >&2; exit 2; }
      ;;
    --build)
      build=${2:-}
      shift 2 || { usage >&2; exit 2; }
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "fuzz.sh: unknown argument '$1'" >&2
      usage >&2
      exit 2
      ;;
  esac
done
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz.sh: --seconds needs a positive number, got '$seconds'" >&2
  exit 2
fi
[[ $build == /* ]] || build=$PWD/$build
jobs=${CTOFFLOAD_JOBS:-2}

# clang-14 is Debian 12's clang; libFuzzer (libclang_rt.fuzzer*) comes in
# libclang-rt-14-dev.
"$root/scripts/install-deps.sh" clang libclang-rt-14-dev || exit 1

mkdir -p "$build"
echo "=== building the fuzz targets in $build"
if ! CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCTOFFLOAD_FUZZ=ON \
  -DCTOFFLOAD_BUILD_TESTS=OFF -DCTOFFLOAD_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  >"$build/configure.log" 2>&1; then
  cat "$build/configure.log" >&2
  echo "fuzz.sh: configure failed" >&2
  exit 1
fi
ninja -C "$build" -j "$jobs" fuzz_targets || {
  echo "fuzz.sh: build failed" >&2
  exit 1
}

targets=(endpoint batch_line cli_batch nl_ack nft_txn ctnetlink link)
export CTOFFLOAD_LOG=off  # The library's log lines would only slow the runs down.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
echo "=== running each target for $seconds s"
for t in "${targets[@]}"; do
  work=$build/fuzz-run/$t
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts"
  cp "$root/tests/fuzz/corpus/$t/"* "$work/corpus/"
  # Fork mode with crashes ignored: the run lasts its full time whatever it
  # finds, every crashing input is kept, and the counts say how many.
  "$build/tests/fuzz/fuzz_$t" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
    -max_total_time="$seconds" -timeout=25 -artifact_prefix="$work/artifacts/" "$work/corpus" \
    >"$work/log" 2>&1
  rc=$?
  # "#<execs>: cov: <n> ft: <n> corp: <n> exec/s <n> oom/timeout/crash: <a>/<b>/<c> time: ..."
  last=$(grep -E '^#[0-9]+: cov: ' "$work/log" | tail -1)
  execs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' <<<"$last" | sed 's/: / /g')
  corp=$(grep -oE 'corp: [0-9]+' <<<"$last" | sed 's/: / /')
  bad=$(grep -oE 'oom/timeout/crash: [0-9]+/[0-9]+/[0-9]+' <<<"$last" | sed 's#.* ##')
  found=$(find "$work/artifacts" -type f | wc -l)
  if [[ -z $last ]]; then
    verdict="FAIL (did not run: exit status $rc; see $work/log)"
    failed=1
  elif ((found > 0)) || [[ ${bad:-0/0/0} != 0/0/0 ]]; then
    verdict="CRASH (oom/timeout/crash ${bad:-?}; inputs in $work/artifacts, reports in $work/log)"
    failed=1
  elif ((rc != 0)); then
    verdict="FAIL (exit status $rc; see $work/log)"
    failed=1
  else
    verdict=OK
  fi
  echo "fuzz $t: ${execs:-0} execs, ${cov:-cov ?}, ${corp:-corp ?}, $verdict"
done
exit $failed
