#!/usr/bin/env bash
# row3_ir.sh - row 3 (registry dispatch, one thread) in instructions per op,
# counted by callgrind, for one or more builds of ctoffload_registry_bench:
# a comparison of builds that the machine's load cannot blur.
#
#   bench/row3_ir.sh [--min-time S] NAME=BINARY...
#
# Each variant of each binary runs alone under valgrind --tool=callgrind
# (--benchmark_filter='^VARIANT/real_time/threads:1$'); an op is one
# conn_add dispatched to the variant's two providers, so ops = the
# providers' conn_add callbacks / 2, and the registry's set-up is left
# out (bench/callgrind_ir.py says how).  Prints a
# Markdown table: Ir/op per build, and each build's ratio to the first.
# The two Rfc_GlobalMutex rows are the same code in every build of this
# benchmark; equal counts there check the method.  Needs valgrind and
# python3.  Exit status non-zero when a run fails.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
min_time=0.2
if [[ ${1:-} == --min-time ]]; then
  min_time=$2
  shift 2
fi
(($# > 0)) || { sed -n '2,16s/^# \{0,1\}//p' "$0" >&2; exit 2; }
for tool in valgrind python3; do
  command -v "$tool" >/dev/null || { echo "row3_ir.sh: $tool is missing" >&2; exit 2; }
done

# Variant -> the benchmark function's name in the profile.
variants=(Ours_CppProviders Ours_CClasses Ours_CApi Rfc_GlobalMutex Ours_CppProviders_Asking Ours_CClasses_Asking
  Rfc_GlobalMutex_Asking Ours_CClasses_AddDel)
declare -A fn=(
  [Ours_CppProviders]='Ours_CppProviders<false>\(' [Ours_CClasses]='Ours_CClasses<false>\('
  [Ours_CApi]='::Ours_CApi\(' [Rfc_GlobalMutex]='Rfc_GlobalMutex<false>\('
  [Ours_CppProviders_Asking]='Ours_CppProviders<true>\(' [Ours_CClasses_Asking]='Ours_CClasses<true>\('
  [Rfc_GlobalMutex_Asking]='Rfc_GlobalMutex<true>\(' [Ours_CClasses_AddDel]='::Ours_CClasses_AddDel\('
)
# The providers' conn_add, C (trivial_conn_add) or C++ (TrivialProvider).
op='trivial_conn_add\(|TrivialProvider<(true|false)>::conn_add\('

work=$(mktemp -d /tmp/row3-ir-XXXXXX)
trap 'rm -rf "$work"' EXIT

declare -a names=()
declare -A ir=()
for arg in "$@"; do
  name=${arg%%=*} bin=${arg#*=}
  [[ $name != "$arg" && -x $bin ]] || { echo "row3_ir.sh: '$arg' is not NAME=BINARY (an executable)" >&2; exit 2; }
  names+=("$name")
  for v in "${variants[@]}"; do
    out=$work/$name-$v.out
    if ! valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --benchmark_filter="^$v/real_time/threads:1\$" \
      --benchmark_min_time="$min_time" >"$work/$name-$v.log" 2>&1; then
      echo "row3_ir.sh: $name $v failed:" >&2
      tail -5 "$work/$name-$v.log" >&2
      exit 1
    fi
    ir[$name,$v]=$(python3 "$here/callgrind_ir.py" "$out" "${fn[$v]}" "$op" 2) || exit 1
  done
done

header="| variant (1 thread) |" rule="|---|"
for n in "${names[@]}"; do header+=" $n Ir/op |" rule+="---|"; done
for n in "${names[@]:1}"; do header+=" $n/${names[0]} |" rule+="---|"; done
echo "$header"
echo "$rule"
for v in "${variants[@]}"; do
  line="| $v |"
  for n in "${names[@]}"; do line+=" ${ir[$n,$v]} |"; done
  for n in "${names[@]:1}"; do
    line+=" $(awk -v a="${ir[$n,$v]}" -v b="${ir[${names[0]},$v]}" 'BEGIN { printf "%.2fx", a / b }') |"
  done
  echo "$line"
done
