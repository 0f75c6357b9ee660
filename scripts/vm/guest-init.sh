#!/bin/busybox sh
# PID 1 of the harness's guest (busybox ash, copied into the initramfs as /init).
#
# It loads the boot modules, mounts the host's / (9p "hostroot", read-only)
# under a tmpfs overlay at /newroot, mounts the run's control directory
# (9p "ctrl", read-write) and any --share directories, makes module autoload
# work from inside the chroot, preloads the netfilter modules, then runs
# the host-written ctrl/cmd.sh chrooted into /newroot with stdout and stderr
# going to ctrl/stdout and ctrl/stderr.  Its exit status lands in ctrl/rc.
# Anything that stops the run before that is written to ctrl/guest-error
# (when ctrl is mounted) and to the console; the guest then powers off.
# Chatter goes to the serial console only, never to the command's output.

/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

# Console chatter, stamped with the guest's uptime.
say() { read -r t _ </proc/uptime; echo "vm-init [$t]: $*"; }

# Records why the run cannot go on and powers off; the host reports it.
die() {
  say "FATAL: $*"
  [ -d /ctrl/. ] && echo "$*" >/ctrl/guest-error 2>/dev/null
  sync
  poweroff -f
  reboot -f
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

# The host's KVM probe only wants to know that a guest reaches userspace.
case " $(cat /proc/cmdline) " in
  *" ctoffload.probe "*) echo "CTOFFLOAD-PROBE-OK"; poweroff -f; reboot -f ;;
esac

say "loading the boot modules"
while read -r m; do
  insmod "/modules/$m" || die "insmod $m failed"
done </modules/order

NINEP=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /lower /rw /newroot /ctrl
mount -t 9p -o "$NINEP" ctrl /ctrl || die "cannot mount the ctrl share"
# cache=loose lets the guest cache the read-only host root (execs of host
# binaries run about twice as fast); files changed on the host during a run
# may then be seen stale.  ctrl and the shares stay uncached.
mount -t 9p -o "$NINEP,ro,cache=loose" hostroot /lower || die "cannot mount the host's root"
[ -f /ctrl/config ] || die "no config in the ctrl share"
# shellcheck disable=SC1091  # Written by run.sh for this run.
. /ctrl/config

mount -t tmpfs -o mode=0755 tmpfs /rw || die "cannot mount the overlay's tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot ||
  die "cannot mount the overlay"

mount -t proc proc /newroot/proc || die "cannot mount /proc"
mount -t sysfs sysfs /newroot/sys || die "cannot mount /sys"
mount -t devtmpfs devtmpfs /newroot/dev || die "cannot mount /dev"
mkdir -p /newroot/dev/pts /newroot/dev/shm
# devtmpfs lacks these; bash's process substitution needs /dev/fd.
ln -sf /proc/self/fd /newroot/dev/fd
ln -sf /proc/self/fd/0 /newroot/dev/stdin
ln -sf /proc/self/fd/1 /newroot/dev/stdout
ln -sf /proc/self/fd/2 /newroot/dev/stderr
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm

# Mounts a fresh tmpfs at 'dir' (/tmp, /run) of the new root while keeping
# the caller's working directory visible when it lies below 'dir'.
fresh_tmpfs() {
  dir=$1 mode=$2
  keep=
  case "$VM_CWD/" in
    "$dir"/*)
      keep=/keep$dir
      mkdir -p "$keep"
      mount --bind "/newroot$VM_CWD" "$keep" || die "cannot keep $VM_CWD"
      ;;
  esac
  mount -t tmpfs -o "mode=$mode" tmpfs "/newroot$dir" || die "cannot mount $dir"
  if [ -n "$keep" ]; then
    mkdir -p "/newroot$VM_CWD"
    mount --bind "$keep" "/newroot$VM_CWD" || die "cannot restore $VM_CWD"
    umount "$keep"
  fi
}
fresh_tmpfs /tmp 1777
fresh_tmpfs /run 0755

mkdir -p /newroot/run/ctoffload-vm
mount --bind /ctrl /newroot/run/ctoffload-vm || die "cannot bind the ctrl share"

# --share directories: read-write 9p at the same path as on the host.
i=0
while [ "$i" -lt "${VM_NSHARES:-0}" ]; do
  path=''
  eval "path=\$VM_SHARE_$i"
  mkdir -p "/newroot$path"
  mount -t 9p -o "$NINEP" "share$i" "/newroot$path" || die "cannot mount share $path"
  i=$((i + 1))
done

say "root ready; setting up module autoload"
# Module autoload: the kernel runs its helper in PID 1's root (this
# initramfs), so the helper chroots into the new root, where the unpacked
# package's modules are bind-mounted (a symlink could land inside a host
# /lib/modules/VERSION created by linux-headers).
# busybox prefers its own applets: name the host's readlink by path.
moddir=$(chroot /newroot /bin/readlink -m "/lib/modules/$VM_KVER")
case $moddir in /?*/"$VM_KVER") ;; *) die "cannot resolve /lib/modules/$VM_KVER in the new root" ;; esac
mkdir -p "/newroot$moddir"
# Taken from the 9p root itself: the cache may lie below /tmp or /run, which
# the new root now hides under fresh tmpfs mounts.
mount --bind "/lower$VM_MODBASE/lib/modules/$VM_KVER" "/newroot$moddir" ||
  die "cannot bind the kernel's modules at $moddir"
echo /bin/ctoffload-modprobe >/proc/sys/kernel/modprobe

# One modprobe for all (each start costs a second under TCG), from the
# package's modules bound above (the same as `modprobe -d` on the unpacked
# package, which the new root may not see); then sort them by what
# /sys/module and modules.builtin say.
# shellcheck disable=SC2086
chroot /newroot /sbin/modprobe -q -a $VM_PRELOAD 2>/dev/null
loaded='' builtin='' absent=''
for m in $VM_PRELOAD; do
  if [ -d "/sys/module/$m" ] && [ -f "/sys/module/$m/initstate" ]; then
    loaded="$loaded $m"
  elif grep -q "/$m.ko\$" "/newroot$moddir/modules.builtin" 2>/dev/null; then
    builtin="$builtin $m"
  else
    absent="$absent $m"
  fi
done
say "modules loaded:$loaded; built in:$builtin; not a module here:$absent"
printf 'loaded:%s\nbuiltin:%s\nabsent:%s\n' "$loaded" "$builtin" "$absent" >/ctrl/modules

hostname ctoffload-vm
ip link set lo up

read -r up _ </proc/uptime
echo "$up" >/ctrl/booted
say "running the command after ${up}s"

chroot /newroot /bin/bash /run/ctoffload-vm/cmd.sh </dev/null >/ctrl/stdout 2>/ctrl/stderr
rc=$?
echo "$rc" >/ctrl/rc.tmp && mv /ctrl/rc.tmp /ctrl/rc
say "command exited with status $rc"
sync
poweroff -f
reboot -f
