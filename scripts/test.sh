#!/usr/bin/env bash
# test.sh - the README's test command: installs what it needs, builds, and
# runs every test suite there is.
#
#   scripts/test.sh            everything
#   CTOFFLOAD_JOBS=N           build parallelism (default: nproc)
#
# Stages, each reported by name with pass/fail at the end:
#   unit        GoogleTest unit tests (any user, any kernel)
#   tsan        the concurrency tests again, built with ThreadSanitizer
#   asan        every unit and netns test again, built with AddressSanitizer
#               and UndefinedBehaviorSanitizer (any report fails the stage)
#   fuzz        every libFuzzer target (tests/fuzz) for a bounded time,
#               scripts/fuzz.sh --seconds ${CTOFFLOAD_FUZZ_SECONDS:-15}
#   netns       real-kernel tests in fresh network namespaces (root)
#   simnic      the simulated NIC (tests/simnic) built for each kernel the
#               kernel-* stages use, against Debian's linux-headers of that
#               kernel (installed when missing): once per kernel per run,
#               before those stages (it runs whenever they do)
#   contract    the RFC series' contract test (tests/package/rfc_contract.c)
#               built against the installed package for the kernel-* stages,
#               which run it over the kernel provider (it runs whenever they do)
#   kernel-*    every real-kernel test on a kernel with flowtables
#               (tests/netns/kernel-suite.sh: the netns binaries, flowtable
#               cases required, and the flowtable scenario suite): on this
#               kernel when it has flowtables (kernel-host), otherwise in
#               Debian's 6.1 and 6.12 under qemu, one boot each
#               (kernel-6.1, kernel-6.12; scripts/vm/run.sh)
#   demo        the README's demo in its short mode, its output checked
#               (tests/demo_check.sh)
#   package     a C and a C++ consumer built against the installed package,
#               the README's examples, and the RFC series' contract test
#               over the dummy provider (tests/package/rfc_contract.c)
#   bench       scripts/bench.sh --short: every benchmark runs (small sizes,
#               numbers not kept), so none can rot; timing never fails it
# A stage that cannot run here fails loudly; nothing is skipped silently.
#
#   CTOFFLOAD_VM_KERNELS="6.1 6.12"   the series the kernel-* stages boot
#   CTOFFLOAD_STAGES="unit netns ..."  run only these stages (default all)
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
jobs=${CTOFFLOAD_JOBS:-$(nproc)}
build=${CTOFFLOAD_BUILD_DIR:-$root/build}
build_tsan=${CTOFFLOAD_TSAN_BUILD_DIR:-$root/build-tsan}
build_asan=${CTOFFLOAD_ASAN_BUILD_DIR:-$root/build-asan}

# socat, jq, strace, ethtool and ping: the flowtable scenario suite; iperf3: the demo.
"$root/scripts/install-deps.sh" socat jq strace ethtool iputils-ping iperf3 || exit 1

stages=${CTOFFLOAD_STAGES:-unit tsan asan fuzz netns kernel demo package bench}
want() { [[ " $stages " == *" $1 "* ]]; }

declare -a stage_names=() stage_results=()
record() {
  stage_names+=("$1")
  stage_results+=("$2")
  echo "=== stage $1: $2"
}

configure_and_build() {  # dir, extra cmake args...
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -G Ninja "$@" >"$dir.configure.log" 2>&1 || {
    cat "$dir.configure.log" >&2
    return 1
  }
  ninja -C "$dir" -j "$jobs"
}

mkdir -p "$build"
echo "=== building (Release with debug info) in $build"
if ! configure_and_build "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTOFFLOAD_BUILD_TESTS=ON -DCTOFFLOAD_BUILD_BENCH=ON; then
  record build FAIL
  echo "0 passed, 1 failed"
  exit 1
fi

stage_unit() {
  echo "=== unit tests"
  (cd "$build" && ctest -L unit --output-on-failure -j "$jobs" --timeout 300)
}

# ThreadSanitizer's runtime needs a predictable address-space layout; run the
# binaries with ASLR off (setarch -R) so a kernel with high mmap entropy does
# not abort them before the first test.
stage_tsan() {
  echo "=== ThreadSanitizer build of the concurrency tests in $build_tsan"
  mkdir -p "$build_tsan"
  configure_and_build "$build_tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTOFFLOAD_SANITIZE=thread \
    -DCTOFFLOAD_BUILD_BENCH=OFF || return 1
  local ok=0 ran=0 t
  for t in "$build_tsan"/tests/*_test; do
    [[ -x $t ]] || continue
    if ! setarch "$(uname -m)" -R "$t" --gtest_list_tests --gtest_filter='*Concurrency*' | grep -q '^  '; then
      continue
    fi
    echo "--- tsan: $(basename "$t")"
    ran=$((ran + 1))
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" setarch "$(uname -m)" -R \
      "$t" --gtest_filter='*Concurrency*' --gtest_brief=1 || ok=1
  done
  if ((ran == 0)); then
    echo "tsan: no concurrency tests found" >&2
    return 1
  fi
  return $ok
}

# ASan + UBSan: a third build, every unit test (ctest) and every netns
# binary (under unshare -n, on this kernel).  -fno-sanitize-recover makes a
# UBSan report fatal like an ASan one.
stage_asan() {
  echo "=== AddressSanitizer + UndefinedBehaviorSanitizer build in $build_asan"
  mkdir -p "$build_asan"
  configure_and_build "$build_asan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTOFFLOAD_SANITIZE=address,undefined \
    -DCTOFFLOAD_BUILD_BENCH=OFF || return 1
  local ok=0 t
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  (cd "$build_asan" && ctest -L unit --output-on-failure -j "$jobs" --timeout 600) || ok=1
  if [[ $(id -u) -eq 0 ]]; then
    for t in "$build_asan"/tests/netns/*_test; do
      [[ -x $t ]] || continue
      echo "--- asan netns: $(basename "$t")"
      unshare -n "$t" --gtest_brief=1 || ok=1
    done
  else
    echo "asan: not root, the netns binaries were not run" >&2
    ok=1
  fi
  unset ASAN_OPTIONS UBSAN_OPTIONS
  return $ok
}

stage_fuzz() {
  echo "=== libFuzzer targets, ${CTOFFLOAD_FUZZ_SECONDS:-15} s each (clang build in build-fuzz/)"
  "$root/scripts/fuzz.sh" --seconds "${CTOFFLOAD_FUZZ_SECONDS:-15}"
}

stage_netns() {
  echo "=== real-kernel tests in fresh network namespaces (this kernel, $(uname -r))"
  if [[ $(id -u) -ne 0 ]]; then
    echo "netns: needs root (unshare -n); run as root" >&2
    return 1
  fi
  local ok=0 found=0 t
  for t in "$build"/tests/netns/*_test; do
    [[ -x $t ]] || continue
    found=$((found + 1))
    echo "--- netns: $(basename "$t")"
    unshare -n "$t" --gtest_brief=1 || ok=1
  done
  if ((found == 0)); then
    echo "netns: no netns test binaries were built" >&2
    return 1
  fi
  return $ok
}

# The kernel-* stages: on this kernel when it has flowtables, otherwise one
# VM boot per kernel series.  Reports (GoogleTest XML, the scenario suite's
# output) land in $build/kernel-reports/<series>.
host_has_flowtables() {
  [[ $(unshare -n "$build/ctoffloadctl" -j probe 2>/dev/null) == *'"flowtable":true'* ]]
}
stage_kernel() {  # series|host
  local series=$1 reports=$build/kernel-reports/$1
  rm -rf "$reports" && mkdir -p "$reports" || return 1
  if [[ $series == host ]]; then
    echo "=== every real-kernel test on this kernel ($(uname -r), it has flowtables)"
    "$root/tests/netns/kernel-suite.sh" --build "$build" --reports "$reports"
    return
  fi
  echo "=== every real-kernel test in Debian's $series kernel under qemu (this kernel, $(uname -r), has no flowtables)"
  local vm=("$root/scripts/vm/run.sh" --kernel "$series" --timeout "${CTOFFLOAD_KERNEL_TIMEOUT:-3000}"
    --share "$reports")
  # The guest sees the checkout (its working directory) but not a build
  # directory outside it below /tmp or /run: share that too.
  case $build/ in
    "$root"/*) ;;
    /tmp/* | /run/*) vm+=(--share "$build") ;;
  esac
  (cd "$root" && "${vm[@]}" -- tests/netns/kernel-suite.sh --build "$build" --reports "$reports")
}

# The simulated NIC for every kernel the kernel-* stages boot (this
# kernel's, or each VM series'): Debian's linux-headers-RELEASE (installed
# when missing, like every other package), then the module into
# $build/simnic, where tests/netns/kernel-suite.sh finds it.
stage_simnic() {  # host|vm
  echo "=== the simulated NIC (tests/simnic) for the kernel-* stages"
  local args=(--install-headers) k
  if [[ $1 == host ]]; then
    args+=(--host)
  else
    for k in ${CTOFFLOAD_VM_KERNELS:-6.1 6.12}; do args+=(--vm "$k"); done
  fi
  "$root/tests/simnic/build.sh" --out "$build/simnic" "${args[@]}"
}

stage_demo() {
  echo "=== the README's demo, short mode, its output checked"
  CTOFFLOAD_BUILD_DIR="$build" "$root/tests/demo_check.sh"
}

# The package installed into DIR/prefix and tests/package's consumers
# (the C and C++ consumers, the README's examples, the RFC series' contract
# test) built against it in DIR/consumer.
build_consumers() {  # dir
  local prefix=$1/prefix consumer=$1/consumer
  cmake --install "$build" --prefix "$prefix" >/dev/null &&
    PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/x86_64-linux-gnu/pkgconfig" \
      cmake -S "$root/tests/package" -B "$consumer" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null &&
    ninja -C "$consumer" >/dev/null
}

# The RFC series' contract test over the real kernel provider runs in the
# kernel-* stages (tests/netns/kernel-suite.sh, rfc-contract-kernel), built
# against the installed package like the package stage's: into
# $build/rfc-contract, before those stages (it runs whenever they do).
stage_contract() {
  echo "=== the RFC series' contract test, built against the installed package, for the kernel-* stages"
  rm -rf "$build/rfc-contract" && mkdir -p "$build/rfc-contract" || return 1
  build_consumers "$build/rfc-contract" && [[ -x $build/rfc-contract/consumer/rfc_contract_cmake ]]
}

stage_package() {
  echo "=== install and build consumers against the installed package"
  local dir ok=0
  dir=$(mktemp -d)
  local prefix=$dir/prefix consumer=$dir/consumer
  local libs="$prefix/lib:$prefix/lib/x86_64-linux-gnu"
  if build_consumers "$dir" &&
    LD_LIBRARY_PATH="$libs" "$consumer/consumer_cmake" &&
    LD_LIBRARY_PATH="$libs" "$consumer/consumer_pkgconfig"; then
    # The soname a C datapath records (the C ABI's major version).
    local soname how
    soname=$(readelf -d "$(find "$prefix" -name libctoffload.so | head -n 1)" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
    echo "soname: $soname"
    [[ $soname == libctoffload.so.1 ]] || ok=1
    # The RFC series' contract, as a C datapath meets it, over the dummy
    # provider (tests/package/rfc_contract.c; the kernel-* stages run it over
    # the kernel provider, tests/package/rfc_contract_kernel.sh).
    for how in cmake pkgconfig; do
      echo "--- rfc_contract_$how (dummy)"
      LD_LIBRARY_PATH="$libs" CTOFFLOAD_LOG=off "$consumer/rfc_contract_$how" || ok=1
    done
    # The README's examples, each built both ways; run in a namespace of
    # their own so that the kernel provider never touches this host.
    local how out
    for how in cmake pkgconfig; do
      out=$(LD_LIBRARY_PATH="$libs" CTOFFLOAD_LOG=off unshare -n "$consumer/example_caller_$how" 2>&1)
      echo "example_caller_$how: $out"
      [[ $out == *"offloaded by "* ]] || ok=1
      out=$(LD_LIBRARY_PATH="$libs" CTOFFLOAD_LOG=off unshare -n "$consumer/example_provider_$how" 2>&1)
      echo "example_provider_$how: $out"
      [[ $out == *"tcp: my_provider"*"udp: software"* ]] || ok=1
    done
  else
    ok=1
  fi
  rm -rf "$dir"
  return $ok
}

stage_bench() {
  echo "=== every benchmark in its short mode (docs/BENCHMARKS.md is not touched)"
  local out
  out=$(mktemp /tmp/ctoffload-bench-short.XXXXXX.md) || return 1
  "$root/scripts/bench.sh" --short --build "$build" --out "$out" || return 1
  grep -q '^## Rows' "$out" || { echo "bench: the report has no rows" >&2; return 1; }
  rm -f "$out"
}

run_stage() {  # name, function, args...
  local name=$1
  shift
  if "$@"; then record "$name" PASS; else record "$name" FAIL; fi
}

want unit && run_stage unit stage_unit
want tsan && run_stage tsan stage_tsan
want asan && run_stage asan stage_asan
want fuzz && run_stage fuzz stage_fuzz
want netns && run_stage netns stage_netns
if want kernel; then
  if host_has_flowtables; then
    run_stage simnic stage_simnic host
    run_stage contract stage_contract
    run_stage kernel-host stage_kernel host
  else
    run_stage simnic stage_simnic vm
    run_stage contract stage_contract
    for k in ${CTOFFLOAD_VM_KERNELS:-6.1 6.12}; do run_stage "kernel-$k" stage_kernel "$k"; done
  fi
fi
want demo && run_stage demo stage_demo
want package && run_stage package stage_package
want bench && run_stage bench stage_bench

# ---- summary ----
passed=0
failed=0
echo
echo "=== summary"
for i in "${!stage_names[@]}"; do
  printf '  %-12s %s\n' "${stage_names[$i]}" "${stage_results[$i]}"
  if [[ ${stage_results[$i]} == PASS ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "stages: $passed passed, $failed failed"
((failed == 0))
