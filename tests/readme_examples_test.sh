#!/usr/bin/env bash
# readme_examples_test.sh - the code the README shows is the code the tests
# build: every "<!-- example: PATH -->" line in README.md must be followed by
# a fenced block whose body is exactly the file PATH (scripts/test.sh's
# package stage compiles and runs those files against the installed
# package).  Prints what differs; exit status 0 when all match.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readme=$root/README.md
n=0 bad=0
while IFS= read -r path; do
  n=$((n + 1))
  # The fenced block right after the marker, without its fences.
  shown=$(awk -v marker="<!-- example: $path -->" '
    $0 == marker { found = 1; next }
    found == 1 && /^```/ { found = 2; next }
    found == 2 && /^```/ { exit }
    found == 2 { print }' "$readme")
  if [[ ! -f $root/$path ]]; then
    echo "README.md shows $path, which does not exist"
    bad=$((bad + 1))
  elif ! diff -u --label "$path" --label "README.md's copy" "$root/$path" <(printf '%s\n' "$shown"); then
    echo "README.md's copy of $path differs from the file (diff above)"
    bad=$((bad + 1))
  fi
done < <(sed -n 's/^<!-- example: \(.*\) -->$/\1/p' "$readme")

if ((n == 0)); then
  echo "README.md has no '<!-- example: PATH -->' markers"
  exit 1
fi
echo "readme examples: $n checked, $bad differ"
((bad == 0))
