# shellcheck shell=bash
# Host-side helpers of the VM harness, sourced by run.sh (bash only).
#
# Every function reports failure through its return status and a message on
# stderr; none of them exits the shell.  The cache layout they maintain is
#
#   $VM_CACHE/lock                         flock(1) lock serialising preparation
#   $VM_CACHE/last-<series>                the package last resolved for a series,
#                                          used when apt knows no candidate (offline)
#   $VM_CACHE/<pkg>_<version>/<pkg>.deb    the downloaded kernel image package
#   $VM_CACHE/<pkg>_<version>/root/        the package unpacked with dpkg -x, depmod-ed
#   $VM_CACHE/<pkg>_<version>/ready        written once root/ is complete
#   $VM_CACHE/<pkg>_<version>/vmlinux      the kernel decompressed, when it has a PVH entry
#   $VM_CACHE/<pkg>_<version>/boot-image   the image to boot: vmlinux, or the bzImage
#   $VM_CACHE/<pkg>_<version>/initramfs-<hash>.cpio
#                                          the guest's initramfs; <hash> covers every
#                                          input, so a changed input builds a new one

# binutils (readelf) and zstd serve vm_boot_image: 6.12 compresses with zstd.
VM_HOST_PACKAGES=(qemu-system-x86 busybox-static xz-utils kmod cpio binutils zstd)

# Modules the guest needs before it can reach the host's root: virtio PCI
# transport, 9p over virtio, and overlayfs.  Loaded in this order.
VM_BOOT_MODULES=(virtio_pci 9pnet_virtio 9p overlay)

# Netfilter modules the project's real-kernel suite needs, preloaded in the
# guest.  Ones a kernel lacks (or has built in) are reported, not fatal.
# shellcheck disable=SC2034  # Used by run.sh.
VM_PRELOAD_MODULES=(nfnetlink nf_tables nf_conntrack nf_conntrack_netlink
  nf_flow_table nf_flow_table_inet nft_flow_offload nft_ct nf_nat nft_nat
  nft_masq nft_chain_nat nft_counter nft_objref veth)

vm_log() {
  [[ ${VM_QUIET:-0} == 1 ]] || printf '[vm] %s\n' "$*" >&2
}

vm_err() {
  printf '[vm] error: %s\n' "$*" >&2
}

# Prints 'value' quoted for a POSIX shell (the guest's busybox ash sources it).
vm_shell_quote() {
  local s=${1//\'/\'\\\'\'}
  printf "'%s'" "$s"
}

# Installs the host packages the harness needs (and any given as arguments), running `apt-get update` only
# when one of them is missing and apt cannot find it as is.  Returns 0 when all
# are installed.
vm_ensure_packages() {
  local missing=() p
  declare -A ok=()
  while read -r p; do ok[$p]=1; done < <(dpkg-query -W -f='${Package} ${Status}\n' \
    "${VM_HOST_PACKAGES[@]}" "$@" 2>/dev/null | awk '$NF == "installed" { print $1 }')
  for p in "${VM_HOST_PACKAGES[@]}" "$@"; do
    [[ -n ${ok[$p]:-} ]] || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  vm_log "installing ${missing[*]}"
  local apt=(apt-get -y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${missing[@]}" >/dev/null 2>&1; then
    vm_log "apt-get install failed; running apt-get update first"
    apt-get -q update >/dev/null 2>&1 || { vm_err "apt-get update failed"; return 1; }
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${missing[@]}" >&2 ||
      { vm_err "cannot install ${missing[*]}"; return 1; }
  fi
}

# Prints the meta package that names the current kernel of 'series' (6.1|6.12).
vm_meta_package() {
  case $1 in
    6.1) echo linux-image-amd64 ;;
    6.12) echo linux-image-6.12-amd64 ;;
    *) vm_err "unknown kernel series '$1' (expected 6.1 or 6.12)"; return 1 ;;
  esac
}

# Prints "<package> <version>" of the versioned kernel image package that the
# meta package of 'series' depends on now.  Tries apt's current lists, then
# after `apt-get update`, then the package recorded in the cache by the last
# successful run (so an offline machine with a warm cache still works).
vm_resolve_kernel() {
  local series=$1 meta pkg ver attempt last
  last=$VM_CACHE/last-$series
  meta=$(vm_meta_package "$series") || return 1
  # apt-cache takes seconds here (no pkgcache.bin): skip it while no package
  # list changed since the last resolution.
  if [[ -s $last ]] && [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -newer "$last" 2>/dev/null) ]]; then
    read -r pkg ver <"$last"
    if [[ -f $VM_CACHE/${pkg}_$ver/ready ]]; then
      cat "$last"
      return 0
    fi
  fi
  for attempt in lists update; do
    if [[ $attempt == update ]]; then
      vm_log "apt does not know $meta; running apt-get update"
      apt-get -q update >/dev/null 2>&1 || break
    fi
    pkg=$(apt-cache depends "$meta" 2>/dev/null |
      awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    [[ -n $pkg ]] || continue
    ver=$(apt-cache policy "$pkg" 2>/dev/null | awk '$1 == "Candidate:" { print $2; exit }')
    [[ -n $ver && $ver != "(none)" ]] || continue
    printf '%s %s\n' "$pkg" "$ver"
    return 0
  done
  if [[ -s $last ]]; then
    vm_log "apt cannot resolve $meta; using the cached $(cat "$last")"
    cat "$last"
    return 0
  fi
  vm_err "cannot resolve the kernel package of $meta"
  return 1
}

# Downloads and unpacks kernel image 'pkg' at 'ver' into 'dir' unless 'dir'
# is already complete, then runs depmod on it.  Prints nothing.
vm_fetch_kernel() {
  local pkg=$1 ver=$2 dir=$3
  [[ -f $dir/ready ]] && return 0
  vm_log "downloading $pkg $ver"
  rm -rf "$dir" && mkdir -p "$dir/dl" || return 1
  # The sandbox user cannot write into a root-owned cache: download as root.
  (cd "$dir/dl" && apt-get -q -o APT::Sandbox::User=root download "$pkg=$ver" >/dev/null) ||
    { vm_err "apt-get download $pkg=$ver failed"; return 1; }
  local deb
  deb=$(find "$dir/dl" -maxdepth 1 -name '*.deb' | head -n1)
  [[ -n $deb ]] || { vm_err "no .deb downloaded for $pkg"; return 1; }
  mv "$deb" "$dir/$pkg.deb" && rmdir "$dir/dl" || return 1
  dpkg -x "$dir/$pkg.deb" "$dir/root" || { vm_err "dpkg -x $pkg failed"; return 1; }
  rm -f "$dir/$pkg.deb"
  local base kver
  base=$(vm_module_base "$dir/root") || return 1
  kver=$(vm_kernel_version "$dir/root") || return 1
  depmod -b "$base" "$kver" || { vm_err "depmod failed for $kver"; return 1; }
  [[ -f $dir/root/boot/vmlinuz-$kver ]] || { vm_err "no boot/vmlinuz-$kver in $pkg"; return 1; }
  touch "$dir/ready"
}

# Prints the directory 'D' of an unpacked kernel package such that modules
# live in D/lib/modules/VERSION (the package root, or its usr/ when merged).
vm_module_base() {
  local root=$1
  if [[ -d $root/lib/modules ]]; then echo "$root"
  elif [[ -d $root/usr/lib/modules ]]; then echo "$root/usr"
  else vm_err "no lib/modules in $root"; return 1
  fi
}

# Prints the kernel release (the lib/modules directory name) of an unpacked package.
vm_kernel_version() {
  local base
  base=$(vm_module_base "$1") || return 1
  local dirs=("$base"/lib/modules/*/) v
  ((${#dirs[@]} == 1)) || { vm_err "expected one kernel in $base/lib/modules"; return 1; }
  v=${dirs[0]%/}
  echo "${v##*/}"
}

# Prints, one path a line and in load order, the module files (with their
# dependencies first) of VM_BOOT_MODULES for kernel 'kver' under 'base'.
# Built-in modules print nothing.
vm_boot_module_files() {
  local base=$1 kver=$2 m line words
  declare -A seen=()
  for m in "${VM_BOOT_MODULES[@]}"; do
    while read -r line; do
      read -r -a words <<<"$line"
      [[ ${words[0]:-} == insmod ]] || continue
      [[ -n ${seen[${words[1]}]:-} ]] && continue
      seen[${words[1]}]=1
      echo "${words[1]}"
    done < <(modprobe -d "$base" -S "$kver" --show-depends "$m") ||
      { vm_err "modprobe --show-depends $m failed for $kver"; return 1; }
  done
}

# Builds (or reuses) the initramfs for the kernel unpacked in 'dir' and prints
# its path.  It holds busybox-static, the guest init, the modprobe helper and
# the boot modules decompressed (busybox insmod cannot read .ko.xz).
vm_build_initramfs() {
  local dir=$1 base kver busybox files hash out
  base=$(vm_module_base "$dir/root") || return 1
  kver=$(vm_kernel_version "$dir/root") || return 1
  busybox=$(dpkg -L busybox-static 2>/dev/null | grep -m1 '/bin/busybox$')
  [[ -x $busybox ]] || { vm_err "busybox-static's busybox not found"; return 1; }
  files=$(vm_boot_module_files "$base" "$kver") || return 1
  # Everything that goes into the image decides its name.
  hash=$({
    echo "$kver"; echo "$files"
    sha256sum "$busybox" "$VM_DIR/guest-init.sh" "$VM_DIR/lib.sh"
    # shellcheck disable=SC2086
    sha256sum $files
  } | sha256sum | cut -c1-16)
  out=$dir/initramfs-$hash.cpio
  [[ -s $out ]] && { echo "$out"; return 0; }
  vm_log "building the initramfs for $kver"
  local tmp f name n=0
  tmp=$(mktemp -d "$dir/.initramfs.XXXXXX") || return 1
  mkdir -p "$tmp"/{bin,modules,proc,sys,dev} || return 1
  cp "$busybox" "$tmp/bin/busybox" &&
    install -m 0755 "$VM_DIR/guest-init.sh" "$tmp/init" || return 1
  printf '#!/bin/busybox sh\n# The kernel runs this for module autoload in the initramfs root, where\n# no modules are: load them from the command'"'"'s root instead.\nexec /bin/busybox chroot /newroot /sbin/modprobe "$@"\n' \
    >"$tmp/bin/ctoffload-modprobe" && chmod 0755 "$tmp/bin/ctoffload-modprobe" || return 1
  : >"$tmp/modules/order"
  for f in $files; do
    name=$(printf '%02d-%s' "$n" "$(basename "${f%.xz}")")
    name=${name%.zst}
    case $f in
      *.ko.xz) xz -dc "$f" >"$tmp/modules/$name" ;;
      *.ko.zst) zstd -qdc "$f" >"$tmp/modules/$name" ;;
      *.ko) cp "$f" "$tmp/modules/$name" ;;
      *) vm_err "unexpected module file $f"; false ;;
    esac || { rm -rf "$tmp"; return 1; }
    echo "$name" >>"$tmp/modules/order"
    n=$((n + 1))
  done
  if ! (cd "$tmp" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) \
    >"$out.tmp" || ! mv "$out.tmp" "$out"; then
    rm -rf "$tmp" "$out.tmp"
    return 1
  fi
  rm -rf "$tmp"
  # Drop images built from older inputs.
  for f in "$dir"/initramfs-*.cpio; do [[ $f == "$out" ]] || rm -f "$f"; done
  echo "$out"
}

# Prints the kernel image to boot for the kernel unpacked in 'dir'.  Under
# TCG the bzImage's own decompressor (xz for 6.1, zstd for 6.12) takes most
# of the boot (about 20 of 31 s on a loaded 2-core host); qemu boots an ELF
# vmlinux with a PVH entry note directly, so the harness decompresses it once
# here and boots that.  Falls back to the bzImage if that fails.
vm_boot_image() {
  local dir=$1 kver=$2 bz off magic
  if [[ -s $dir/boot-image && -s $(cat "$dir/boot-image") ]]; then
    cat "$dir/boot-image"
    return 0
  fi
  bz=$dir/root/boot/vmlinuz-$kver
  local -A tool=([xz]='xz -dcq' [zstd]='zstd -dcq' [gzip]='gzip -dcq')
  local -A pattern=([xz]='\xfd7zXZ\x00' [zstd]='\x28\xb5\x2f\xfd' [gzip]='\x1f\x8b\x08')
  rm -f "$dir/vmlinux"
  for magic in xz zstd gzip; do
    for off in $(LC_ALL=C grep -obUaP "${pattern[$magic]}" "$bz" | cut -d: -f1 | head -n 5); do
      # shellcheck disable=SC2086  # The tool's words.
      tail -c +"$((off + 1))" "$bz" | ${tool[$magic]} >"$dir/vmlinux.tmp" 2>/dev/null
      # A trailing-garbage error is expected; the ELF check decides.
      if readelf -n "$dir/vmlinux.tmp" 2>/dev/null | grep -q 'Unknown note type: (0x00000012)'; then
        mv "$dir/vmlinux.tmp" "$dir/vmlinux"
        break 2
      fi
    done
  done
  rm -f "$dir/vmlinux.tmp"
  if [[ -s $dir/vmlinux ]]; then
    echo "$dir/vmlinux" >"$dir/boot-image"
  else
    vm_log "no PVH-bootable vmlinux in $bz; booting the bzImage (slower under TCG)"
    echo "$bz" >"$dir/boot-image"
  fi
  cat "$dir/boot-image"
}

# Prints the '-cpu' model with which KVM boots 'vmlinuz' with 'initramfs' to
# userspace ('host', or 'host' without the arch-capabilities MSR, which some
# nested hypervisors refuse to set) and returns 0; returns 1 when KVM is not
# usable.  /dev/kvm can exist and still hang a Linux guest early in boot
# (seen on a Firecracker host), so this boots for real, within 20 s, and
# caches the verdict per host boot and qemu version in $VM_CACHE.
vm_kvm_cpu() {
  local vmlinuz=$1 initramfs=$2
  [[ -c /dev/kvm && -r /dev/kvm && -w /dev/kvm ]] || return 1
  local key verdict cpu
  key="$(cat /proc/sys/kernel/random/boot_id 2>/dev/null) $(qemu-system-x86_64 --version | head -n1)"
  if [[ -f $VM_CACHE/kvm-probe ]] && [[ $(head -n1 "$VM_CACHE/kvm-probe") == "$key" ]]; then
    verdict=$(sed -n 2p "$VM_CACHE/kvm-probe")
  else
    verdict=none
    for cpu in host host,-arch-capabilities; do
      if timeout 20 qemu-system-x86_64 -M q35 -accel kvm -cpu "$cpu" -m 256 -smp 1 \
        -nographic -no-reboot -nodefaults -serial stdio -nic none \
        -kernel "$vmlinuz" -initrd "$initramfs" \
        -append "console=ttyS0 quiet panic=-1 rdinit=/init ctoffload.probe" \
        </dev/null 2>/dev/null | grep -q CTOFFLOAD-PROBE-OK; then
        verdict=$cpu
        break
      fi
    done
    printf '%s\n%s\n' "$key" "$verdict" >"$VM_CACHE/kvm-probe"
  fi
  [[ $verdict != none ]] || return 1
  echo "$verdict"
}
