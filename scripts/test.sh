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
#   netns       real-kernel tests in fresh network namespaces (root)
#   package     a C and a C++ consumer built against the installed package
# A stage that cannot run here fails loudly; nothing is skipped silently.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
jobs=${CTOFFLOAD_JOBS:-$(nproc)}
build=${CTOFFLOAD_BUILD_DIR:-$root/build}
build_tsan=${CTOFFLOAD_TSAN_BUILD_DIR:-$root/build-tsan}

"$root/scripts/install-deps.sh" || exit 1

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
if ! configure_and_build "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
  record build FAIL
  echo "0 passed, 1 failed"
  exit 1
fi

# ---- unit ----
echo "=== unit tests"
if (cd "$build" && ctest -L unit --output-on-failure -j "$jobs" --timeout 300); then
  record unit PASS
else
  record unit FAIL
fi

# ---- tsan ----
# ThreadSanitizer's runtime needs a predictable address-space layout; run the
# binaries with ASLR off (setarch -R) so a kernel with high mmap entropy does
# not abort them before the first test.
echo "=== ThreadSanitizer build of the concurrency tests in $build_tsan"
mkdir -p "$build_tsan"
tsan_ok=1
if configure_and_build "$build_tsan" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCTOFFLOAD_SANITIZE=thread \
  -DCTOFFLOAD_BUILD_BENCH=OFF; then
  ran=0
  for t in "$build_tsan"/tests/*_test; do
    [[ -x $t ]] || continue
    if ! setarch "$(uname -m)" -R "$t" --gtest_list_tests --gtest_filter='*Concurrency*' | grep -q '^  '; then
      continue
    fi
    echo "--- tsan: $(basename "$t")"
    ran=$((ran + 1))
    if ! TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" setarch "$(uname -m)" -R \
      "$t" --gtest_filter='*Concurrency*' --gtest_brief=1; then
      tsan_ok=0
    fi
  done
  if ((ran == 0)); then
    echo "tsan: no concurrency tests found" >&2
    tsan_ok=0
  fi
else
  tsan_ok=0
fi
record tsan "$([[ $tsan_ok == 1 ]] && echo PASS || echo FAIL)"

# ---- netns ----
echo "=== real-kernel tests in fresh network namespaces"
netns_ok=1
if [[ $(id -u) -ne 0 ]]; then
  echo "netns: needs root (unshare -n); run as root" >&2
  netns_ok=0
else
  found=0
  for t in "$build"/tests/netns/*_test; do
    [[ -x $t ]] || continue
    found=$((found + 1))
    echo "--- netns: $(basename "$t")"
    if ! unshare -n "$t" --gtest_brief=1; then netns_ok=0; fi
  done
  if ((found == 0)); then
    echo "netns: no netns test binaries were built" >&2
    netns_ok=0
  fi
fi
record netns "$([[ $netns_ok == 1 ]] && echo PASS || echo FAIL)"

# ---- package ----
echo "=== install and build consumers against the installed package"
pkg_ok=1
prefix=$(mktemp -d)
consumer=$(mktemp -d)
if cmake --install "$build" --prefix "$prefix" >/dev/null &&
  PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/x86_64-linux-gnu/pkgconfig" \
    cmake -S "$root/tests/package" -B "$consumer" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null &&
  ninja -C "$consumer" >/dev/null &&
  LD_LIBRARY_PATH="$prefix/lib:$prefix/lib/x86_64-linux-gnu" "$consumer/consumer_cmake" &&
  LD_LIBRARY_PATH="$prefix/lib:$prefix/lib/x86_64-linux-gnu" "$consumer/consumer_pkgconfig"; then
  :
else
  pkg_ok=0
fi
rm -rf "$prefix" "$consumer"
record package "$([[ $pkg_ok == 1 ]] && echo PASS || echo FAIL)"

# ---- summary ----
passed=0
failed=0
echo
echo "=== summary"
for i in "${!stage_names[@]}"; do
  printf '  %-10s %s\n' "${stage_names[$i]}" "${stage_results[$i]}"
  if [[ ${stage_results[$i]} == PASS ]]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "stages: $passed passed, $failed failed"
((failed == 0))
