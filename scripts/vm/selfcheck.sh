#!/bin/bash
# Proves that the VM harness is fit for the real-kernel suite.
#
#   scripts/vm/selfcheck.sh [--kernel 6.1|6.12]... [-- RUN_SH_OPTIONS...]
#
# On the host (the default) it boots each kernel (default: 6.1 and 6.12) with
# scripts/vm/run.sh and checks, ending with "selfcheck: N passed, N failed":
#   - the guest part below exits 0 and its --share writes are on the host;
#   - a command's exit status comes back exactly (sh -c 'exit 7' gives 7);
#   - --timeout kills a command that outlives it and reports 124.
# In the guest (--guest SHAREDIR, run by the host part) it checks the kernel
# release, a flowtable on lo, a binary built on the host, then builds a
# client - router - server topology of veth pairs in three network
# namespaces of its own, with a flowtable on the router, and requires that
# a TCP transfer across it shows [OFFLOAD] in the router's `conntrack -L`
# and arrives whole.  Addresses are documentation ranges (192.0.2.0/24,
# 198.51.100.0/24) inside those namespaces only: the guest has no NIC.

set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

# ---------------------------------------------------------------- guest part
guest_main() {
  local share=$1 failed=0
  ok() { echo "ok: $*"; }
  bad() { echo "FAIL: $*"; failed=1; }

  local rel
  rel=$(uname -r)
  ok "uname -r: $rel"
  echo "$rel" >"$share/uname" || bad "cannot write to the share $share"

  if nft add table inet selfcheck_lo &&
    nft add flowtable inet selfcheck_lo f '{ hook ingress priority 0; devices = { lo }; }' &&
    nft list flowtable inet selfcheck_lo f | grep -q 'devices = { lo }'; then
    ok "flowtable on lo created"
    nft delete table inet selfcheck_lo
  else
    bad "cannot create a flowtable on lo"
  fi

  # Neither module is preloaded: the kernel must autoload them through the
  # harness's modprobe helper (chroot into the new root).
  if ! grep -q '^dummy ' /proc/modules && ip link add selfcheck-d0 type dummy &&
    grep -q '^dummy ' /proc/modules; then
    ok "autoloaded dummy (ip link add type dummy)"
    ip link del selfcheck-d0
  else
    bad "dummy was loaded already or could not be autoloaded"
  fi
  if ! grep -q '^nft_limit ' /proc/modules && nft add table inet selfcheck_al &&
    nft add chain inet selfcheck_al c &&
    nft add rule inet selfcheck_al c limit rate 10/second accept &&
    grep -q '^nft_limit ' /proc/modules; then
    ok "autoloaded nft_limit (nf_tables expression)"
    nft delete table inet selfcheck_al
  else
    bad "nft_limit was loaded already or could not be autoloaded"
  fi

  if [[ -x $share/hello ]]; then
    local out
    out=$("$share/hello")
    if [[ $out == "hello from a host-built binary" ]]; then ok "host-built binary ran: $out"
    else bad "host-built binary printed '$out'"; fi
  fi

  topology || failed=1
  return $failed
}

indent() { sed 's/^/  /'; }

# Runs a TCP transfer client -> router -> server and checks the offload.
topology() {
  local c=selfcheck-c r=selfcheck-r s=selfcheck-s rc=0
  local port=5001 chunk=65536 min_chunks=20 max_chunks=600
  local recv=/tmp/selfcheck.recv stop=/tmp/selfcheck.stop sent=/tmp/selfcheck.sent
  rm -f $recv $stop $sent
  cleanup_topology() {
    ip netns pids $s 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns pids $c 2>/dev/null | xargs -r kill 2>/dev/null
    ip netns del $c 2>/dev/null; ip netns del $r 2>/dev/null; ip netns del $s 2>/dev/null
  }
  set -e
  # Batches: every process start costs most of a second under TCG.
  ip -b - <<EOF
netns add $c
netns add $r
netns add $s
link add c0 netns $c type veth peer name r0 netns $r
link add s0 netns $s type veth peer name r1 netns $r
EOF
  ip -n $c -b - <<EOF
addr add 192.0.2.1/24 dev c0
link set lo up
link set c0 up
route add default via 192.0.2.254
EOF
  ip -n $r -b - <<EOF
addr add 192.0.2.254/24 dev r0
addr add 198.51.100.254/24 dev r1
link set lo up
link set r0 up
link set r1 up
EOF
  ip -n $s -b - <<EOF
addr add 198.51.100.1/24 dev s0
link set lo up
link set s0 up
route add default via 198.51.100.254
EOF
  # Accounting is attached when conntrack creates an entry: turn it on first.
  ip netns exec $r sysctl -qw net.ipv4.ip_forward=1 net.netfilter.nf_conntrack_acct=1
  ip netns exec $r nft -f - <<'EOF'
table inet selfcheck {
  flowtable ft {
    hook ingress priority 0
    devices = { r0, r1 }
    counter
  }
  chain forward {
    type filter hook forward priority 0; policy accept;
    meta l4proto tcp flow add @ft
    meta l4proto tcp counter
  }
}
EOF
  set +e

  # A paced transfer keeps the connection open while conntrack is read.
  ip netns exec $s timeout 120 socat -u TCP-LISTEN:$port,reuseaddr "OPEN:$recv,creat,trunc" &
  local server=$!
  for _ in $(seq 50); do
    ip netns exec $s ss -Hltn "sport = :$port" | grep -q . && break
    sleep 0.1
  done
  # The client sends a chunk every 0.2 s (process starts cost most of a
  # second under TCG, so one printf builtin per chunk), at least min_chunks,
  # until the router has been checked, and records how many it sent.
  # shellcheck disable=SC2016  # Expanded by the inner bash.
  ip netns exec $c timeout 120 bash -c '
    data=$(head -c "$1" /dev/zero | tr "\0" x) n=0
    while ((n < $3)) && { ((n < $2)) || [[ ! -e $4 ]]; }; do
      printf %s "$data"; n=$((n + 1)); echo $n >"$5"; sleep 0.2
    done | socat -u - "TCP:198.51.100.1:$6"' _ $chunk $min_chunks $max_chunks $stop $sent $port &
  local client=$!

  local seen='' listing _
  for _ in $(seq 100); do
    listing=$(ip netns exec $r conntrack -L -p tcp --dport $port 2>/dev/null)
    if grep -q '\[OFFLOAD\]' <<<"$listing"; then seen=1; break; fi
    sleep 0.1
  done
  echo "router conntrack -L while transferring:"
  indent <<<"$listing"
  if [[ -n $seen ]]; then ok "[OFFLOAD] shown in the router's conntrack -L"
  else bad "no [OFFLOAD] in the router's conntrack -L"; rc=1; fi

  touch $stop
  wait $client || { bad "client failed"; rc=1; }
  wait $server || { bad "server failed"; rc=1; }
  local got want
  want=$(($(cat $sent 2>/dev/null || echo 0) * chunk))
  got=$(stat -c %s $recv 2>/dev/null || echo 0)
  if [[ $got == "$want" ]]; then ok "server received all $want bytes"
  else bad "server received $got of $want bytes"; rc=1; fi
  # Offloaded packets bypass the forward chain but still count in conntrack
  # (flowtable counter flag): more conntrack packets than forward-chain
  # packets means the fast path carried the transfer.
  local ct_pkts fwd_pkts
  listing=$(ip netns exec $r conntrack -L -p tcp --dport $port 2>/dev/null)
  echo "router conntrack -L after the transfer:"
  indent <<<"$listing"
  ct_pkts=$(grep -o 'packets=[0-9]*' <<<"$listing" | awk -F= '{ n += $2 } END { print n + 0 }')
  echo "router ruleset after the transfer:"
  ip netns exec $r nft list ruleset | sed 's/^/  /'
  fwd_pkts=$(ip netns exec $r nft list chain inet selfcheck forward |
    awk '/counter packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }')
  if ((ct_pkts > ${fwd_pkts:-0} + 10)); then
    ok "$((ct_pkts - fwd_pkts)) of $ct_pkts packets bypassed the forward chain ($fwd_pkts crossed it)"
  else
    bad "conntrack counted $ct_pkts packets, the forward chain ${fwd_pkts:-?}: no fast path"; rc=1
  fi
  cleanup_topology
  return $rc
}

# ----------------------------------------------------------------- host part
host_main() {
  local kernels=() run_opts=()
  while (($#)); do
    case $1 in
      --kernel) kernels+=("$2"); shift 2 ;;
      --) shift; run_opts=("$@"); break ;;
      *) echo "usage: $0 [--kernel 6.1|6.12]... [-- RUN_SH_OPTIONS...]" >&2; return 2 ;;
    esac
  done
  ((${#kernels[@]})) || kernels=(6.1 6.12)
  # The guest runs the host's own tools, so install them on the host.
  # shellcheck source=lib.sh
  . "$here/lib.sh"
  vm_ensure_packages socat conntrack nftables iproute2 || return 1
  local passed=0 failed=0 k share rc t0
  check() { # check NAME CONDITION-STATUS
    if [[ $2 == 0 ]]; then echo "PASS: $1"; passed=$((passed + 1))
    else echo "FAIL: $1"; failed=$((failed + 1)); fi
  }
  for k in "${kernels[@]}"; do
    echo "== kernel $k"
    share=$(mktemp -d "${TMPDIR:-/tmp}/selfcheck-share.XXXXXX")
    if command -v cc >/dev/null; then
      printf '#include <stdio.h>\nint main(void) { puts("hello from a host-built binary"); return 0; }\n' |
        cc -x c -o "$share/hello" - || rm -f "$share/hello"
    fi
    t0=$SECONDS
    "$here/run.sh" --kernel "$k" --share "$share" "${run_opts[@]}" -- "$here/selfcheck.sh" --guest "$share"
    rc=$?
    echo "(guest checks took $((SECONDS - t0))s)"
    check "$k: guest checks (flowtable, topology with [OFFLOAD]) exit 0" "$rc"
    [[ -s $share/uname ]] && [[ $(cat "$share/uname") == "$k".* ]]
    check "$k: --share write visible on the host ($(cat "$share/uname" 2>/dev/null))" $?
    rm -rf "$share"

    "$here/run.sh" --kernel "$k" --quiet "${run_opts[@]}" -- sh -c 'echo out; echo err >&2; exit 7'
    rc=$?
    check "$k: exit status passes through (sh -c 'exit 7' gave $rc)" $((rc != 7))

    "$here/run.sh" --kernel "$k" --quiet --timeout 40 "${run_opts[@]}" -- sleep 600 2>/dev/null
    rc=$?
    check "$k: --timeout 40 on sleep 600 gives 124 (gave $rc)" $((rc != 124))
  done
  echo "selfcheck: $passed passed, $failed failed"
  ((failed == 0))
}

if [[ ${1:-} == --guest ]]; then
  [[ -n ${2:-} ]] || { echo "usage: $0 --guest SHAREDIR" >&2; exit 2; }
  guest_main "$2"
else
  host_main "$@"
fi
