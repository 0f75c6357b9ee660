#!/usr/bin/env bash
# lint.sh - clang-format check, then clang-tidy with clang's lock analysis
# (-Wthread-safety) over the C++ sources, run before a commit.  Needs a
# configured build directory (compile_commands).
#   scripts/lint.sh [--fix]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${CTOFFLOAD_BUILD_DIR:-$root/build}
cd "$root"
mapfile -t files < <(git ls-files 'src/*.cc' 'src/*.h' 'include/ctoffload/*.h' 'tests/*.cc' 'tests/*.h' 'bench/*.cc' |
  grep -v 'include/ctoffload/ct-offload.h' | grep -v 'tests/c_provider.h')
if [[ ${1:-} == --fix ]]; then
  clang-format -i "${files[@]}"
else
  clang-format --dry-run -Werror "${files[@]}"
fi
mapfile -t tus < <(printf '%s\n' "${files[@]}" | grep '^src/.*\.cc$')
# clang's lock analysis (src/sync.h) as an error, whatever compiler the
# build directory was configured with.
clang-tidy -p "$build" --quiet --extra-arg=-Wthread-safety --extra-arg=-Werror=thread-safety "${tus[@]}"
