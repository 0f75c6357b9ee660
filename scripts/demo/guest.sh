#!/bin/bash
# guest.sh - the part of scripts/demo.sh that runs on a kernel with
# nftables flowtables: directly on such a host, or inside the VM harness
# (scripts/vm/run.sh) when the host kernel has none.
#
#   scripts/demo/guest.sh --ctl PATH [--short] [--hw --simnic DIR]
#
# It builds a client - router - server topology of three network namespaces
# of its own joined by veth pairs, starts one iperf3 TCP stream across the
# router, measures it on the slow path, offloads it with `ctoffloadctl add`
# run in the router, measures it again, shows the router's ruleset, its
# conntrack entry with [OFFLOAD] and `ctoffloadctl watch`, deletes the
# offload, shows the connection back on the slow path, and removes
# everything it created (a trap does that on any exit).  Needs root, ip,
# nft, conntrack and iperf3.
#
# With --hw the router's two ports are a simulated NIC that takes flowtable
# hardware offload (tests/simnic, docs/SIMNIC.md; DIR/RELEASE/simnic.ko and
# DIR/link_simnic.so from tests/simnic/build.sh): the module is loaded
# unless it is, the stream is offloaded to the NIC ([HW_OFFLOAD]), and the
# demo shows the NIC's counters (ethtool -S) beside the router's.  It
# also needs ethtool then.
#
# Exit status: 0 when every step and check passed, 1 when one failed (the
# line starting with "demo: FAILED" says which), 2 for bad usage.
#
# Lines the check (tests/demo_check.sh) relies on: the conntrack line with
# [OFFLOAD], "ratio: ...", "cleanup: removed ...", and "demo: PASSED"; with
# --hw also the conntrack line with [HW_OFFLOAD] and "nic: ...".

set -uo pipefail

ctl=""
short=0 hw=0 simnic=""
usage() { echo "usage: $0 --ctl PATH [--short] [--hw --simnic DIR]"; }
while (($#)); do
  case $1 in
    --ctl) ctl=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    --short) short=1; shift ;;
    --hw) hw=1; shift ;;
    --simnic) simnic=${2:-}; shift 2 || { usage >&2; exit 2; } ;;
    -h | --help) usage; exit 0 ;;
    *) echo "guest.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
if [[ -z $ctl || ! -x $ctl ]]; then
  echo "guest.sh: --ctl must name the ctoffloadctl binary (got '$ctl')" >&2
  exit 2
fi

if ((hw)) && [[ ! -s $simnic/$(uname -r)/simnic.ko || ! -s $simnic/link_simnic.so ]]; then
  echo "guest.sh: --hw needs --simnic DIR with $(uname -r)/simnic.ko and link_simnic.so (tests/simnic/build.sh)" >&2
  exit 2
fi

# Seconds of each throughput measurement: slow path, then offloaded.
if ((short)); then window=2; else window=4; fi

# ---- Names and addresses: everything here is created by this script and
# ---- removed by cleanup().
tag="ctdemo-$$"
ns_client=$tag-client ns_router=$tag-router ns_server=$tag-server
client_ip=10.0.1.2 router_lan_ip=10.0.1.1 router_wan_ip=10.0.2.1 server_ip=10.0.2.2
client_port=40000 server_port=5201
work=$(mktemp -d /tmp/ctoffload-demo.XXXXXX) || { echo "guest.sh: mktemp failed" >&2; exit 1; }
client_log=$work/iperf3-client.log
server_log=$work/iperf3-server.log
created_ns=()
pids=()
loaded_simnic=0
# The router's ports: veth, or with --hw the simulated NIC's pairs.
kind=veth
((hw)) && kind=simnic

# ---- Output helpers.
heading() { printf '\n== %s\n' "$*"; }
say() { printf '%s\n' "$*"; }
indent() { sed 's/^/    /'; }
# Shows a command the way a user would type it (the ctoffloadctl path
# shortened), then runs it with its output indented.  Returns its status.
show_run() {
  local ns=$1
  shift
  local shown="$*"
  shown=${shown//$ctl/ctoffloadctl}
  printf '  [%s]# %s\n' "${ns#"$tag"-}" "$shown"
  ip netns exec "$ns" "$@" 2>&1 | indent
  return "${PIPESTATUS[0]}"
}
fail() {
  printf '\ndemo: FAILED at step "%s": %s\n' "$step" "$*"
  diagnose
  exit 1
}
# What the router and the stream looked like when a step failed.
diagnose() {
  ((${#created_ns[@]} == 3)) || return 0
  say "-- for diagnosis: the router's conntrack table, ruleset and ctoffloadctl show; iperf3's last lines"
  ip netns exec "$ns_router" conntrack -L 2>&1 | indent
  ip netns exec "$ns_router" nft list ruleset 2>&1 | grep -E 'table|chain|counter|elements|devices' | indent
  ip netns exec "$ns_router" "$ctl" show 2>&1 | indent
  [[ -r $client_log ]] && tail -n 4 "$client_log" | indent
}
step=""
begin() { step=$1; heading "$1"; }

# ---- Clean-up, on every exit.
cleanup() {
  local rc=$? pid ns alive=0 removed=0 left
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  for ns in "${created_ns[@]}"; do
    # Anything still running inside our namespaces was started by us.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null && removed=$((removed + 1))
  done
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=$((alive + 1)); done
  rm -rf "$work"
  # The module goes only if the demo loaded it (its pairs went with the
  # namespaces).
  local unloaded=""
  if ((loaded_simnic)); then
    if rmmod simnic 2>/dev/null; then unloaded=" and unloaded the simnic module it had loaded"
    else unloaded=" but could not unload the simnic module it had loaded"; ((rc == 0)) && rc=1
    fi
  fi
  left=$(ip netns list 2>/dev/null | grep -c "^$tag-")
  heading "Clean-up"
  if ((left == 0 && alive == 0)); then
    say "cleanup: removed $removed namespaces ($tag-*) and stopped the ${#pids[@]} processes the demo started$unloaded; nothing of it is left"
  else
    say "cleanup: FAILED, $left namespaces named $tag-* and $alive of our processes are left"
    ((rc == 0)) && rc=1
  fi
  ((rc == 0)) && say "demo: PASSED"
  exit "$rc"
}
trap cleanup EXIT
trap 'fail "interrupted"' INT TERM

# ---- Small readers.

# Sets interval_rates from the client's log: one "START END MBIT/S" per
# finished iperf3 interval (nominally 1 s; longer when the machine is
# starved), in order.  Bash builtins only: process starts are slow under
# emulation.
interval_rates=()
read_intervals() {
  interval_rates=()
  local line re='^\[ *[0-9]+\] +([0-9.]+)-([0-9.]+) +sec +[0-9.]+ [KMGT]?Bytes +([0-9.]+) Mbits/sec'
  [[ -r $client_log ]] || return 0
  while IFS= read -r line; do
    [[ $line == *sender* || $line == *receiver* ]] && continue
    [[ $line =~ $re ]] && interval_rates+=("${BASH_REMATCH[1]} ${BASH_REMATCH[2]} ${BASH_REMATCH[3]}")
  done <"$client_log"
}
# Waits until iperf3 has reported 'n' intervals; fails after a time limit.
wait_intervals() {
  local n=$1 deadline=$((SECONDS + $1 * 3 + 30))
  while read_intervals; ((${#interval_rates[@]} < n)); do
    kill -0 "$client_pid" 2>/dev/null || fail "iperf3 stopped early: $(tail -n 3 "$client_log" | tr '\n' ' ')"
    ((SECONDS < deadline)) || fail "iperf3 reported ${#interval_rates[@]} of $n intervals in time"
    sleep 0.2
  done
}
# Prints "MBIT/S START END": the throughput over intervals from..to of
# interval_rates (1-based, inclusive), weighted by their durations, and the
# stream seconds they span.
mean_rate() {
  printf '%s\n' "${interval_rates[@]:$(($1 - 1)):$(($2 - $1 + 1))}" |
    awk 'NR == 1 { a = $1 } { b = $2; t += $2 - $1; s += ($2 - $1) * $3 }
         END { if (t > 0) printf "%.0f %.1f %.1f", s / t, a, b; else print "0 0 0" }'
}
# The router's conntrack entry of the demo stream (conntrack -L lines).  An
# entry picked up in mid-stream may have the server's side as its original
# direction, so either tuple may hold the client's port.
ct_lines() {
  ip netns exec "$ns_router" conntrack -L -p tcp 2>/dev/null | grep -F "sport=$client_port dport=$server_port "
}
# Packets counted by the demo firewall's slow-path counter in the router.
slow_path_packets() {
  ip netns exec "$ns_router" nft list chain inet demo forward |
    awk '/comment "slow path"/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
}

say "ctoffload demo: one TCP stream through a Linux router, on the slow path and then offloaded"
say "kernel $(uname -r); each measurement lasts $window s$( ((short)) && echo " (--short)")"

# ---------------------------------------------------------------- 1
begin "1. Topology: client -- router -- server"
if ((hw)); then
  say "Three network namespaces of our own, joined by two pairs of a simulated NIC (simnic, docs/SIMNIC.md): like veth, but the router's ports advertise hw-tc-offload, take flowtable hardware offload and forward the flows they are given themselves."
  ko=$simnic/$(uname -r)/simnic.ko
  export IP_LIB_DIR=$simnic  # iproute2's plugin for 'type simnic peer name ...'
  if [[ ! -d /sys/module/simnic ]]; then
    insmod "$ko" || fail "insmod $ko"
    loaded_simnic=1
    say "  insmod $ko"
  fi
else
  say "Three network namespaces of our own, joined by two veth pairs; the router forwards between 10.0.1.0/24 and 10.0.2.0/24."
fi
for ns in "$ns_client" "$ns_router" "$ns_server"; do
  ip netns add "$ns" || fail "ip netns add $ns"
  created_ns+=("$ns")
done
{
  ip -n "$ns_router" link add lan0 type "$kind" peer name eth0 netns "$ns_client" &&
    ip -n "$ns_router" link add wan0 type "$kind" peer name eth0 netns "$ns_server" &&
    ip -n "$ns_client" addr add "$client_ip/24" dev eth0 &&
    ip -n "$ns_router" addr add "$router_lan_ip/24" dev lan0 &&
    ip -n "$ns_router" addr add "$router_wan_ip/24" dev wan0 &&
    ip -n "$ns_server" addr add "$server_ip/24" dev eth0 &&
    ip -n "$ns_client" link set lo up && ip -n "$ns_router" link set lo up && ip -n "$ns_server" link set lo up &&
    ip -n "$ns_client" link set eth0 up && ip -n "$ns_server" link set eth0 up &&
    ip -n "$ns_router" link set lan0 up && ip -n "$ns_router" link set wan0 up &&
    ip -n "$ns_client" route add default via "$router_lan_ip" &&
    ip -n "$ns_server" route add default via "$router_wan_ip"
} || fail "could not build the $kind topology"
say "  client  $ns_client  eth0 $client_ip/24, default via $router_lan_ip"
say "  router  $ns_router  lan0 $router_lan_ip/24 (to the client), wan0 $router_wan_ip/24 (to the server)"
say "  server  $ns_server  eth0 $server_ip/24, default via $router_wan_ip"

# ---------------------------------------------------------------- 2
begin "2. The router: IP forwarding, a small firewall, conntrack accounting"
say "The router gets a small firewall (table inet demo) whose counter counts every packet that takes the slow path."
ip netns exec "$ns_router" nft -f - <<'EOF' || fail "nft -f (demo firewall)"
table inet demo {
	chain forward {
		type filter hook forward priority filter; policy accept;
		ct state invalid counter drop comment "invalid"
		counter comment "slow path"
	}
}
EOF
# The ct expression above loaded conntrack; accounting must be on before
# the stream starts, or its entry has no counters to tell last use from.
ip netns exec "$ns_router" sysctl -qw net.ipv4.ip_forward=1 net.netfilter.nf_conntrack_acct=1 ||
  fail "sysctl in the router"
show_run "$ns_router" "$ctl" probe || fail "ctoffloadctl probe"
ip netns exec "$ns_router" "$ctl" -j probe 2>/dev/null | grep -q '"flowtable":true' ||
  fail "this kernel has no flowtables; run scripts/demo.sh, which uses the VM harness then"

# ---------------------------------------------------------------- 3
begin "3. A TCP stream from the client to the server"
say "iperf3 sends from $client_ip:$client_port (a fixed port, so we know the tuple) to $server_ip:$server_port and reports its throughput every second."
ip netns exec "$ns_server" iperf3 -s -1 --forceflush >"$server_log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
deadline=$((SECONDS + 30))
until grep -q "Server listening" "$server_log" 2>/dev/null; do
  kill -0 "$server_pid" 2>/dev/null || fail "iperf3 server exited: $(cat "$server_log")"
  ((SECONDS < deadline)) || fail "iperf3 server did not start listening within 30 s"
  sleep 0.2
done
# Long enough for everything below; it is stopped once the demo is done.
ip netns exec "$ns_client" iperf3 -c "$server_ip" -p "$server_port" --cport "$client_port" -t 300 -i 1 \
  -f m --forceflush >"$client_log" 2>&1 &
client_pid=$!
pids+=("$client_pid")

# ---------------------------------------------------------------- 4
begin "4. Slow path: every packet goes through conntrack, routing and the forward chain"
# A measurement window is 'window' whole iperf3 intervals that start after
# the last command we ran, so no process of ours competes with the stream
# inside it.  The forward chain's counter is read on both sides of it.
measure() {  # Sets m_rate (Mbit/s), m_start, m_end (stream seconds), m_pps (forward-chain packets/s);
  # with --hw also m_nic_pps (packets/s the NIC forwarded itself) and m_stack_pps (received by the router's stack).
  local pk0 pk1 t0 t1 n0=0 n1=0 s0=0 s1=0
  pk0=$(slow_path_packets) t0=$EPOCHREALTIME
  ((hw)) && read -r n0 s0 <<<"$(port_packets)"
  read_intervals
  m_from=$((${#interval_rates[@]} + 2)) m_to=$((${#interval_rates[@]} + 1 + window))
  wait_intervals "$m_to"
  pk1=$(slow_path_packets) t1=$EPOCHREALTIME
  ((hw)) && read -r n1 s1 <<<"$(port_packets)"
  [[ -n $pk0 && -n $pk1 ]] || fail "cannot read the slow-path counter of table inet demo"
  read -r m_rate m_start m_end <<<"$(mean_rate "$m_from" "$m_to")"
  m_pps=$(awk -v p="$((pk1 - pk0))" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", p / (b - a) }')
  m_nic_pps=$(awk -v p="$((n1 - n0))" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", p / (b - a) }')
  m_stack_pps=$(awk -v p="$((s1 - s0))" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", p / (b - a) }')
}
# "NIC STACK": packets the simulated NIC forwarded itself (hw_rx_packets of
# lan0 and wan0, ethtool -S) and packets the router's stack received on them.
port_packets() {
  local nic=0 stack=0 d k v
  for d in lan0 wan0; do
    while read -r k v; do [[ $k == hw_rx_packets: ]] && nic=$((nic + v)); done \
      < <(ip netns exec "$ns_router" ethtool -S "$d")
  done
  for v in $(ip netns exec "$ns_router" cat /sys/class/net/lan0/statistics/rx_packets /sys/class/net/wan0/statistics/rx_packets); do
    stack=$((stack + v))
  done
  echo "$nic $stack"
}
wait_intervals 1
measure
slow_rate=$m_rate slow_pps=$m_pps slow_stack_pps=$m_stack_pps
say "Throughput on the slow path (seconds $m_start-$m_end of the stream): $slow_rate Mbit/s; the forward chain saw $slow_pps packets/s."
((hw)) && say "The router's stack received $slow_stack_pps packets/s on lan0 and wan0; the simulated NIC forwarded $m_nic_pps packets/s itself (no rule yet)."
((slow_pps > 0)) || fail "no packets counted on the slow path"
say "The router's conntrack entry for the stream (no [OFFLOAD] yet):"
show_ct_cmd() { printf '  [router]# conntrack -L -p tcp | grep "sport=%s dport=%s "\n' "$client_port" "$server_port"; }
show_ct_cmd
entry=$(ct_lines)
[[ -n $entry ]] || fail "the router has no conntrack entry for port $client_port -> $server_port"
printf '%s\n' "$entry" | indent
[[ $entry != *OFFLOAD* ]] || fail "the stream is offloaded before we asked"

# ---------------------------------------------------------------- 5
begin "5. Offload it: ctoffloadctl add, run in the router"
# The exact tuple, read back from conntrack's original direction.
re='src=([0-9.]+) dst=([0-9.]+) sport=([0-9]+) dport=([0-9]+)'
[[ $entry =~ $re ]] || fail "cannot read the tuple from: $entry"
src="${BASH_REMATCH[1]}:${BASH_REMATCH[3]}" dst="${BASH_REMATCH[2]}:${BASH_REMATCH[4]}"
iif=$(ip -n "$ns_router" route get "${BASH_REMATCH[1]}" | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
[[ -n $iif ]] || fail "no route from the router to ${BASH_REMATCH[1]}"
say "The tuple comes from that entry ($src -> $dst); the client's packets arrive on $iif, the device its address routes to."
show_run "$ns_router" "$ctl" add --iif "$iif" --proto tcp --src "$src" --dst "$dst" || fail "ctoffloadctl add"
want_flag='[OFFLOAD]'
((hw)) && want_flag='[HW_OFFLOAD]'
deadline=$((SECONDS + 10))
until entry=$(ct_lines) && [[ $entry == *"$want_flag"* ]]; do
  ((SECONDS < deadline)) || fail "no $want_flag on the conntrack entry 10 s after the add: $entry"
  sleep 0.2
done
if ((hw)); then
  say "The stream's next packet put it into the hardware flowtable ft_hw; the kernel gave each direction to the port it enters on as a rule, the NIC took both, and conntrack marks the entry [HW_OFFLOAD]."
else
  say "The stream's next packet put it into the flowtable; conntrack now marks the entry [OFFLOAD]."
fi

# ---------------------------------------------------------------- 6
if ((hw)); then
  begin "6. Offloaded to the NIC: it forwards the packets itself, the router's stack does not see them"
else
  begin "6. Offloaded: packets go from lan0's ingress hook straight out of wan0"
fi
measure
fast_rate=$m_rate fast_pps=$m_pps
say "Throughput offloaded (seconds $m_start-$m_end of the stream): $fast_rate Mbit/s; the forward chain saw $fast_pps packets/s."
if ((hw)); then
  say "nic: the simulated NIC forwarded $m_nic_pps packets/s itself; the router's stack received $m_stack_pps packets/s on lan0 and wan0 ($slow_stack_pps on the slow path)"
  ((m_nic_pps > 0)) || fail "the NIC forwarded no packet of the offloaded stream"
  ((m_stack_pps * 10 <= m_nic_pps)) || fail "the router's stack still receives $m_stack_pps packets/s while the NIC forwards $m_nic_pps"
  say "The NIC's own counters (ethtool -S; hw_rx on the port a direction enters, hw_tx on the one it leaves):"
  for d in lan0 wan0; do
    printf '  [router]# ethtool -S %s\n' "$d"
    ip netns exec "$ns_router" ethtool -S "$d" | grep -E ' (rules|replace|destroy|stats|hw_rx_packets|hw_tx_packets|hw_rx_bytes):' | indent
  done
fi
say
say "throughput: slow path $slow_rate Mbit/s, offloaded $fast_rate Mbit/s"
ratio=$(awk -v f="$fast_rate" -v s="$slow_rate" 'BEGIN { if (s > 0) printf "%.2f", f / s; else print "inf" }')
say "ratio: offloaded / slow path = ${ratio}x"
say "forward chain: $slow_pps packets/s on the slow path, $fast_pps packets/s offloaded (the flowtable's packets skip it)"
if awk -v r="$ratio" 'BEGIN { exit !(r >= 1.1) }'; then
  say "The offloaded stream was faster: its packets skip the conntrack lookup, routing and the forward chain."
else
  say "No gain this time: with veth's 64 KB GSO packets the per-packet work the flowtable saves is small, and a busy or emulated machine varies more than that from second to second."
fi
say "(Throughput varies by tens of percent between runs under emulation or on a busy host; the forward chain's packet count is the exact sign of the offload.)"
# Offloaded packets bypass the forward hook: only the stream's rare
# exceptions and iperf3's idle control connection may still pass there.
((fast_pps * 10 <= slow_pps)) || fail "the forward chain still sees the stream's packets after the offload"

# ---------------------------------------------------------------- 7
begin "7. What the kernel holds now"
say "The router's ruleset: our demo firewall, and ctoffload's table with the flowtable, the selection set holding the stream, and the rule that sends it to the flowtable."
show_run "$ns_router" nft list ruleset || fail "nft list ruleset"
say "The conntrack entry, flagged $want_flag by the kernel:"
entry=$(ct_lines)
show_ct_cmd
printf '%s\n' "$entry" | indent
[[ $entry == *OFFLOAD* ]] || fail "the entry lost its [OFFLOAD] flag: $entry"
if ((hw)); then
  say "ctoffloadctl watch: the stream's counters and last used time, every 2.5 s (the kernel fetches a hardware flow's counters from the NIC every 3-4 s):"
else
  say "ctoffloadctl watch: the stream's counters and last used time, once a second:"
fi
# The kernel reads a hardware flow's counters from the NIC every 3-4 s, so
# last used moves in steps that far apart: watch longer with --hw.
watch_args=(--interval 1000 --count 3)
((hw)) && watch_args=(--interval 2500 --count 4)
watch_out=$(ip netns exec "$ns_router" "$ctl" watch "${watch_args[@]}" 2>&1) || {
  printf '%s\n' "$watch_out" | indent
  fail "ctoffloadctl watch"
}
printf '  [router]# ctoffloadctl watch %s\n' "${watch_args[*]}"
printf '%s\n' "$watch_out" | indent
say "(A new process knows a last use once it has seen the counters move, so its first line may say never.)"
mapfile -t used < <(printf '%s\n' "$watch_out" | grep -o 'last-used [^ ]*' | sort -u)
((${#used[@]} >= 2)) || fail "last used did not change between the watch lines: ${used[*]:-none}"
[[ $watch_out == *"offloaded yes"* ]] || fail "watch does not report the stream offloaded"

# ---------------------------------------------------------------- 8
begin "8. Delete the offload: the stream goes on on the slow path"
show_run "$ns_router" "$ctl" del --iif "$iif" --proto tcp --src "$src" --dst "$dst" || fail "ctoffloadctl del"
say "The provider deleted the conntrack entry, which ended the offload; the stream's next packet made a new entry, tracked on the slow path:"
deadline=$((SECONDS + 10))
until entry=$(ct_lines) && [[ -n $entry && $entry != *OFFLOAD* ]]; do
  ((SECONDS < deadline)) || fail "no plain conntrack entry 10 s after the del: '$entry'"
  sleep 0.2
done
show_ct_cmd
printf '%s\n' "$entry" | indent
if [[ $entry =~ src=([0-9.]+) && ${BASH_REMATCH[1]} == "$server_ip" ]]; then
  say "(Conntrack picked the stream up in mid-stream from a packet of the server, so this entry's original direction is server -> client.)"
fi
pk_a=$(slow_path_packets) t_a=$EPOCHREALTIME
sleep 1
pk_b=$(slow_path_packets) t_b=$EPOCHREALTIME
say "The forward chain sees the stream again: $(awk -v p="$((pk_b - pk_a))" -v a="$t_a" -v b="$t_b" 'BEGIN { printf "%.0f", p / (b - a) }') packets/s."
((pk_b > pk_a)) || fail "the stream does not pass the forward chain after the del"
if ((hw)); then
  # The kernel's flowtable gc sees the deleted entry within a second and
  # sends DESTROY for both directions.
  nic_rules() { ip netns exec "$ns_router" ethtool -S "$1" | awk '$1 == "rules:" { print $2 }'; }
  deadline=$((SECONDS + 10))
  until [[ $(nic_rules lan0) == 0 && $(nic_rules wan0) == 0 ]]; do
    ((SECONDS < deadline)) || fail "the NIC still holds rules 10 s after the del: lan0 $(nic_rules lan0), wan0 $(nic_rules wan0)"
    sleep 0.2
  done
  say "The kernel destroyed the stream's rules in the NIC: it holds none now."
  for d in lan0 wan0; do
    printf '  [router]# ethtool -S %s | grep -E "rules|destroy"\n' "$d"
    ip netns exec "$ns_router" ethtool -S "$d" | grep -E ' (rules|destroy):' | indent
  done
fi
show_run "$ns_router" "$ctl" show || fail "ctoffloadctl show"
kill -0 "$client_pid" 2>/dev/null || fail "the stream broke after the del: $(tail -n 3 "$client_log" | tr '\n' ' ')"
say "The stream survived both transitions; iperf3 is stopped now."
kill -INT "$client_pid" 2>/dev/null
wait "$client_pid" 2>/dev/null
step="clean-up"
