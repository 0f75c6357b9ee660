#!/usr/bin/env bash
# build.sh - builds the simulated NIC (simnic.ko) for each kernel release
# given, against Debian's linux-headers-RELEASE, and iproute2's link_simnic.so.
#
#   tests/simnic/build.sh --out DIR [--install-headers] [--host] [--vm SERIES]... [RELEASE...]
#   tests/simnic/build.sh --out build/simnic 6.1.0-57-amd64 6.12.118+deb12-amd64
#   tests/simnic/build.sh --out build/simnic --install-headers --vm 6.1 --vm 6.12
#
# --host builds for this kernel (uname -r); --vm SERIES for the kernel the
# VM of scripts/vm/run.sh boots in that series (its --release says which,
# preparing the VM cache if needed).  --install-headers installs Debian's
# linux-headers-RELEASE of every release through scripts/install-deps.sh
# when missing (scripts/test.sh and scripts/bench.sh build it this way).
# Output: DIR/RELEASE/simnic.ko per release, DIR/link_simnic.so (set
# IP_LIB_DIR=DIR so that `ip link add A type simnic peer name B` works).
# The headers must be installed (/usr/src/linux-headers-RELEASE, or
# /lib/modules/RELEASE/build); scripts/test.sh installs them.  A module whose
# sources and headers have not changed since its last build is kept (the
# stamp beside it records them).  Prints one line per release; exit status 0
# only when every release built.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=$(cd "$here/../.." && pwd -P)
out=""
install=0
releases=()
while (($#)); do
  case $1 in
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --install-headers) install=1; shift ;;
    --host) releases+=("$(uname -r)"); shift ;;
    --vm)
      rel=$("$root/scripts/vm/run.sh" --kernel "${2:?--vm needs a kernel series}" --release --quiet) || rel=""
      [[ -n $rel ]] || { echo "build.sh: no kernel release for the VM series '$2'" >&2; exit 1; }
      releases+=("$rel")
      shift 2
      ;;
    -h | --help) sed -n '2,21s/^# \{0,1\}//p' "$0"; exit 0 ;;
    -*) echo "build.sh: unknown option '$1'" >&2; exit 2 ;;
    *) releases+=("$1"); shift ;;
  esac
done
[[ -n $out ]] || { echo "build.sh: --out DIR is required" >&2; exit 2; }
((${#releases[@]})) || { echo "build.sh: name at least one kernel release" >&2; exit 2; }
mkdir -p "$out" && out=$(cd "$out" && pwd -P) || exit 1
if ((install)); then
  headers=()
  for rel in "${releases[@]}"; do headers+=("linux-headers-$rel"); done
  "$root/scripts/install-deps.sh" "${headers[@]}" || exit 1
fi

rc=0
# The iproute2 plugin does not depend on the kernel.
if [[ ! -s $out/link_simnic.so || $here/link_simnic.c -nt $out/link_simnic.so ]]; then
  gcc -O2 -Wall -Wextra -Werror -shared -fPIC -o "$out/link_simnic.so" "$here/link_simnic.c" -ldl ||
    { echo "build.sh: link_simnic.so failed" >&2; rc=1; }
fi

for rel in "${releases[@]}"; do
  kdir=/usr/src/linux-headers-$rel
  [[ -d $kdir ]] || kdir=/lib/modules/$rel/build
  if [[ ! -f $kdir/Makefile ]]; then
    echo "simnic $rel: FAILED: no headers (install linux-headers-$rel)" >&2
    rc=1
    continue
  fi
  dir=$out/$rel
  mkdir -p "$dir" || { rc=1; continue; }
  stamp=$(cat "$here/simnic.c" "$here/Kbuild" "$kdir/Module.symvers" 2>/dev/null | sha256sum | cut -c1-16)
  if [[ -s $dir/simnic.ko && $(cat "$dir/stamp" 2>/dev/null) == "$stamp" ]]; then
    echo "simnic $rel: up to date ($dir/simnic.ko)"
    continue
  fi
  # Kbuild writes next to the sources: build from a copy.
  cp "$here/simnic.c" "$here/Kbuild" "$dir/" || { rc=1; continue; }
  t0=$SECONDS
  if make -s -C "$kdir" M="$dir" modules >"$dir/build.log" 2>&1 && [[ -s $dir/simnic.ko ]]; then
    echo "$stamp" >"$dir/stamp"
    echo "simnic $rel: built in $((SECONDS - t0)) s ($dir/simnic.ko)"
  else
    cat "$dir/build.log" >&2
    echo "simnic $rel: FAILED (log above)" >&2
    rm -f "$dir/stamp"
    rc=1
  fi
done
exit $rc
