#!/bin/bash
# Runs a command as root inside Debian's distribution kernel under qemu and
# returns its exit status, stdout and stderr.  See docs/VM.md.
#
# Exit status: the command's own, or
#   124  the time limit ran out (qemu killed),
#   123  the guest stopped without reporting a status (kernel panic, boot failure),
#   125  the harness itself failed (usage, packages, kernel download, qemu).
# Each of these comes with a "[vm] error:" line on stderr.

set -uo pipefail

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
# shellcheck source=lib.sh
. "$VM_DIR/lib.sh"

readonly EXIT_TIMEOUT=124 EXIT_NOSTATUS=123 EXIT_HARNESS=125

usage() {
  cat <<'EOF'
usage: scripts/vm/run.sh [options] -- COMMAND [ARGS...]
       scripts/vm/run.sh [options] --prepare
       scripts/vm/run.sh [options] --release

Runs COMMAND as root in Debian's distribution kernel under qemu, with the
host's / visible (read-only, under a throwaway tmpfs overlay) and the
current directory as working directory.  Returns COMMAND's exit status.

options:
  --kernel 6.1|6.12   kernel series (default 6.1, or $CTOFFLOAD_VM_KERNEL)
  --timeout SEC       time limit for boot plus command (default 1200)
  --mem MB            guest memory (default 1024)
  --smp N             guest CPUs (default 2)
  --share DIR         mount host directory DIR read-write at the same path
                      in the guest (repeatable); writes there stay on the host
  --env NAME[=VALUE]  also pass NAME (the host's value, or VALUE) to COMMAND;
                      PATH and every CTOFFLOAD_* variable are always passed
  --accel auto|kvm|tcg  accelerator (default auto: KVM when usable, else TCG)
  --console           stream the guest's serial console to stderr
  --keep              keep the run directory (console log, outputs) and print it
  --quiet             print only errors, not the harness's progress lines
  --prepare           only install packages and fill the cache, run nothing
  --release           like --prepare, then print the guest's kernel release
                      (what `uname -r` says in it) on stdout
  -h, --help          this text

environment: CTOFFLOAD_VM_CACHE (cache directory, default /var/cache/ctoffload-vm)
EOF
}

series=${CTOFFLOAD_VM_KERNEL:-6.1}
timeout_s=1200 mem=1024 smp=2 accel=auto
stream_console=0 keep=0 prepare_only=0 print_release=0
VM_QUIET=0
shares=() extra_env=()

need_arg() {
  [[ $# -ge 2 && -n $2 ]] || { vm_err "$1 needs a value"; exit $EXIT_HARNESS; }
}
while (($#)); do
  case $1 in
    --kernel) need_arg "$@"; series=$2; shift 2 ;;
    --kernel=*) series=${1#*=}; shift ;;
    --timeout) need_arg "$@"; timeout_s=$2; shift 2 ;;
    --timeout=*) timeout_s=${1#*=}; shift ;;
    --mem) need_arg "$@"; mem=$2; shift 2 ;;
    --mem=*) mem=${1#*=}; shift ;;
    --smp) need_arg "$@"; smp=$2; shift 2 ;;
    --smp=*) smp=${1#*=}; shift ;;
    --share) need_arg "$@"; shares+=("$2"); shift 2 ;;
    --share=*) shares+=("${1#*=}"); shift ;;
    --env) need_arg "$@"; extra_env+=("$2"); shift 2 ;;
    --env=*) extra_env+=("${1#*=}"); shift ;;
    --accel) need_arg "$@"; accel=$2; shift 2 ;;
    --accel=*) accel=${1#*=}; shift ;;
    --console) stream_console=1; shift ;;
    --keep) keep=1; shift ;;
    --quiet) VM_QUIET=1; shift ;;
    --prepare) prepare_only=1; shift ;;
    --release) prepare_only=1; print_release=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    -*) vm_err "unknown option $1"; usage >&2; exit $EXIT_HARNESS ;;
    *) break ;;
  esac
done

[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || { vm_err "--timeout wants whole seconds"; exit $EXIT_HARNESS; }
[[ $mem =~ ^[1-9][0-9]*$ ]] || { vm_err "--mem wants megabytes"; exit $EXIT_HARNESS; }
[[ $smp =~ ^[1-9][0-9]*$ ]] || { vm_err "--smp wants a count"; exit $EXIT_HARNESS; }
[[ $accel =~ ^(auto|kvm|tcg)$ ]] || { vm_err "--accel is auto, kvm or tcg"; exit $EXIT_HARNESS; }
if ((prepare_only == 0 && $# == 0)); then
  vm_err "no command given"; usage >&2; exit $EXIT_HARNESS
fi
((EUID == 0)) || { vm_err "must run as root (apt-get, qemu's 9p export of /)"; exit $EXIT_HARNESS; }

VM_CACHE=${CTOFFLOAD_VM_CACHE:-/var/cache/ctoffload-vm}
mkdir -p "$VM_CACHE" || { vm_err "cannot create the cache $VM_CACHE"; exit $EXIT_HARNESS; }

# --- Preparation: packages, kernel, initramfs (serialised across runs). ---
prepare() {
  # shellcheck disable=SC2119  # No extra packages.
  vm_ensure_packages || return 1
  local resolved pkg ver
  resolved=$(vm_resolve_kernel "$series") || return 1
  read -r pkg ver <<<"$resolved"
  kdir=$VM_CACHE/${pkg}_$ver
  vm_fetch_kernel "$pkg" "$ver" "$kdir" || return 1
  echo "$pkg $ver" >"$VM_CACHE/last-$series"
  kbase=$(vm_module_base "$kdir/root") || return 1
  kver=$(vm_kernel_version "$kdir/root") || return 1
  initramfs=$(vm_build_initramfs "$kdir") || return 1
  vmlinuz=$(vm_boot_image "$kdir" "$kver") || return 1
}
exec 9>"$VM_CACHE/lock"
flock 9 || { vm_err "cannot lock $VM_CACHE/lock"; exit $EXIT_HARNESS; }
prepare || { vm_err "preparation failed"; exit $EXIT_HARNESS; }
# KVM only when it boots a guest here: /dev/kvm may exist and still fail
# (nested virtualisation), so try it; the verdict is cached per host boot.
kvm_cpu=
case $accel in
  auto)
    if kvm_cpu=$(vm_kvm_cpu "$vmlinuz" "$initramfs"); then accel=kvm
    else
      accel=tcg
      if [[ -e /dev/kvm ]]; then vm_log "/dev/kvm exists but KVM is not usable here; using TCG (-accel tcg)"
      else vm_log "no /dev/kvm; using TCG (-accel tcg)"
      fi
    fi ;;
  kvm) kvm_cpu=$(vm_kvm_cpu "$vmlinuz" "$initramfs") || { vm_err "--accel kvm: KVM is not usable"; exit $EXIT_HARNESS; } ;;
esac

exec 9>&-
if ((prepare_only)); then
  vm_log "ready: kernel $kver, initramfs $initramfs"
  ((print_release)) && echo "$kver"
  exit 0
fi

# --- The run directory, shared with the guest as "ctrl". ---
run=$(mktemp -d "${TMPDIR:-/tmp}/ctoffload-vm.XXXXXX") || exit $EXIT_HARNESS
qpid='' tail_pids=()
# shellcheck disable=SC2317  # Invoked through the EXIT trap.
cleanup() {
  [[ -n $qpid ]] && kill "$qpid" 2>/dev/null
  local p
  for p in "${tail_pids[@]}"; do kill "$p" 2>/dev/null; done
  if ((keep)); then vm_log "run directory kept: $run"; else rm -rf "$run"; fi
}
trap cleanup EXIT
trap 'vm_err "interrupted"; exit $EXIT_HARNESS' INT TERM HUP

cwd=$(pwd -P)
{
  echo "VM_CWD=$(vm_shell_quote "$cwd")"
  echo "VM_KVER=$(vm_shell_quote "$kver")"
  echo "VM_MODBASE=$(vm_shell_quote "$kbase")"
  echo "VM_PRELOAD=$(vm_shell_quote "${VM_PRELOAD_MODULES[*]}")"
  echo "VM_NSHARES=${#shares[@]}"
} >"$run/config"
virtfs_shares=()
for i in "${!shares[@]}"; do
  if ! d=$(realpath -e -- "${shares[$i]}" 2>/dev/null) || [[ ! -d $d ]]; then
    vm_err "--share ${shares[$i]}: not a directory"; exit $EXIT_HARNESS
  fi
  echo "VM_SHARE_$i=$(vm_shell_quote "$d")" >>"$run/config"
  virtfs_shares+=(-virtfs "local,path=${d//,/,,},mount_tag=share$i,security_model=none,multidevs=remap")
done

# The command's environment: PATH, CTOFFLOAD_*, --env, and HOME unless given.
declare -A env_out=([HOME]=/root)
[[ -n ${PATH:-} ]] && env_out[PATH]=$PATH
while IFS= read -r name; do env_out[$name]=${!name}; done < <(compgen -e | grep '^CTOFFLOAD_')
for e in "${extra_env[@]}"; do
  name=${e%%=*}
  [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || { vm_err "--env $e: bad name"; exit $EXIT_HARNESS; }
  if [[ $e == *=* ]]; then env_out[$name]=${e#*=}
  elif [[ -v $name ]]; then env_out[$name]=${!name}
  fi
done
{
  echo '# Written by scripts/vm/run.sh; runs chrooted in the guest under bash.'
  # shellcheck disable=SC2016  # Expanded in the guest.
  echo 'for v in $(compgen -e); do unset "$v" 2>/dev/null; done'
  printf 'cd -- %q 2>/dev/null || { echo %q >/run/ctoffload-vm/guest-error; exit 125; }\n' \
    "$cwd" "cannot change to $cwd in the guest"
  for name in "${!env_out[@]}"; do printf 'export %s=%q\n' "$name" "${env_out[$name]}"; done
  printf 'exec --'
  printf ' %q' "$@"
  printf '\n'
} >"$run/cmd.sh"
: >"$run/stdout"
: >"$run/stderr"
: >"$run/console.log"

# --- Boot. ---
# Starts qemu with accelerator 'accel' in the background; sets qpid.
start_qemu() {
  local cpu=max
  [[ $1 == kvm ]] && cpu=$kvm_cpu
  qemu-system-x86_64 -M q35 -accel "$1" -cpu "$cpu" -m "$mem" -smp "$smp" \
    -nographic -no-reboot -nodefaults -serial mon:stdio -nic none \
    -kernel "$vmlinuz" -initrd "$initramfs" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=${run//,/,,},mount_tag=ctrl,security_model=none,multidevs=remap" \
    "${virtfs_shares[@]}" \
    </dev/null >>"$run/console.log" 2>"$run/qemu.err" &
  qpid=$!
}

vm_log "booting $kver ($accel${kvm_cpu:+ -cpu $kvm_cpu}, ${mem} MB, $smp CPUs, time limit ${timeout_s}s)"
t0=$EPOCHREALTIME
start_qemu "$accel"
tail -q -n +1 -s 0.2 -f --pid="$qpid" "$run/stdout" & tail_pids+=($!)
tail -q -n +1 -s 0.2 -f --pid="$qpid" "$run/stderr" >&2 & tail_pids+=($!)
if ((stream_console)); then
  tail -q -n +1 -s 0.2 -f --pid="$qpid" "$run/console.log" >&2 & tail_pids+=($!)
fi

# Microseconds since t0, and that as seconds with one decimal.
elapsed_us() { local now=${EPOCHREALTIME//[!0-9]/}; echo $((10#$now - 10#${t0//[!0-9]/})); }
elapsed() { local us; us=$(elapsed_us); printf '%d.%d' $((us / 1000000)) $((us % 1000000 / 100000)); }
timed_out=0 boot_s=''
while kill -0 "$qpid" 2>/dev/null; do
  if [[ -z $boot_s && -s $run/booted ]]; then
    boot_s=$(elapsed)
    vm_log "booted in ${boot_s}s (guest uptime $(cat "$run/booted")s); running: $*"
  fi
  if (($(elapsed_us) >= timeout_s * 1000000)); then
    timed_out=1
    kill "$qpid" 2>/dev/null
    break
  fi
  sleep 0.1
done
wait "$qpid" 2>/dev/null
qrc=$?
qpid=''
for p in "${tail_pids[@]}"; do wait "$p" 2>/dev/null; done
tail_pids=()
total=$(elapsed)

# Shows the console around the kernel's first complaint, or its last lines.
console_tail() {
  local first
  first=$(grep -n -m1 -E 'Kernel panic|BUG:|Oops|sysrq: Trigger' "$run/console.log" | cut -d: -f1)
  if [[ -n $first ]]; then
    tail -n +"$((first > 3 ? first - 3 : 1))" "$run/console.log" | head -n 30
  else
    grep -v '^\s*$' "$run/console.log" | tail -n 25
  fi | tr -d '\r' | sed 's/^/[vm] console: /' >&2
}
kernel_trouble() {
  grep -E 'BUG:|Oops|WARNING:|Call Trace:|Kernel panic' "$run/console.log" >/dev/null
}

if ((timed_out)); then
  vm_err "TIMEOUT: no result after ${timeout_s}s; qemu killed"
  console_tail
  exit $EXIT_TIMEOUT
fi
if [[ -s $run/rc ]]; then
  rc=$(cat "$run/rc")
  if [[ -s $run/guest-error ]]; then
    vm_err "guest setup failed: $(cat "$run/guest-error")"
    exit $EXIT_HARNESS
  fi
  kernel_trouble && vm_log "warning: the guest kernel logged a BUG/Oops/WARNING (see --console or --keep)"
  vm_log "command exited with status $rc (total ${total}s)"
  exit "$rc"
fi
if [[ -s $run/guest-error ]]; then
  vm_err "guest setup failed: $(cat "$run/guest-error")"
  console_tail
  exit $EXIT_HARNESS
fi
if ((qrc != 0)); then
  vm_err "qemu failed with status $qrc: $(head -c 2000 "$run/qemu.err")"
  console_tail
  exit $EXIT_HARNESS
fi
if grep -q 'Kernel panic' "$run/console.log"; then
  vm_err "KERNEL PANIC in the guest (no exit status)"
else
  vm_err "the guest stopped without reporting an exit status (boot failure?)"
fi
console_tail
exit $EXIT_NOSTATUS
