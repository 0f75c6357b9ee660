#!/usr/bin/env bash
# rfc_contract_kernel.sh - the RFC series' contract test (rfc_contract.c)
# over the real kernel provider, on real conntrack entries.
#
#   tests/package/rfc_contract_kernel.sh [--interval-ms N] [--sweeps N] RFC_CONTRACT
#
# RFC_CONTRACT is a built rfc_contract (tests/package, built against the
# installed package by scripts/test.sh's package stage; set LD_LIBRARY_PATH
# to the install prefix's lib directory when it is not a system one).
#
# Needs root, iproute2, nft, conntrack and socat, and a kernel with nftables
# flowtables (nf_flow_table, nft_flow_offload): on a host without them, run
# it in Debian's kernel under qemu,
#   scripts/vm/run.sh --env LD_LIBRARY_PATH -- tests/package/rfc_contract_kernel.sh RFC_CONTRACT
# It makes three network namespaces of its own (client - router - server over
# veth, router forwarding with conntrack accounting), opens two TCP
# connections through the router - one carrying a line every 20 ms all
# along ("busy"), one silent after its first line ("idle") - and runs
#   rfc_contract --kernel --busy ... --idle ... --dev lan0 --reply-dev wan0
# in the router's namespace: ct_offload_module_init() with the kernel
# provider only, a batch of ADDs, ESTs once, then the series' sweep every
# interval.  Everything it made is removed on exit, even on failure.  Exits
# with rfc_contract's status (0: every check passed), or 1 when the setup
# fails.
set -uo pipefail

interval_ms=2000
sweeps=3
while (($#)); do
  case $1 in
    --interval-ms) interval_ms=$2; shift 2 ;;
    --sweeps) sweeps=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
(($# == 1)) || { echo "usage: $0 [--interval-ms N] [--sweeps N] RFC_CONTRACT" >&2; exit 2; }
bin=$(readlink -f "$1")
[[ -x $bin ]] || { echo "$1: not an executable" >&2; exit 2; }
((EUID == 0)) || { echo "$0: needs root (network namespaces, nftables)" >&2; exit 1; }
for tool in ip nft conntrack socat; do
  command -v "$tool" >/dev/null || { echo "$0: needs $tool" >&2; exit 1; }
done

tag=rfcc$$
ns_client=$tag-client ns_router=$tag-router ns_server=$tag-server
client_ip=10.0.1.2 router_lan_ip=10.0.1.1 router_wan_ip=10.0.2.1 server_ip=10.0.2.2
busy_port=40001 idle_port=40002 busy_dport=5001 idle_dport=5002
pids=()

cleanup() {
  local p ns
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for ns in "$ns_client" "$ns_router" "$ns_server"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null
  done
}
trap cleanup EXIT
fail() {
  echo "rfc_contract_kernel: $*" >&2
  exit 1
}

# ---- Topology: client -- router -- server ----
for ns in "$ns_client" "$ns_router" "$ns_server"; do ip netns add "$ns" || fail "ip netns add $ns"; done
{
  ip -n "$ns_router" link add lan0 type veth peer name eth0 netns "$ns_client" &&
    ip -n "$ns_router" link add wan0 type veth peer name eth0 netns "$ns_server" &&
    ip -n "$ns_client" addr add "$client_ip/24" dev eth0 &&
    ip -n "$ns_router" addr add "$router_lan_ip/24" dev lan0 &&
    ip -n "$ns_router" addr add "$router_wan_ip/24" dev wan0 &&
    ip -n "$ns_server" addr add "$server_ip/24" dev eth0 &&
    ip -n "$ns_client" link set lo up && ip -n "$ns_router" link set lo up && ip -n "$ns_server" link set lo up &&
    ip -n "$ns_client" link set eth0 up && ip -n "$ns_server" link set eth0 up &&
    ip -n "$ns_router" link set lan0 up && ip -n "$ns_router" link set wan0 up &&
    ip -n "$ns_client" route add default via "$router_lan_ip" &&
    ip -n "$ns_server" route add default via "$router_wan_ip"
} || fail "could not build the topology"
# A forward chain with a ct expression loads conntrack in the router;
# accounting must be on before the connections start (their entries get
# counters only if it is on when they are created).
ip netns exec "$ns_router" nft -f - <<'EOF' || fail "nft -f (router firewall)"
table inet rfcc {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state invalid counter drop
		counter
	}
}
EOF
ip netns exec "$ns_router" sysctl -qw net.ipv4.ip_forward=1 net.netfilter.nf_conntrack_acct=1 ||
  fail "sysctl in the router"

# ---- Two TCP connections through the router ----
for port in "$busy_dport" "$idle_dport"; do
  ip netns exec "$ns_server" socat -u "TCP-LISTEN:$port,reuseaddr" OPEN:/dev/null &
  pids+=($!)
done
sleep 0.5
ip netns exec "$ns_client" bash -c "while echo busy; do sleep 0.02; done |
  socat -u - TCP:$server_ip:$busy_dport,sourceport=$busy_port" &
pids+=($!)
ip netns exec "$ns_client" bash -c "{ echo idle; sleep 3600; } | socat -u - TCP:$server_ip:$idle_dport,sourceport=$idle_port" &
pids+=($!)

established() {  # sport
  ip netns exec "$ns_router" conntrack -L -p tcp --sport "$1" 2>/dev/null | grep -q ESTABLISHED
}
deadline=$((SECONDS + 20))
until established "$busy_port" && established "$idle_port"; do
  ((SECONDS < deadline)) || fail "the two connections did not reach ESTABLISHED in the router's conntrack within 20 s"
  sleep 0.2
done
ip netns exec "$ns_router" conntrack -L -p tcp 2>/dev/null | sed 's/^/# conntrack: /'

# ---- The contract ----
# Meanwhile the router's conntrack table is read: the busy connection must
# show [OFFLOAD] (the flowtable has it) at some point of the run.
ip netns exec "$ns_router" env CTOFFLOAD_LOG="${CTOFFLOAD_LOG:-warn}" "$bin" --kernel \
  --busy "tcp,$client_ip:$busy_port,$server_ip:$busy_dport" \
  --idle "tcp,$client_ip:$idle_port,$server_ip:$idle_dport" \
  --dev lan0 --reply-dev wan0 --interval-ms "$interval_ms" --sweeps "$sweeps" &
prog=$!
seen_offload=0
while kill -0 "$prog" 2>/dev/null; do
  if ip netns exec "$ns_router" conntrack -L -p tcp --sport "$busy_port" 2>/dev/null | grep -q '\[OFFLOAD\]'; then
    seen_offload=1
  fi
  sleep 0.5
done
wait "$prog"
rc=$?
if ((seen_offload)); then
  echo "ok - the busy connection showed [OFFLOAD] in the router's conntrack table"
else
  echo "not ok - the busy connection never showed [OFFLOAD] in the router's conntrack table"
  rc=1
fi
ip netns exec "$ns_router" conntrack -L -p tcp 2>/dev/null | sed 's/^/# conntrack after: /'
exit $rc
