#!/usr/bin/env bash
# vm_row6b.sh - benchmark row 6b (issue 19): forwarding through the router
# on the slow path, the software flowtable and the simulated NIC (the
# hardware flowtable), on a kernel that has flowtables and the simnic
# module built for it: in the VM of scripts/vm/run.sh on this project's
# machines (scripts/bench.sh runs it there).
#
#   bench/vm_row6b.sh --ctl PATH --simnic DIR [--rounds R] [--seconds T]
#                     [--variants "gso mtu"] [--md FILE]
#
# Topology as the hardware scenarios build it (tests/netns/flowtable,
# topo_hw): client - router - server, both router ports simnic pairs
# (hw-tc-offload on), the client's and server's ends their peers.  iperf3
# TCP, T seconds per run, R rounds; each round runs the three modes once,
# in an order rotated from round to round:
#   slow  no offload (the provider flushed: no flowtable device, no element)
#   sw    `ctoffloadctl --hw-offload off add` of the tuple before the stream
#         starts: the ports in ft_sw; [OFFLOAD] without [HW_OFFLOAD] checked
#   hw    `ctoffloadctl add` (hw_offload=auto): the ports in ft_hw, the NIC
#         forwards; [HW_OFFLOAD] checked, and that the NIC counted packets
# Both variants by default, one after the other: "gso" (the devices'
# defaults, TSO/GSO on) and "mtu" (TSO and GSO off at the client's and
# server's ends: one MSS-sized segment per packet through the router).
# Per run: the received throughput (iperf3), the guest's CPU time over the
# iperf3 client's run from /proc/stat (every vCPU; busy = user + nice +
# system + irq + softirq; softirq also alone), per Gbit received, and the
# packets the router's stack received on its two ports and the NIC
# forwarded (/proc/simnic).  Medians, and medians of per-round ratios.
#
# Everything happens in network namespaces this script creates
# (bench6b-<pid>-*) and removes on exit; the module is loaded if it is not
# (and left loaded).  Prints Markdown (to --md FILE, appended, or stdout).
# Exit status non-zero when a step fails to run; timing never fails it.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 2

ctl="" simnic="" rounds=5 secs=5 md=/dev/stdout variants="gso mtu"
while (($#)); do
  case $1 in
    --ctl) ctl=$2; shift 2 ;;
    --simnic) simnic=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) secs=$2; shift 2 ;;
    --md) md=$2; shift 2 ;;
    --variants) variants=$2; shift 2 ;;
    -h | --help) usage_help; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done
[[ -x $ctl ]] || usage_error "--ctl PATH (ctoffloadctl) is required"
[[ -n $simnic ]] || usage_error "--simnic DIR (tests/simnic/build.sh --out DIR) is required"
need_tools ip nft conntrack iperf3 jq ethtool

bench_start bench6b row6b

# ---- The simulated NIC ---------------------------------------------------
ko=$simnic/$(uname -r)/simnic.ko
[[ -s $ko ]] || die "no simnic module for $(uname -r): '$ko' (tests/simnic/build.sh --out $simnic $(uname -r))"
[[ -s $simnic/link_simnic.so ]] || die "no $simnic/link_simnic.so (tests/simnic/build.sh)"
export IP_LIB_DIR=$simnic
knobs=/sys/module/simnic/parameters
if [[ ! -d $knobs ]]; then
  insmod "$ko" || die "insmod $ko failed: $(dmesg | tail -n 3 | tr '\n' ' ')"
fi
# The defaults: every REPLACE accepted, the NIC forwards and reports last use.
{ echo 0 >"$knobs/refuse" && echo 4096 >"$knobs/max_rules" && echo Y >"$knobs/report_lastused" &&
  echo Y >"$knobs/forward"; } || die "cannot set the simnic knobs to their defaults"

# ---- Topology: client - router - server over simnic pairs -----------------
topology simnic

# /proc/simnic: one line per port, "netns=INUM dev=NAME ... name=value".
router_netns=$(stat -L -c %i "/run/netns/$nsr")
nic_sum() {  # counter -> its sum over the router's r-c and r-s
  awk -v ns="netns=$router_netns" -v c="$1" '
    $1 == ns && ($2 == "dev=r-c" || $2 == "dev=r-s") {
      for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == c) s += kv[2] }
    } END { print s + 0 }' /proc/simnic
}
# The guest's CPU time (all vCPUs, in clock ticks) from /proc/stat's "cpu"
# line, read without starting a process: sets busy and sirq.
hz=$(getconf CLK_TCK)
cpu_now() {
  local _c u n s _idle _iowait irq si st _rest
  read -r _c u n s _idle _iowait irq si st _rest </proc/stat
  busy=$((u + n + s + irq + si + st)) sirq=$si
}

# ---- The runs --------------------------------------------------------------
iperf_server

# run MODE CPORT: prepares MODE for the tuple from CPORT, runs iperf3 and
# appends "mbit busy_s_per_gbit softirq_s_per_gbit stack_pkts nic_pkts" to
# $work/MODE.
run() {
  local mode=$1 port=$2 tuple
  tuple=(--proto tcp --src "10.0.1.2:$port" --dst 10.0.2.2:5201)
  # Every mode starts from nothing: the next add places the ports again
  # (ft_sw with hw_offload=off, ft_hw with auto; docs/SIMNIC.md).
  rx "$ctl" flush >/dev/null 2>"$work/ctl.err" || die "ctoffloadctl flush failed: $(head -c 300 "$work/ctl.err")"
  case $mode in
    sw) rx "$ctl" --hw-offload off add --iif r-c "${tuple[@]}" >/dev/null 2>"$work/ctl.err" ;;
    hw) rx "$ctl" add --iif r-c "${tuple[@]}" >/dev/null 2>"$work/ctl.err" ;;
  esac || die "ctoffloadctl add ($mode) failed: $(head -c 300 "$work/ctl.err")"
  local s0 s1 h0 h1 b0 b1 q0 q1
  s0=$(nic_sum stack_rx_packets) h0=$(nic_sum hw_rx_packets)
  # The conntrack probe runs in every mode, at half time, so that each
  # pays its process starts inside the CPU window.  In hw mode it reads
  # again every half second while [HW_OFFLOAD] is not there yet: the
  # REPLACE comes from the kernel's offload workqueue, which a saturated
  # emulated guest can run late (the probes are counted in the report).
  : >"$work/probes"
  (
    sleep "$(awk -v t="$secs" 'BEGIN { print t / 2 }')"
    while :; do
      rx conntrack -L -p tcp --orig-port-src "$port" 2>/dev/null >"$work/ct"
      echo >>"$work/probes"
      [[ $mode != hw || $(<"$work/ct") == *'[HW_OFFLOAD]'* || ! -e $work/running ]] && break
      sleep 0.5
    done
  ) &
  local probe=$!
  : >"$work/running"
  cpu_now
  b0=$busy q0=$sirq
  iperf_client "$port" "$secs" ||
    die "iperf3 ($mode) failed: $(head -c 300 "$work/iperf.json")"
  cpu_now
  b1=$busy q1=$sirq
  rm -f "$work/running"
  wait "$probe"
  echo "$mode $(wc -l <"$work/probes")" >>"$d/probecount"
  s1=$(nic_sum stack_rx_packets) h1=$(nic_sum hw_rx_packets)
  local ct
  ct=$(cat "$work/ct")
  case $mode in
    slow) [[ $ct != *OFFLOAD* ]] || die "slow-path run offloaded: $ct" ;;
    sw) [[ $ct == *'[OFFLOAD]'* && $ct != *HW_OFFLOAD* ]] || die "software run: no [OFFLOAD], or [HW_OFFLOAD]: $ct" ;;
    hw) [[ $ct == *'[HW_OFFLOAD]'* ]] ||
      die "hardware run: no [HW_OFFLOAD] in conntrack in $(wc -l <"$work/probes") probes from half time to the end: $ct"
      ((h1 - h0 > 0)) || die "hardware run: the NIC forwarded no packet" ;;
  esac
  local bytes
  bytes=$(jq '.end.sum_received.bytes' "$work/iperf.json") || die "iperf3 JSON: $(head -c 300 "$work/iperf.json")"
  jq -r --argjson b "$((b1 - b0))" --argjson q "$((q1 - q0))" --argjson hz "$hz" \
    --argjson sp "$((s1 - s0))" --argjson hp "$((h1 - h0))" '
      .end.sum_received as $r | ($r.bytes * 8 / 1e9) as $gbit |
      "\($r.bits_per_second / 1e5 | round / 10) \($b / $hz / $gbit * 100 | round / 100) \($q / $hz / $gbit * 100 | round / 100) \($sp) \($hp)"' \
    "$work/iperf.json" >>"$d/$mode" || die "iperf3 JSON: $(head -c 300 "$work/iperf.json")"
  ((bytes > 0)) || die "iperf3 ($mode) received nothing"
  log "  $mode: $(tail -1 "$d/$mode") (Mbit/s, busy s/Gbit, softirq s/Gbit, router stack packets, NIC packets)"
}

# The variants: "gso", the devices' defaults (TSO/GSO on, as veth: the
# client sends, and the router forwards, segments of up to 64 KB), and
# "mtu", TSO and GSO off at the client's and server's ends, so that every
# packet the router (or the NIC) forwards is one MSS-sized segment and the
# router's per-packet work counts.
segments() {  # on|off
  local ns
  for ns in "$nsc" "$nss"; do
    ip netns exec "$ns" ethtool -K eth0 tso "$1" gso "$1" >/dev/null 2>&1 ||
      die "ethtool -K eth0 tso $1 gso $1 in $ns failed"
  done
}
modes=(slow sw hw)
base=43000
for seg in $variants; do
  d=$work/$seg
  { mkdir -p "$d" && : >"$d/slow" && : >"$d/sw" && : >"$d/hw" && : >"$d/order" && : >"$d/probecount"; } || die "mkdir $d"
  case $seg in
    gso) segments on ;;
    mtu) segments off ;;
    *) die "unknown variant '$seg' (gso, mtu)" ;;
  esac
  log "row 6b, $seg: iperf3 through the router on simnic ports, $rounds rounds of ${secs}s slow / sw / hw"
  for ((r = 0; r < rounds; r++)); do
    order=()
    for ((k = 0; k < 3; k++)); do order+=("${modes[(r + k) % 3]}"); done
    log "round $((r + 1)): ${order[*]}"
    echo "${order[*]}" >>"$d/order"
    for ((k = 0; k < 3; k++)); do run "${order[k]}" $((base++)); done
  done
done
rx "$ctl" flush >/dev/null 2>&1

# ---- Report ----------------------------------------------------------------
# One awk per variant: under emulation every process start costs a fraction
# of a second, and a pipeline per median made the report take longer than
# a round.
variant_title() {
  case $1 in
    gso) echo "TSO/GSO on (the devices' defaults): the router forwards segments of up to 64 KB" ;;
    mtu) echo "TSO and GSO off at the client's and server's ends: one MSS-sized segment per packet" ;;
  esac
}
# report_variant NAME: the variant's tables, then one line "TARGET ...".
# Per mode file: "mbit busy_s_per_gbit softirq_s_per_gbit stack_pkts
# nic_pkts" per round; medians per column, and medians of per-round ratios.
report_variant() {
  local d=$work/$1
  awk -v name="$1" -v title="$(variant_title "$1")" '
    function median(a, n,   b, i, j, t) {
      if (n == 0) return "nan"
      for (i = 1; i <= n; i++) b[i] = a[i]
      for (i = 2; i <= n; i++) { t = b[i]; for (j = i - 1; j >= 1 && b[j] > t; j--) b[j + 1] = b[j]; b[j + 1] = t }
      return n % 2 ? b[(n + 1) / 2] : sprintf("%.6g", (b[n / 2] + b[n / 2 + 1]) / 2)
    }
    function med(m, c,   a, i) { for (i = 1; i <= n[m]; i++) a[i] = v[m, c, i]; return median(a, n[m]) }
    function ratio(x, y, c,   a, i, k) {  # per-round x / y of column c, median
      k = 0
      for (i = 1; i <= n[x]; i++) if (v[y, c, i] > 0) a[++k] = sprintf("%.2f", v[x, c, i] / v[y, c, i])
      return median(a, k)
    }
    function row(m, label) { printf "| %s | %s | %s | %s | %s | %s |\n", label, med(m, 1), med(m, 2), med(m, 3), med(m, 4), med(m, 5) }
    FNR == 1 { f = FILENAME; sub(/.*\//, "", f) }
    f == "order" { order = order (order == "" ? "" : ",") $0; next }
    f == "probecount" { if ($1 == "hw") probes = probes (probes == "" ? "" : " ") $2; next }
    { n[f]++; for (c = 1; c <= 5; c++) v[f, c, n[f]] = $c }
    END {
      printf "#### %s\n\n", title
      print "| mode | Mbit/s | guest CPU s/Gbit | softirq s/Gbit | router stack packets | NIC packets |"
      print "|---|---|---|---|---|---|"
      row("slow", "slow path"); row("sw", "software flowtable (ft_sw)"); row("hw", "simulated NIC (ft_hw, [HW_OFFLOAD])")
      t_sw = ratio("sw", "slow", 1); t_hw = ratio("hw", "slow", 1); t_hwsw = ratio("hw", "sw", 1)
      c_sw = ratio("slow", "sw", 2); c_hw = ratio("slow", "hw", 2); c_hwsw = ratio("sw", "hw", 2); q_hw = ratio("slow", "hw", 3)
      print ""
      print "| A against B (median of per-round ratios) | throughput A / B | CPU per Gbit B / A (how many times less A needs) |"
      print "|---|---|---|"
      printf "| software flowtable / slow path | %sx | %sx |\n", t_sw, c_sw
      printf "| simulated NIC / slow path | %sx | %sx (softirq alone %sx) |\n", t_hw, c_hw, q_hw
      printf "| simulated NIC / software flowtable | %sx | %sx |\n\n", t_hwsw, c_hwsw
      printf "Per round (slow/sw/hw; orders %s): ", order
      for (i = 1; i <= n["slow"]; i++)
        printf "%s%s/%s/%s Mbit/s (%s/%s/%s s/Gbit)", (i > 1 ? "; " : ""), v["slow", 1, i], v["sw", 1, i], v["hw", 1, i],
          v["slow", 2, i], v["sw", 2, i], v["hw", 2, i]
      print "."
      print "conntrack probes per hardware run until `[HW_OFFLOAD]` showed (1 = at"
      printf "half time, each more half a second later): %s.\n\n", probes
      printf "TARGET %s: throughput sw/slow %sx, hw/slow %sx, CPU per Gbit slow/hw %sx\n", name, t_sw, t_hw, c_hw
    }' "$d/slow" "$d/sw" "$d/hw" "$d/order" "$d/probecount"
}
body="" target=""
for seg in $variants; do
  out=$(report_variant "$seg") || die "the report of variant $seg failed"
  body+="$(printf '%s' "${out%$'\n'TARGET *}")"$'\n\n'
  target+="${target:+; }${out##*$'\n'TARGET }"
done
{
  cat <<EOF
### 6b (VM, kernel $(uname -r)): forwarding through the router: slow path, software flowtable, simulated NIC

iperf3 TCP, client - router - server, both router ports simnic pairs
(docs/SIMNIC.md; hw-tc-offload on), ${secs} s per run, $rounds round(s), each
running the three modes once in an order rotated from round to round:
slow path (provider flushed: no flowtable device, no element), software
flowtable (\`ctoffloadctl --hw-offload off add\` of the tuple before the
stream starts: the ports in \`ft_sw\`, \`[OFFLOAD]\` without
\`[HW_OFFLOAD]\` checked during every run) and the simulated NIC
(\`ctoffloadctl add\`, \`hw_offload=auto\`: the ports in \`ft_hw\`,
\`[HW_OFFLOAD]\` checked during every run, and the NIC's forwarded packets).
Variants ($variants), each with its own rounds: gso, the devices'
defaults (TSO/GSO on: the client hands the router segments of up to 64 KB,
so the router's per-packet work is spread over many bytes), and mtu, TSO
and GSO off at the client's and server's ends (one MSS-sized segment per
packet through the router, or the NIC).

CPU: the guest's /proc/stat over each iperf3 client run (its process start
included), every vCPU, busy = user + nice + system + irq + softirq + steal,
in CPU-seconds per Gbit received; softirq alone beside it.  The guest
accounts its own ticks, so this is what its CPUs spent whatever qemu's
threads got from the host.  Client, router, server and the NIC's datapath
all run on the guest's CPUs: the client's and server's work per Gbit is
the same in every mode, so the differences are the router's stack (slow
path or software flowtable) against the simnic datapath that replaces it.
Router stack packets: what the router's stack received on r-c and r-s
(\`stack_rx_packets\`); NIC packets: what the NIC forwarded itself
(\`hw_rx_packets\`), medians per run.

Emulation: the "NIC" forwards on the same emulated CPU (in the sender's
transmit context) and TCG makes absolute figures meaningless.  The ratio
shows the router stack's CPU the offload saves, not a NIC's line rate; a
real NIC forwards without any host CPU.

${body}Target: the ratios reported ($target).
EOF
} >>"$md"
log "done"
