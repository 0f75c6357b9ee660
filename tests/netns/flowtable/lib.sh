# lib.sh - helpers for the flowtable scenarios: namespaces, traffic, and
# reading the kernel back.  Sourced by run.sh inside each scenario's own
# subshell; nothing here runs on its own.
#
# What run.sh sets before a scenario starts:
#   CTL      absolute path of ctoffloadctl
#   S        the scenario's scratch directory (deleted afterwards)
#   NSP      a prefix unique to this scenario run, for namespace names
#
# Conventions:
#   - A helper that finds something wrong calls fail "why", which records
#     the reason and ends the scenario (the subshell) with status 1; the
#     EXIT trap set by run.sh then tears everything down.
#   - Every wait is bounded (wait_for); nothing loops forever.
#   - Log lines go to stderr, which run.sh keeps in the scenario's log and
#     shows when the scenario fails.

# ---- Reporting ----

# Prints a log line with the time since the scenario started.
log() {
  local now=${EPOCHREALTIME/./}
  printf '[%6.2fs] %s\n' "$(((now - SCEN_T0) / 10000))e-2" "$*" >&2
}

# Records 'why' as the scenario's failure reason and ends the scenario.
fail() {
  printf '%s\n' "$*" >"$S/why"
  log "FAIL: $*"
  exit 1
}

# Milliseconds since the Unix epoch (bash builtin, no process).
now_ms() {
  local t=${EPOCHREALTIME/./}
  printf '%s' "$((t / 1000))"
}

# Sleeps for 'sec' seconds (fractions allowed) without starting a process.
nap() {
  read -r -t "$1" -u "$NAP_FD" _ || true
}

# "1.5" -> 1500.
sec_to_ms() {
  local s=$1 int frac
  int=${s%%.*}
  if [[ $s == *.* ]]; then frac=${s#*.}000; frac=${frac:0:3}; else frac=000; fi
  printf '%s' "$((10#${int:-0} * 1000 + 10#$frac))"
}

# wait_for SEC WHAT CMD...: runs CMD every 0.1 s until it succeeds.  Fails
# the scenario with "WHAT: not within SEC s" when SEC seconds pass first.
wait_for() {
  local limit=$1 what=$2
  shift 2
  local deadline=$(($(now_ms) + $(sec_to_ms "$limit")))
  while :; do
    if "$@"; then return 0; fi
    (($(now_ms) < deadline)) || fail "$what: not within ${limit}s"
    nap 0.1
  done
}

# Like wait_for, but returns 1 instead of failing.
poll_until() {
  local limit=$1
  shift
  local deadline=$(($(now_ms) + $(sec_to_ms "$limit")))
  while :; do
    if "$@"; then return 0; fi
    (($(now_ms) < deadline)) || return 1
    nap 0.1
  done
}

# ---- Namespaces ----

NAMESPACES=()
BG_PIDS=()

# Runs CMD in namespace 'n'.
in_ns() {
  local n=$1
  shift
  ip netns exec "${NSP}$n" "$@"
}

# Runs CMD in the router namespace.
rx() { ip netns exec "${NSP}r" "$@"; }

# Runs ctoffloadctl in the router namespace, with the global options in
# CTL_GLOBAL (a scenario may set them).
CTL_GLOBAL=()
ctl() { ip netns exec "${NSP}r" "$CTL" "${CTL_GLOBAL[@]}" "$@"; }

# Creates namespaces with short names 'n'...; lo comes up in each.
ns_create() {
  local n batch=""
  for n in "$@"; do
    batch+="netns add ${NSP}$n"$'\n'
    NAMESPACES+=("${NSP}$n")
  done
  ip -b - <<<"$batch" || fail "cannot create namespaces $*"
  for n in "$@"; do
    ip -n "${NSP}$n" link set lo up || fail "lo up in $n"
  done
}

# Starts CMD in the background (callers bound it with 'timeout'), remembers
# its pid for cleanup, and leaves it in BG_PID.  The child closes the
# transfers' fifo descriptors first: bash does not mark them close-on-exec,
# and a stray copy of a write end would keep a client from ever seeing the
# end of its input.
bg() {
  (
    for fd in "${XFD[@]}"; do exec {fd}>&-; done
    exec "$@"
  ) &
  BG_PID=$!
  BG_PIDS+=("$BG_PID")
}

# Tears down what the scenario made: its background processes (by pid),
# then its namespaces, and puts the simulated NIC's knobs back.  Runs from
# run.sh's EXIT trap, failure or not.
cleanup_scenario() {
  local p n
  [[ ${SIMNIC_USED:-0} == 1 ]] && simnic_knobs_default
  for p in "${BG_PIDS[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${BG_PIDS[@]}"; do
    # Bounded: a process that ignores TERM gets KILL after ~2 s.
    poll_until 2 pid_gone "$p" || kill -KILL "$p" 2>/dev/null || true
  done
  for n in "${NAMESPACES[@]}"; do
    ip netns del "$n" 2>/dev/null || true
  done
}

# ---- Topologies ----
#
# Addresses (the same in every topology):
#   client side  10.0.1.0/24, fd00:1::/64   client .2 / ::2, router .1 / ::1
#   server side  10.0.2.0/24, fd00:2::/64   server .2 / ::2, router .1 / ::1
C4=10.0.1.2
C6=fd00:1::2
S4=10.0.2.2
S6=fd00:2::2
R4C=10.0.1.1
R6C=fd00:1::1
R4S=10.0.2.1
R6S=fd00:2::1

# The kind of the pairs link_client and link_server make: veth, or simnic
# (the simulated NIC, see simnic_load) for a port that takes hardware
# offload.  `LINK_KIND=simnic link_client ...` for one pair.
LINK_KIND=veth

# link_client CNS RDEV CDEV [VRF]: a $LINK_KIND pair between the router
# (RDEV, enslaved to VRF if given) and client namespace CNS (CDEV), both
# addressed and up, client routes via the router.
link_client() {
  local cns=$1 rdev=$2 cdev=$3 vrf=${4:-}
  ip -n "${NSP}r" -b - <<EOF || fail "router side of $rdev"
link add $rdev type $LINK_KIND peer name $cdev netns ${NSP}$cns
${vrf:+link set $rdev master $vrf}
addr add $R4C/24 dev $rdev
addr add $R6C/64 dev $rdev nodad
link set $rdev up
EOF
  ip -n "${NSP}$cns" -b - <<EOF || fail "client side $cdev in $cns"
addr add $C4/24 dev $cdev
addr add $C6/64 dev $cdev nodad
link set $cdev up
route add default via $R4C
route add default via $R6C
EOF
}

# link_server SNS RDEV SDEV [VRF]: the same towards a server namespace.
link_server() {
  local sns=$1 rdev=$2 sdev=$3 vrf=${4:-}
  ip -n "${NSP}r" -b - <<EOF || fail "router side of $rdev"
link add $rdev type $LINK_KIND peer name $sdev netns ${NSP}$sns
${vrf:+link set $rdev master $vrf}
addr add $R4S/24 dev $rdev
addr add $R6S/64 dev $rdev nodad
link set $rdev up
EOF
  ip -n "${NSP}$sns" -b - <<EOF || fail "server side $sdev in $sns"
addr add $S4/24 dev $sdev
addr add $S6/64 dev $sdev nodad
link set $sdev up
route add default via $R4S
route add default via $R6S
EOF
}

# The router's own table for the tests (never the provider's): a forward
# counter at a priority before the provider's chain, and a conntrack match
# so conntrack runs in the router whatever the provider does.
TEST_TABLE=fttest
test_table_base() {
  cat <<EOF
table inet $TEST_TABLE {
  counter forwarded { }
  counter invalid { }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    counter name forwarded
    ct state invalid counter name invalid
  }
}
EOF
}

# router_forwarding: IPv4 and IPv6 forwarding on in the router.
router_forwarding() {
  rx sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 ||
    fail "cannot enable forwarding in the router"
}

# provider_init: what a datapath does at start, before any connection
# exists: one ctoffloadctl command (which initialises the provider), then
# checks that conntrack accounting is on (the provider turns it on at init;
# counters and last used depend on it for connections created afterwards).
provider_init() {
  local out
  out=$(ctl -j show 2>"$S/init.err") || fail "ctoffloadctl show at start failed: $(head -c 300 "$S/init.err") $out"
  local acct
  acct=$(rx cat /proc/sys/net/netfilter/nf_conntrack_acct)
  [[ $acct == 1 ]] || fail "net.netfilter.nf_conntrack_acct is '$acct' in the router after the provider's init (expected 1)"
}

# topo_basic: client - router - server with the test table, forwarding on
# and the provider initialised (unless TOPO_NO_INIT=1).
#   client c: c-r    router r: r-c, r-s    server s: s-r
topo_basic() {
  ns_create c r s
  link_client c r-c c-r
  link_server s r-s s-r
  router_forwarding
  test_table_base | rx nft -f - || fail "cannot load the test table"
  [[ ${TOPO_NO_INIT:-0} == 1 ]] || provider_init
  log "topology up: client - router - server"
}

# router_neighbours: the router resolves its next hops (client and server,
# IPv4 and IPv6), as a router that has carried traffic on its ports knows
# them. The kernel puts a flow in hardware only if the neighbour of each
# direction is valid when its offload work runs (nf_flow_offload's
# flow_offload_eth_dst answers ENOENT otherwise); the flow then stays in
# the software path until a packet at least a second later refreshes it.
# Scenarios that re-create ports use this before they resume a stream.
router_neighbours() {
  local a
  for a in "$C4" "$S4" "$C6" "$S6"; do
    rx ping -q -c 1 -W 2 "$a" >/dev/null 2>&1 || fail "the router cannot reach $a"
  done
}

# ---- Addresses ----

# ep ADDR PORT -> "ADDR:PORT" or "[ADDR]:PORT".
ep() {
  if [[ $1 == *:* ]]; then printf '[%s]:%s' "$1" "$2"; else printf '%s:%s' "$1" "$2"; fi
}

# fam ADDR -> 4 or 6.
fam() { if [[ $1 == *:* ]]; then printf 6; else printf 4; fi; }

# ---- Traffic ----
#
# A transfer is one connection between a client and a server namespace that
# the scenario feeds in steps: xfer_send writes a chunk of random bytes and
# waits until all of it has arrived, so the scenario knows when traffic is
# flowing and when the connection is idle.  xfer_finish ends it and compares
# the sha256 of what was sent with what arrived.
#   TCP: client -> server only; the server writes what it gets to a file.
#   UDP: the server echoes every datagram; the client writes the echo to a
#        file, so both directions carry the payload.  Every datagram is
#        exactly 1200 bytes (no IP fragments: the flowtable does not take
#        those): the client is fed whole 1200-byte writes, each atomic on
#        the fifo, so each of its reads is one datagram.  Both ends run on
#        CPU 0: veth delivers on the sending CPU's backlog, so datagrams
#        sent from two CPUs may arrive out of order.  Even so, datagrams
#        still queued on the software path when the NIC takes a flow over
#        are overtaken by those it forwards (the kernel's doing, and a real
#        NIC's); UDP promises no order, so a UDP transfer is intact when
#        every datagram arrived once, unaltered, in whatever order.
declare -A XFD XDIR XPROTO XCPID XSPID XSENT XTUP XZONE

# xfer_start ID PROTO CNS SRC SPORT DST DPORT SNS [LPORT]
#   The client in CNS connects from SRC:SPORT to DST:DPORT; the server in
#   SNS listens on LPORT (default DPORT; differs under DNAT) on any address.
xfer_start() {
  local id=$1 proto=$2 cns=$3 src=$4 sport=$5 dst=$6 dport=$7 sns=$8 lport=${9:-$7}
  local d="$S/x/$id" f
  f=$(fam "$dst")
  mkdir -p "$d"
  mkfifo "$d/fifo"
  : >"$d/sent"
  XDIR[$id]=$d
  XPROTO[$id]=$proto
  XSENT[$id]=0
  XTUP[$id]="$proto $src $sport $dst $dport"
  XZONE[$id]=""
  local dsthost=$dst
  [[ $f == 6 ]] && dsthost="[$dst]"
  # Every process is bounded by timeout; cleanup also kills them.
  if [[ $proto == tcp ]]; then
    bg timeout 300 ip netns exec "${NSP}$sns" socat -u \
      "TCP$f-LISTEN:$lport,reuseaddr" "OPEN:$d/recv,creat,trunc,wronly" 2>"$d/server.err"
    XSPID[$id]=$BG_PID
    bg timeout 300 ip netns exec "${NSP}$cns" socat -u \
      "OPEN:$d/fifo,rdonly" "TCP$f:$dsthost:$dport,bind=$(ep "$src" "$sport"),reuseaddr,retry=50,interval=0.1" \
      2>"$d/client.err"
    XCPID[$id]=$BG_PID
  else
    : >"$d/recv"
    bg timeout 300 ip netns exec "${NSP}$sns" taskset -c 0 socat -b "$UDP_DGRAM" \
      "UDP$f-LISTEN:$lport,reuseaddr" PIPE 2>"$d/server.err"
    XSPID[$id]=$BG_PID
    # The server must be listening before the first datagram.
    wait_for 10 "udp server of $id listening on $lport" udp_listening "$sns" "$lport"
    bg timeout 300 ip netns exec "${NSP}$cns" taskset -c 0 socat -b "$UDP_DGRAM" -t 0.3 \
      "OPEN:$d/fifo,rdonly!!OPEN:$d/recv,creat,trunc,wronly" \
      "UDP$f:$dsthost:$dport,bind=$(ep "$src" "$sport")" 2>"$d/client.err"
    XCPID[$id]=$BG_PID
  fi
  # Opening read-write never blocks (a plain write-open would wait for the
  # reader); closing it is the client's end of file.
  local fd
  exec {fd}<>"$d/fifo"
  XFD[$id]=$fd
  log "transfer $id: $proto $(ep "$src" "$sport") -> $(ep "$dst" "$dport") (server $sns:$lport)"
}

udp_listening() {
  [[ -n $(in_ns "$1" ss -Hlun "sport = :$2") ]]
}

# Size of file 'f' in bytes (0 when missing).
fsize() {
  local n
  n=$(stat -c %s "$1" 2>/dev/null) || n=0
  printf '%s' "$n"
}

recv_has() { (($(fsize "$1") >= $2)); }

# xfer_send ID BYTES [SEC]: sends BYTES random bytes over transfer ID and
# waits (SEC, default 30, per step) until the other end has them all.  UDP
# goes in steps of at most UDP_STEP bytes, each waiting for its echo: a
# socket's default receive buffer holds about 90 datagrams of 1200 bytes,
# and a slow (emulated) client that sends a longer burst before reading its
# echoes would drop some, which is the test's doing, not the kernel's.  UDP
# rounds BYTES up to whole datagrams (UDP_DGRAM).
UDP_STEP=49200
UDP_DGRAM=1200
xfer_send() {
  local id=$1 n=$2 limit=${3:-30}
  local d=${XDIR[$id]} step
  [[ ${XPROTO[$id]} == udp ]] && n=$(((n + UDP_DGRAM - 1) / UDP_DGRAM * UDP_DGRAM))
  while ((n > 0)); do
    step=$n
    kill -0 "${XCPID[$id]}" 2>/dev/null || fail "transfer $id: client exited early: $(head -c 300 "$d/client.err")"
    if [[ ${XPROTO[$id]} == udp ]]; then
      ((step > UDP_STEP)) && step=$UDP_STEP
      # Read from a regular file, dd writes whole datagrams; the step
      # before was echoed in full, so the client's reads start aligned.
      head -c "$step" /dev/urandom >"$d/step"
      cat "$d/step" >>"$d/sent"
      timeout "$limit" dd if="$d/step" bs="$UDP_DGRAM" status=none >&"${XFD[$id]}" ||
        fail "transfer $id: could not hand $step bytes to the client within ${limit}s"
    else
      head -c "$step" /dev/urandom | timeout "$limit" tee -a "$d/sent" >&"${XFD[$id]}" ||
        fail "transfer $id: could not hand $step bytes to the client within ${limit}s"
    fi
    XSENT[$id]=$((XSENT[$id] + step))
    if ! poll_until "$limit" recv_has "$d/recv" "${XSENT[$id]}"; then
      fail "transfer $id: $(fsize "$d/recv") of ${XSENT[$id]} bytes arrived within ${limit}s"
    fi
    n=$((n - step))
  done
}

# Waits up to 'sec' for pid 'p' to exit; returns 1 if it did not.
wait_pid() {
  local p=$1 limit=$2
  poll_until "$limit" pid_gone "$p"
}
# True when process 'p' has exited (gone, or a zombie not reaped yet).
pid_gone() {
  local st
  kill -0 "$1" 2>/dev/null || return 0
  read -r _ _ st _ <"/proc/$1/stat" 2>/dev/null || return 0
  [[ $st == Z ]]
}

# xfer_finish ID: closes the client's input, waits (bounded) for both ends,
# and fails unless what arrived is byte for byte what was sent.
xfer_finish() {
  local id=$1
  local d=${XDIR[$id]} fd=${XFD[$id]}
  exec {fd}>&-
  unset "XFD[$id]"
  if ! wait_pid "${XCPID[$id]}" 15; then
    fail "transfer $id: client did not finish within 15s after end of input"
  fi
  if [[ ${XPROTO[$id]} == tcp ]]; then
    wait_pid "${XSPID[$id]}" 15 || fail "transfer $id: server did not finish within 15s after the client"
  else
    kill -TERM "${XSPID[$id]}" 2>/dev/null || true
  fi
  local sums a b
  sums=$(sha256sum "$d/sent" "$d/recv") || fail "transfer $id: sha256sum failed"
  a=$(sed -n 1p <<<"$sums")
  b=$(sed -n 2p <<<"$sums")
  if [[ ${a%% *} == "${b%% *}" ]]; then
    log "transfer $id: ${XSENT[$id]} bytes intact (sha256 ${a:0:16})"
    return 0
  fi
  local differ
  differ="data differ: sent $(fsize "$d/sent") bytes sha256 ${a:0:16}, received $(fsize "$d/recv") bytes sha256 ${b:0:16}; $(cmp "$d/sent" "$d/recv" 2>&1 | head -1)"
  [[ ${XPROTO[$id]} == udp ]] || fail "transfer $id: $differ"
  # The same datagrams in another order?  One line of hex per datagram.
  dgrams "$d/sent" >"$d/sent.dg"
  dgrams "$d/recv" >"$d/recv.dg"
  if ! cmp -s <(sort "$d/sent.dg") <(sort "$d/recv.dg"); then
    fail "transfer $id: $differ; as datagrams: $(sort "$d/sent.dg" | comm -23 - <(sort "$d/recv.dg") | wc -l) sent never arrived, $(sort "$d/recv.dg" | comm -13 <(sort "$d/sent.dg") - | wc -l) arrived that were not sent"
  fi
  local moved
  moved=$(paste -d ' ' "$d/sent.dg" "$d/recv.dg" | awk '{ if ($1 != $2) n++ } END { print n + 0 }')
  log "transfer $id: ${XSENT[$id]} bytes intact, every one of its $(wc -l <"$d/sent.dg") datagrams once; $moved arrived out of order"
}

# dgrams FILE: FILE's UDP_DGRAM-byte datagrams, one line of hex each.
dgrams() {
  od -An -v -tx1 -w"$UDP_DGRAM" "$1" | tr -d ' '
}

# ---- Conntrack in the router ----

# ct_get PROTO SRC SPORT DST DPORT [ZONE]: the router's conntrack line for
# that original tuple, or nothing.  Without a zone it asks the kernel for
# that tuple (-G, which also finds an entry whose original direction is the
# other way round); conntrack -G takes no zone, so with one it lists the
# zone (-L -w) and picks the line.
ct_get() {
  local proto=$1 src=$2 sport=$3 dst=$4 dport=$5 zone=${6:-}
  if [[ -z $zone ]]; then
    rx conntrack -G -p "$proto" -s "$src" -d "$dst" --sport "$sport" --dport "$dport" 2>/dev/null || true
    return 0
  fi
  local line
  while IFS= read -r line; do
    if [[ $line == "$proto "*" src=$src dst=$dst sport=$sport dport=$dport "* ||
      $line == "$proto "*" src=$dst dst=$src sport=$dport dport=$sport "* ]]; then
      printf '%s\n' "$line"
    fi
  done < <(rx conntrack -L -p "$proto" -w "$zone" 2>/dev/null || true)
}

# ct_offloaded ...: the entry exists and has [OFFLOAD].
ct_offloaded() {
  [[ $(ct_get "$@") == *"[OFFLOAD]"* ]]
}

# ct_not_offloaded ...: the entry exists and has no [OFFLOAD].
ct_not_offloaded() {
  local l
  l=$(ct_get "$@")
  [[ -n $l && $l != *"[OFFLOAD]"* ]]
}

# ct_packets LINE: packets of both directions (sum of packets= fields).
ct_packets() {
  local sum=0 w
  for w in $1; do
    [[ $w == packets=* ]] && sum=$((sum + ${w#packets=}))
  done
  printf '%s' "$sum"
}

# ct_reply LINE: "SRC SPORT DST DPORT" of the reply tuple (the second
# src=/dst=/sport=/dport= group of a conntrack -L line).
ct_reply() {
  local w n_src=0 rs="" rd="" rsp="" rdp="" n_sp=0 n_d=0 n_dp=0
  for w in $1; do
    case $w in
      src=*) n_src=$((n_src + 1)); ((n_src == 2)) && rs=${w#src=} ;;
      dst=*) n_d=$((n_d + 1)); ((n_d == 2)) && rd=${w#dst=} ;;
      sport=*) n_sp=$((n_sp + 1)); ((n_sp == 2)) && rsp=${w#sport=} ;;
      dport=*) n_dp=$((n_dp + 1)); ((n_dp == 2)) && rdp=${w#dport=} ;;
    esac
  done
  printf '%s %s %s %s' "$rs" "$rsp" "$rd" "$rdp"
}

# ---- The provider through ctoffloadctl ----

# ctl_add ARGS...: `ctoffloadctl -j add ARGS` in the router; fails unless
# the kernel provider (not the software fallback) took the connection.
# Leaves the JSON answer in CTL_OUT.
ctl_add() {
  local rc=0 prov
  CTL_OUT=$(ctl -j add "$@" 2>"$S/ctl.err") || rc=$?
  prov=$(jq -r '.provider // empty' <<<"$CTL_OUT" 2>/dev/null)
  if ((rc != 0)) || [[ $prov != nft_flowtable ]]; then
    fail "ctoffloadctl add $* -> exit $rc, provider '${prov}': $CTL_OUT $(head -c 300 "$S/ctl.err")"
  fi
  log "added: $*"
}

# ctl_del ARGS...: `ctoffloadctl -j del ARGS`; fails unless it succeeded.
ctl_del() {
  local rc=0
  CTL_OUT=$(ctl -j del "$@" 2>"$S/ctl.err") || rc=$?
  ((rc == 0)) || fail "ctoffloadctl del $* -> exit $rc: $CTL_OUT $(head -c 300 "$S/ctl.err")"
  log "deleted: $*"
}

# ctl_show: `ctoffloadctl -j show` in the router into SHOW.
ctl_show() {
  local rc=0
  SHOW=$(ctl -j show 2>"$S/ctl.err") || rc=$?
  ((rc == 0)) || fail "ctoffloadctl -j show -> exit $rc: $SHOW $(head -c 300 "$S/ctl.err")"
}

# ---- nftables in the router ----
#
# Listings use -p (protocols as numbers): otherwise nft looks every set
# element's protocol up in /etc/protocols, one open() each, which in the VM
# (root file system over 9p) made listing 3000 elements take a minute.

# The provider's table name (its default).
PTABLE=ctoffload

# Number of elements in all of the provider's selection sets (one
# `nft -j list table`, which includes the elements); 0 without the table.
prov_elements() {
  local js
  js=$(rx nft -j -p list table inet "$PTABLE" 2>/dev/null) || { printf 0; return 0; }
  jq '[.nftables[] | select(.set) | .set.elem // [] | length] | add // 0' <<<"$js"
}

# Number of elements in the provider's set 'name' (`nft -j list set`).
set_elements() {
  local js
  js=$(rx nft -j -p list set inet "$PTABLE" "$1" 2>/dev/null) || { printf 0; return 0; }
  jq '[.nftables[] | select(.set) | .set.elem // [] | length] | add // 0' <<<"$js"
}

# Devices of flowtable 'ft' in the provider's table, one per line; nothing
# when there is no such flowtable.
ft_devices() {
  local js
  js=$(rx nft -j -p list flowtable inet "$PTABLE" "$1" 2>/dev/null) || return 0
  jq -r '.nftables[] | select(.flowtable) | .flowtable.dev // [] | if type == "array" then .[] else . end' <<<"$js"
}

# Named counter 'name' of the test table: "PACKETS BYTES".
test_counter() {
  rx nft -j -p list counter inet "$TEST_TABLE" "$1" |
    jq -r '.nftables[] | select(.counter) | "\(.counter.packets) \(.counter.bytes)"'
}

# ---- Transfers as conntrack sees them ----
#
# A transfer's original tuple is what its client sends (before any NAT), so
# these look its connection up by transfer id.

# flow_zone ID ZONE: the conntrack zone transfer ID's connection is in.
flow_zone() { XZONE[$1]=$2; }

# ct_of ID: the router's conntrack line of transfer ID ("" when none).
# shellcheck disable=SC2086
ct_of() { ct_get ${XTUP[$1]} ${XZONE[$1]}; }

# off ID: transfer ID's connection has [OFFLOAD].
off() { [[ $(ct_of "$1") == *"[OFFLOAD]"* ]]; }

# not_off ID: it has a conntrack entry without [OFFLOAD].
not_off() {
  local l
  l=$(ct_of "$1")
  [[ -n $l && $l != *"[OFFLOAD]"* ]]
}

# no_off ID: no [OFFLOAD] (the entry may be gone altogether).
no_off() { [[ $(ct_of "$1") != *"[OFFLOAD]"* ]]; }

# conn_of ID: sets CONN to the --proto/--src/--dst (and --zone) options
# of transfer ID.
conn_of() {
  local t
  read -ra t <<<"${XTUP[$1]}"
  CONN=(--proto "${t[0]}" --src "$(ep "${t[1]}" "${t[2]}")" --dst "$(ep "${t[3]}" "${t[4]}")")
  [[ -z ${XZONE[$1]} ]] || CONN+=(--zone "${XZONE[$1]}")
}

# src_ep ID / dst_ep ID: the original source / destination as
# ctoffloadctl prints them.
src_ep() {
  local t
  read -ra t <<<"${XTUP[$1]}"
  ep "${t[1]}" "${t[2]}"
}
dst_ep() {
  local t
  read -ra t <<<"${XTUP[$1]}"
  ep "${t[3]}" "${t[4]}"
}

# expect_offloaded ID [SEC]: waits (default 5 s) for [OFFLOAD] on ID.
expect_offloaded() {
  poll_until "${2:-5}" off "$1" || fail "$1: no [OFFLOAD] within ${2:-5}s (conntrack: $(ct_of "$1"))"
  log "$1: [OFFLOAD]"
}

# expect_not_offloaded ID: ID has a conntrack entry, without [OFFLOAD].
expect_not_offloaded() {
  local l
  l=$(ct_of "$1")
  [[ -n $l ]] || fail "$1: no conntrack entry in the router"
  [[ $l != *"[OFFLOAD]"* ]] || fail "$1 is offloaded but should not be: $l"
  log "$1: not offloaded, as expected"
}

# add_flow ID [IIF] [EXTRA-ADD-OPTIONS...]: gives transfer ID's
# connection to the provider (iif default r-c).
add_flow() {
  local id=$1 iif=${2:-r-c}
  shift $(($# < 2 ? $# : 2))
  conn_of "$id"
  ctl_add --iif "$iif" "${CONN[@]}" "$@"
}

# del_flow ID: takes transfer ID's connection back from the provider.
del_flow() {
  conn_of "$1"
  ctl_del "${CONN[@]}"
}

# show_conn ID: transfer ID's entry in the last ctl_show ("" when absent).
show_conn() {
  jq -c --arg s "$(src_ep "$1")" --arg d "$(dst_ep "$1")" \
    '[.connections[] | select(.src == $s and .dst == $d)] | first // empty' <<<"$SHOW"
}

# fast_path_check ID BYTES: sends BYTES over the (offloaded) transfer ID
# and fails unless the test table's forward counter moved by less than 5%
# of the packets conntrack counted for the connection meanwhile (the
# flowtable keeps conntrack's counters going while it bypasses the
# forward hook).
fast_path_check() {
  local id=$1 n=$2 c0 c1 p0 p1
  read -r c0 _ <<<"$(test_counter forwarded)"
  p0=$(ct_packets "$(ct_of "$id")")
  xfer_send "$id" "$n"
  read -r c1 _ <<<"$(test_counter forwarded)"
  p1=$(ct_packets "$(ct_of "$id")")
  local dc=$((c1 - c0)) dp=$((p1 - p0))
  log "$id: $dp packets counted by conntrack, $dc through the forward hook"
  ((dp >= 50)) || fail "$id: conntrack counted only $dp packets for $n bytes (no accounting?)"
  ((dc * 20 < dp)) || fail "$id: $dc of $dp packets still crossed the forward hook while offloaded"
}

# roundtrip PROTO SRC DST: one connection SRC:40001 -> DST:5001 through the
# router: not offloaded before it is given to the provider, [OFFLOAD]
# after, listed by show -j with both input devices, data intact.
roundtrip() {
  local proto=$1 src=$2 dst=$3
  xfer_start a "$proto" c "$src" 40001 "$dst" 5001 s
  xfer_send a 32768
  expect_not_offloaded a
  add_flow a
  xfer_send a 131072
  expect_offloaded a
  ctl_show
  local c
  c=$(show_conn a)
  jq -e --arg p "$proto" --arg f "ipv$(fam "$src")" \
    '.provider == "nft_flowtable" and .offloaded == true and .proto == $p and .family == $f
     and .iif == "r-c" and .reply_iif == "r-s" and .mode == "sw"' <<<"$c" >/dev/null ||
    fail "show -j entry of a is wrong or missing: ${c:-$SHOW}"
  xfer_send a 131072
  expect_offloaded a
  xfer_finish a
}

# ---- Long-running processes and conntrack events ----

# ct_event_listeners: how many sockets in the router listen to conntrack
# UPDATE events: /proc/net/netlink (per namespace) lists each
# NETLINK_NETFILTER socket (12) with its groups; NFNLGRP_CONNTRACK_UPDATE
# is bit 1 of the mask.  Used to know that a `conntrack -E` is subscribed
# before the traffic whose events it must see starts.
ct_event_listeners() {
  local _sk eth _pid groups _rest n=0
  while read -r _sk eth _pid groups _rest; do
    [[ $eth == 12 && $groups =~ ^[0-9a-f]{8}$ ]] || continue
    (((16#$groups & 2) != 0)) && n=$((n + 1))
  done < <(rx cat /proc/net/netlink)
  printf '%s' "$n"
}

# ct_events_listening: at least one does.
ct_events_listening() { (($(ct_event_listeners) > 0)); }

# more_listeners N: more than N do.
more_listeners() { (($(ct_event_listeners) > $1)); }

# child_of PID: the first child of process PID ("" when none).  `bg
# timeout N cmd` leaves BG_PID on timeout, whose child is cmd: signalling
# timeout itself signals its whole process group, while a scenario may
# want to stop cmd alone and let it finish its work.
child_of() {
  local c=""
  read -r c _ <"/proc/$1/task/$1/children" 2>/dev/null || true
  printf '%s' "$c"
}

# ruleset_json: the router's whole ruleset as `nft -j -p` lists it
# (elements and flowtable devices included), to compare before and after.
ruleset_json() { rx nft -j -p list ruleset; }

# ---- The simulated NIC (tests/simnic, docs/SIMNIC.md) ----
#
# SIMNIC_DIR (from run.sh --simnic) holds simnic.ko per kernel release
# (SIMNIC_DIR/RELEASE/simnic.ko) and iproute2's link_simnic.so.  Its pairs
# ("ip link add A type simnic peer name B") advertise hw-tc-offload, take
# flowtable hardware offload and forward the flows they were given
# themselves; `ethtool -S PORT` shows what they did.  The knobs are global
# module parameters: a scenario that changes one gets the defaults back at
# its end.

SIMNIC_PARAMS=/sys/module/simnic/parameters

# simnic_ko: the module for the running kernel.
simnic_ko() { printf '%s/%s/simnic.ko' "${SIMNIC_DIR:-}" "$(uname -r)"; }

# simnic_load: loads the module unless it is loaded, points iproute2 at
# its plugin, and sets the knobs to their defaults.  Fails the scenario
# when the module was not built for this kernel.
simnic_load() {
  local ko
  ko=$(simnic_ko)
  [[ -n ${SIMNIC_DIR:-} && -s $ko ]] ||
    fail "no simulated NIC for kernel $(uname -r): '$ko' is missing (tests/simnic/build.sh --out DIR $(uname -r), then run.sh --simnic DIR)"
  [[ -s $SIMNIC_DIR/link_simnic.so ]] || fail "no $SIMNIC_DIR/link_simnic.so (tests/simnic/build.sh)"
  export IP_LIB_DIR=$SIMNIC_DIR
  if [[ ! -d $SIMNIC_PARAMS ]]; then
    insmod "$ko" || fail "insmod $ko failed: $(dmesg | tail -n 3 | tr '\n' ' ')"
    log "simnic loaded ($ko)"
  fi
  SIMNIC_USED=1
  simnic_knobs_default
}

# simnic_knob NAME VALUE: sets a fault knob (module parameter).
simnic_knob() {
  printf '%s\n' "$2" >"$SIMNIC_PARAMS/$1" || fail "cannot set simnic knob $1=$2"
  log "simnic knob $1=$2"
}

simnic_knobs_default() {
  [[ -d $SIMNIC_PARAMS ]] || return 0
  echo 0 >"$SIMNIC_PARAMS/refuse"
  echo 4096 >"$SIMNIC_PARAMS/max_rules"
  echo Y >"$SIMNIC_PARAMS/report_lastused"
  echo Y >"$SIMNIC_PARAMS/forward"
}

# topo_hw: topo_basic with simnic pairs for both router ports (r-c, r-s)
# instead of veth; the provider (hw_offload=auto) puts them in ft_hw.
topo_hw() {
  simnic_load
  LINK_KIND=simnic topo_basic
}

# nic_read DEV: NIC[counter] = value for every counter of the router's
# port DEV (what `ethtool -S DEV` shows, plus stack_rx_packets and
# stack_tx_packets: what the router's stack got and sent on it), from the
# module's /proc/simnic, read without starting a process.
declare -A NIC
ROUTER_NETNS=""
nic_read() {
  local dev=$1 line w found=0
  [[ -n $ROUTER_NETNS ]] || ROUTER_NETNS=$(stat -L -c %i "/run/netns/${NSP}r")
  NIC=()
  while IFS= read -r line; do
    [[ $line == "netns=$ROUTER_NETNS dev=$dev "* ]] || continue
    for w in $line; do NIC[${w%%=*}]=${w#*=}; done
    found=1
  done </proc/simnic
  ((found)) || fail "/proc/simnic lists no port $dev in the router's namespace"
}

# nic DEV COUNTER: one counter of the router's port DEV.
nic() {
  nic_read "$1"
  printf '%s' "${NIC[$2]}"
}

# nic_sum COUNTER DEV...: the counter summed over the router's ports.
nic_sum() {
  local c=$1 sum=0 d
  shift
  for d in "$@"; do
    nic_read "$d"
    sum=$((sum + ${NIC[$c]}))
  done
  printf '%s' "$sum"
}

# nic_rules_are N DEV...: every port named holds N rules.
nic_rules_are() {
  local n=$1 d
  shift
  for d in "$@"; do
    nic_read "$d"
    [[ ${NIC[rules]} == "$n" ]] || return 1
  done
}

# stack_rx DEV...: packets the router's stack received on those ports
# (the NIC's forwarded packets are not among them).
stack_rx() { nic_sum stack_rx_packets "$@"; }

# fwd_packets: packets the test table's forward counter has seen (one
# process: nft's text, no jq).
fwd_packets() {
  local out re='packets ([0-9]+)'
  out=$(rx nft list counter inet "$TEST_TABLE" forwarded)
  [[ $out =~ $re ]] || fail "cannot read the forward counter: $out"
  printf '%s' "${BASH_REMATCH[1]}"
}

# hw_off ID: transfer ID's connection has [HW_OFFLOAD].
hw_off() { [[ $(ct_of "$1") == *"[HW_OFFLOAD]"* ]]; }

# sw_only ID: [OFFLOAD] without [HW_OFFLOAD].
sw_only() {
  local l
  l=$(ct_of "$1")
  [[ $l == *"[OFFLOAD]"* && $l != *"[HW_OFFLOAD]"* ]]
}

# expect_hw_offloaded ID [SEC]: waits (default 30 s) for [HW_OFFLOAD].  The
# kernel offloads to the NIC from a workqueue, and after a driver or port
# change the flow's old entry must be collected first (its gc runs about
# once a second); under emulation on a loaded host that took over 10 s once
# (hw-unload, 6.1).  Passing runs see it in 1-2 s, so the bound costs them
# nothing.
expect_hw_offloaded() {
  poll_until "${2:-30}" hw_off "$1" || fail "$1: no [HW_OFFLOAD] within ${2:-30}s (conntrack: $(ct_of "$1"))"
  log "$1: [HW_OFFLOAD]"
}

# hw_path_check ID BYTES: sends BYTES over transfer ID (offloaded to the
# NIC) and fails unless the NIC forwarded at least 50 packets (hw_rx_packets
# of r-c and r-s) while the router's forward hook and its stack's receive
# counters moved by less than 5% of that.
hw_path_check() {
  local id=$1 n=$2 c0 c1 h0 h1 s0 s1
  c0=$(fwd_packets)
  h0=$(nic_sum hw_rx_packets r-c r-s)
  s0=$(stack_rx r-c r-s)
  xfer_send "$id" "$n"
  c1=$(fwd_packets)
  h1=$(nic_sum hw_rx_packets r-c r-s)
  s1=$(stack_rx r-c r-s)
  local dc=$((c1 - c0)) dh=$((h1 - h0)) ds=$((s1 - s0))
  log "$id: the NIC forwarded $dh packets; the forward hook saw $dc, the router's stack received $ds"
  ((dh >= 50)) || fail "$id: the NIC forwarded only $dh packets for $n bytes (forward hook $dc, stack $ds)"
  ((dc * 20 < dh)) || fail "$id: $dc packets crossed the forward hook while the NIC forwarded $dh"
  ((ds * 20 < dh)) || fail "$id: the router's stack received $ds packets while the NIC forwarded $dh"
}
