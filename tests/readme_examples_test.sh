#!/usr/bin/env bash
# readme_examples_test.sh - the code the documents show is the code the
# tests run: every "<!-- example: PATH -->" line in README.md and
# docs/RECIPES.md must be followed by a fenced block whose body is exactly
# the file PATH (scripts/test.sh's package stage compiles and runs the C
# files against the installed package; the flowtable scenario
# 16-events-recipe runs docs/examples/offload-from-events.sh).  Prints
# what differs; exit status 0 when all match.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
n=0 bad=0
for doc in README.md docs/RECIPES.md; do
  m=0
  while IFS= read -r path; do
    m=$((m + 1))
    # The fenced block right after the marker, without its fences.
    shown=$(awk -v marker="<!-- example: $path -->" '
      $0 == marker { found = 1; next }
      found == 1 && /^```/ { found = 2; next }
      found == 2 && /^```/ { exit }
      found == 2 { print }' "$root/$doc")
    if [[ ! -f $root/$path ]]; then
      echo "$doc shows $path, which does not exist"
      bad=$((bad + 1))
    elif ! diff -u --label "$path" --label "$doc's copy" "$root/$path" <(printf '%s\n' "$shown"); then
      echo "$doc's copy of $path differs from the file (diff above)"
      bad=$((bad + 1))
    fi
  done < <(sed -n 's/^<!-- example: \(.*\) -->$/\1/p' "$root/$doc")
  if ((m == 0)); then
    echo "$doc has no '<!-- example: PATH -->' markers"
    bad=$((bad + 1))
  fi
  n=$((n + m))
done
echo "documented examples: $n checked, $bad differ"
((bad == 0))
