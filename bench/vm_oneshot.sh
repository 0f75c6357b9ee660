#!/usr/bin/env bash
# vm_oneshot.sh - benchmark row 8 (issue 17 part 5): one-shot commands on a
# big table, on a kernel with flowtables: in the VM of scripts/vm/run.sh on
# this project's machines (scripts/bench.sh runs it there).
#
#   bench/vm_oneshot.sh --ctl PATH [--sizes "10000 100000 1000000"] [--reps R]
#                       [--oneshot-reps R1] [--adopt-once-from N] [--bound SEC]
#                       [--skip-adoption] [--md FILE] [--logs DIR]
#
# For each size N the provider's table is filled with N connections (one
# `ctoffloadctl batch` of generated adds, topping up the previous size; the
# count is checked), then, R times each (the one-shot commands R1 times,
# default R), alternating who goes first, whole processes timed by bash
# (wall, user, sys), medians:
#   one-shot  ours: `ctoffloadctl add --iif r-c ...` of a new connection,
#             `ctoffloadctl update ...` of it, `ctoffloadctl del ...` of it
#             (default options: lazy adoption, default capacity);
#             peer: `nft add element inet ctoffload sel4 { KEY comment ".." }`,
#             `conntrack -G` of one entry, `nft delete element ...` of an
#             equivalent element (key and comment as the provider writes them).
#   adoption  ours: `echo "update ..." | ctoffloadctl -o capacity -o adopt=full
#             batch -` (reads every connection at start) and a one-shot
#             `ctoffloadctl -o capacity -j show` (reads all of it);
#             peer: `nft -n list set inet ctoffload sel4` (and with names
#             once, at the first size).  Counts are checked; only the command itself
#             is timed.  At N >= --adopt-once-from (default 1000000) these are
#             measured once, not R times; each is stopped after --bound
#             seconds (default 1200), reported as "> bound" and not run
#             again; --skip-adoption leaves them out.  --logs DIR keeps their
#             -vv logs and the raw results.
#
# Everything happens in network namespaces this script creates (oneshot-<pid>-*)
# and removes on exit.  Prints Markdown (to --md FILE, appended, or stdout).
# Exit status non-zero when a step fails to run; timing never fails it.
set -uo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" || exit 2

ctl="" sizes="10000 100000 1000000" reps=5 oreps="" once_from=1000000 bound=1200 md=/dev/stdout logs=""
skip_adopt=0
while (($#)); do
  case $1 in
    --ctl) ctl=$2; shift 2 ;;
    --sizes) sizes=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --oneshot-reps) oreps=$2; shift 2 ;;
    --skip-adoption) skip_adopt=1; shift ;;
    --adopt-once-from) once_from=$2; shift 2 ;;
    --bound) bound=$2; shift 2 ;;
    --md) md=$2; shift 2 ;;
    --logs) logs=$2; shift 2 ;;
    -h | --help) usage_help; exit 0 ;;
    *) usage_error "unknown argument '$1'" ;;
  esac
done
[[ -x $ctl ]] || usage_error "--ctl PATH (ctoffloadctl) is required"
oreps=${oreps:-$reps}
[[ $reps =~ ^[1-9][0-9]*$ && $oreps =~ ^[1-9][0-9]*$ ]] || usage_error "--reps and --oneshot-reps want a count"
[[ $bound =~ ^[1-9][0-9]*$ ]] || usage_error "--bound wants seconds"
[[ -z $logs || -d $logs ]] || usage_error "--logs wants an existing directory"
read -ra sizes <<<"$sizes"
((${#sizes[@]})) || usage_error "--sizes is empty"
prev=0
for n in "${sizes[@]}"; do
  if ! [[ $n =~ ^[1-9][0-9]*$ ]] || ((n <= prev || n > 4000000)); then
    usage_error "--sizes wants increasing counts up to 4000000"
  fi
  prev=$n
done
need_tools ip nft conntrack timeout awk

bench_start oneshot oneshot

# timed_to COUNTER CMD...: times CMD alone, at most $bound seconds, its stdout
# into a file of the guest's tmpfs that the function COUNTER reads afterwards
# (- : to /dev/null; a counter reading a pipe while CMD runs would compete
# with it for the guest's two CPUs); sets t_wall, t_user, t_sys, t_rc (124:
# the bound ran out) and count (what COUNTER printed).
timed_to() {
  local counter=$1
  shift
  local TIMEFORMAT='%R %U %S'
  if [[ $counter == - ]]; then
    { time timeout -k 10 "$bound" "$@" >/dev/null 2>"$work/timed.err"; echo $? >"$work/timed.rc"; } 2>"$work/timed.time"
    echo >"$work/timed.count"
  else
    { time timeout -k 10 "$bound" "$@" >"$work/timed.stdout" 2>"$work/timed.err"; echo $? >"$work/timed.rc"; } 2>"$work/timed.time"
    "$counter" <"$work/timed.stdout" >"$work/timed.count"
    rm -f "$work/timed.stdout"
  fi
  read -r t_wall t_user t_sys <"$work/timed.time"
  t_rc=$(<"$work/timed.rc")
  count=$(<"$work/timed.count")
}
count_json() { tr '{' '\n' | grep -c '^"zone"'; }      # connections in `ctoffloadctl -j show`
count_none() { cat; }                                  # batch: its result lines

# ---- Topology: client - router - server ------------------------------------
topology veth
route_far

# Capacity for a process that reads the whole table of N connections.
cap_for() { local c=$(($1 + $1 / 4)); ((c < 262144)) && c=262144; echo "$c"; }
# The measured one-shot connections: ours 10.99.x.y, the peer's 10.98.x.y,
# one of each per (size, repetition); port 40000 + k.
oneshot_addr() { echo "10.$1.$(($2 / 250)).$(($2 % 250 + 1))"; }

# One connection first, for the element comment the provider writes.
rx "$ctl" add --iif r-c --proto tcp --src 10.97.0.1:40000 --dst 10.200.0.1:80 >/dev/null ||
  die "ctoffloadctl add of one connection failed"
one=$(rx nft list set inet ctoffload sel4)
note=$(elem_comment <<<"$one")
[[ -n $note ]] || die "no element comment in set sel4: $(head -c 400 <<<"$one")"
elem_line=$(grep -m1 '10\.97\.0\.1' <<<"$one" | sed 's/^[[:space:]]*\(elements = { \)\{0,1\}//; s/[ ,}]*$//')
rx "$ctl" flush >/dev/null || die "ctoffloadctl flush"
log "the provider writes elements as: $elem_line"

kernel=$(uname -r)
: >"$work/results"  # N side op rep wall user sys [note]
record() {
  echo "$*" >>"$work/results"
  [[ -z $logs ]] || cp "$work/results" "$logs/results.txt"
}

# ---- Per size -------------------------------------------------------------------
first=${sizes[0]} last=${sizes[-1]}
filled=0 k=0 stopped="" warm=1
for n in "${sizes[@]}"; do
  cap=$(cap_for "$n")
  log "N = $n: filling the table ($filled -> $n connections, capacity $cap)"
  conns "$filled" "$n" >"$work/fill.txt"
  timed rx "$ctl" -o nft_flowtable.capacity="$cap" batch "$work/fill.txt" || die "the fill batch failed to run"
  rm -f "$work/fill.txt"
  summary=$(tail -1 "$work/timed.out")
  [[ $summary == "$((n - filled)) ok, 0 failed" ]] ||
    die "fill to $n: '$summary'; first lines: $(head -3 "$work/timed.out")"
  log "filled in ${t_wall}s"
  echo "$n fill $t_wall $t_user $t_sys" >>"$work/fills"
  filled=$n

  # One-shot add, update, del: ours against the peer.  At the first size a
  # run that is not recorded comes first: the guest's first start of each
  # program reads it over 9p.
  for ((r = -warm; r < oreps; r++)); do
    k=$((k + 1))
    port=$((40000 + k))
    osrc=$(oneshot_addr 99 "$k") psrc=$(oneshot_addr 98 "$k")
    conn=(--proto tcp --src "$osrc:$port" --dst 10.200.0.1:80)
    pkey="$psrc . 10.200.0.1 . tcp . $port . 80"
    # Conntrack entries for both tuples (not timed): update reads one, and
    # conntrack -G gets one.
    for a in "$osrc" "$psrc"; do
      rx conntrack -I -p tcp -s "$a" -d 10.200.0.1 --sport "$port" --dport 80 --state ESTABLISHED \
        -t 600 -u ASSURED >/dev/null 2>&1 || die "conntrack -I of $a:$port"
    done
    ours() {
      timed rx "$ctl" add --iif r-c "${conn[@]}" || die "ctoffloadctl add failed (N $n)"
      record "$n ours add $r $t_wall $t_user $t_sys"
      timed rx "$ctl" update "${conn[@]}" || die "ctoffloadctl update failed (N $n)"
      grep -q 'last-used' "$work/timed.out" || die "ctoffloadctl update: $(cat "$work/timed.out")"
      record "$n ours update $r $t_wall $t_user $t_sys"
      timed rx "$ctl" del "${conn[@]}" || die "ctoffloadctl del failed (N $n)"
      record "$n ours del $r $t_wall $t_user $t_sys"
    }
    peer() {
      timed rx nft add element inet ctoffload sel4 "{ $pkey comment \"$note\" }" || die "nft add element failed (N $n)"
      record "$n peer add $r $t_wall $t_user $t_sys"
      timed rx conntrack -G -p tcp -s "$psrc" -d 10.200.0.1 --sport "$port" --dport 80 || die "conntrack -G failed (N $n)"
      record "$n peer update $r $t_wall $t_user $t_sys"
      timed rx nft delete element inet ctoffload sel4 "{ $pkey }" || die "nft delete element failed (N $n)"
      record "$n peer del $r $t_wall $t_user $t_sys"
    }
    if ((r % 2 == 0)); then ours; peer; else peer; ours; fi
    ((r < 0)) && sed -i '/ -1 /d' "$work/results"
    rx conntrack -D -p tcp -s "$psrc" -d 10.200.0.1 --sport "$port" --dport 80 >/dev/null 2>&1
  done
  warm=0
  log "N = $n: one-shot add/update/del done ($oreps each)"
  ((skip_adopt)) && continue

  # Adoption of the whole table by a new process.
  areps=$reps
  ((n >= once_from)) && areps=1
  # The batch updates the table's last connection, which gets a conntrack
  # entry, as a live connection has.
  read -r usrc uport < <(awk -v i=$((n - 1)) "$conn_awk"' BEGIN { printf "%s %d\n", conn_src(i), conn_sport(i) }')
  rx conntrack -I -p tcp -s "$usrc" -d 10.200.0.1 --sport "$uport" --dport 80 --state ESTABLISHED \
    -t 3600 -u ASSURED >/dev/null 2>&1 || die "conntrack -I of $usrc:$uport"
  echo "update --proto tcp --src $usrc:$uport --dst 10.200.0.1:80" >"$work/update.txt"
  # One bounded run of an adoption measure: OP (batch, show, list, names)
  # and its command; a measure that ran out of its bound at a smaller N or
  # an earlier run is not run again (it is recorded as out of bound).
  adopt_run() {
    local op=$1 side=ours
    shift
    [[ $op == list || $op == names ]] && side=peer
    if [[ " $stopped " == *" $op "* ]]; then
      record "$n $side $op $r $bound 0 0 bound"
      return
    fi
    log "N = $n: $op (run $((r + 1)) of $areps), bound ${bound}s"
    date '+start %Y-%m-%dT%H:%M:%S.%N' >"$work/start"
    timed_to "$@"
    [[ -n $logs ]] && cat "$work/start" "$work/timed.err" >"$logs/N$n.$op.$r.log"
    if ((t_rc == 124)); then
      record "$n $side $op $r $t_wall $t_user $t_sys bound"
      stopped+=" $op"
      log "N = $n: $op ran out of its bound (${t_wall}s); not run again"
      return 1
    fi
    log "N = $n: $op ${t_wall}s (user $t_user, sys $t_sys)"
    case $op in
      batch)
        # ENODATA (exit status 1): found, but no reading has seen its
        # counters move yet (the first reading is the baseline); ENOENT
        # would be a miss.
        if ! [[ $count == "line 1: ok"* || $count == "line 1: error ENODATA"* ]] || ((t_rc > 1)); then
          die "batch with one update (status $t_rc): $count $(head -c 600 "$work/timed.err")"
        fi
        adopted=$(sed -n 's/.*(\([0-9]*\) connections adopted).*/\1/p' "$work/timed.err" | head -1)
        [[ $adopted == "$n" ]] || die "batch adopted '$adopted' connections, not $n: $(head -c 600 "$work/timed.err")"
        ;;
      show)
        ((t_rc == 0)) || die "show failed (status $t_rc): $(head -c 600 "$work/timed.err")"
        ((count == n)) || die "show listed $count connections, not $n"
        ;;
      *) ((t_rc == 0)) || die "$op failed (status $t_rc): $(head -c 600 "$work/timed.err")" ;;
    esac
    record "$n $side $op $r $t_wall $t_user $t_sys"
  }
  adopt_ours() {
    # -vv: the log's timestamps split the time (kept with --logs).
    adopt_run batch count_none ip netns exec "$nsr" "$ctl" -vv -o nft_flowtable.capacity="$cap" -o nft_flowtable.adopt=full batch - <"$work/update.txt"
    adopt_run show count_json ip netns exec "$nsr" "$ctl" -vv -o nft_flowtable.capacity="$cap" -j show
  }
  adopt_peer() {
    # Numeric (-n): with names nft looks up the protocol in /etc/protocols
    # once per element (open, read, close), which in the VM goes over 9p
    # to the host; the names run is shown at the first size only.
    adopt_run list - ip netns exec "$nsr" nft -n list set inet ctoffload sel4
    if [[ $n == "$first" ]] && ((r == 0)); then
      adopt_run names - ip netns exec "$nsr" nft list set inet ctoffload sel4
    fi
  }
  for ((r = 0; r < areps; r++)); do
    if ((r % 2 == 0)); then adopt_ours; adopt_peer; else adopt_peer; adopt_ours; fi
  done
done
oom=$(dmesg 2>/dev/null | grep -ci 'out of memory\|oom-kill' || true)
mem_total=$(awk '/^MemTotal:/ { printf "%.0f MiB", $2 / 1024 }' /proc/meminfo)

# ---- Report -------------------------------------------------------------------------
# Medians of one measure over the runs of (N, side, op): col 5 wall, 6 user, 7 sys.
med() { awk -v n="$1" -v s="$2" -v o="$3" -v c="$4" '$1 == n && $2 == s && $3 == o { print $c }' "$work/results" | median; }
runs() { awk -v n="$1" -v s="$2" -v o="$3" '$1 == n && $2 == s && $3 == o' "$work/results" | wc -l; }
bounded() { awk -v n="$1" -v s="$2" -v o="$3" '$1 == n && $2 == s && $3 == o && $8 == "bound" { b = 1 } END { print b + 0 }' "$work/results"; }
# Median over the runs of the per-run ratio side-a op-a / side-b op-b; by
# wall (col 5) or CPU (6 + 7).
ratio() {
  awk -v n="$1" -v sa="$2" -v oa="$3" -v sb="$4" -v ob="$5" -v cpu="$6" '
    $1 == n && $2 == sa && $3 == oa { a[$4] = cpu ? $6 + $7 : $5 }
    $1 == n && $2 == sb && $3 == ob { b[$4] = cpu ? $6 + $7 : $5 }
    END { for (r in a) if ((r in b) && b[r] > 0) printf "%.6g\n", a[r] / b[r] }' "$work/results" | median
}
fmt() { awk -v v="$1" 'BEGIN { if (v == "nan") print "-"; else printf "%.3f", v }'; }
fmtx() { awk -v v="$1" 'BEGIN { if (v == "nan" || v == "") print "-"; else printf "%.2fx", v }'; }
wallcell() {  # N side op: the median wall, or "> bound"
  if (($(bounded "$1" "$2" "$3"))); then echo "> ${bound}"; else fmt "$(med "$1" "$2" "$3" 5)"; fi
}
cell() {  # N side op: "wall (user / sys)", or "> bound" when a run ran out
  if (($(bounded "$1" "$2" "$3"))); then
    echo "> ${bound} (stopped)"
  elif (($(runs "$1" "$2" "$3") == 0)); then
    echo "-"
  else
    echo "$(fmt "$(med "$1" "$2" "$3" 5)") ($(fmt "$(med "$1" "$2" "$3" 6)") / $(fmt "$(med "$1" "$2" "$3" 7)"))"
  fi
}
rcell() {  # a ratio of medians' runs, unless a side ran out of its bound
  if (($(bounded "$1" "$2" "$3") + $(bounded "$1" "$4" "$5"))); then echo "-"; else
    echo "$(fmtx "$(ratio "$@" 0)"), $(fmtx "$(ratio "$@" 1)")"
  fi
}
growth() {  # side op: wall at the last size / wall at the first, and at each size
  if (($(bounded "$last" "$1" "$2"))); then echo "> $(fmtx "$(awk -v a="$bound" -v b="$(med "$first" "$1" "$2" 5)" 'BEGIN { print a / b }')")"; else
    fmtx "$(awk -v a="$(med "$last" "$1" "$2" 5)" -v b="$(med "$first" "$1" "$2" 5)" 'BEGIN { if (b > 0) print a / b; else print "nan" }')"
  fi
}
# Like growth, of the best (smallest) wall of the runs.
growth_best() {
  if (($(bounded "$last" "$1" "$2"))); then echo "-"; return; fi
  awk -v n1="$first" -v n2="$last" -v s="$1" -v o="$2" '
    $2 == s && $3 == o && $1 == n1 && (!(1 in b) || $5 < b[1]) { b[1] = $5 }
    $2 == s && $3 == o && $1 == n2 && (!(2 in b) || $5 < b[2]) { b[2] = $5 }
    END { if ((1 in b) && (2 in b) && b[1] > 0) printf "%.2fx\n", b[2] / b[1]; else print "-" }' "$work/results"
}
sizes_text=$(printf '%s ' "${sizes[@]}" | sed 's/ $//')
{
  cat <<EOF
### 8 (VM, kernel $kernel): one-shot commands on a big table

What: the provider's table holds N connections (\`sel4\`, filled by
\`ctoffloadctl batch\` of generated adds, topping up the previous size);
then whole processes, as an operator's script runs them, timed by bash.
One-shot: \`ctoffloadctl add --iif r-c\` of a new connection,
\`ctoffloadctl update\` of it (it has a conntrack entry), \`ctoffloadctl
del\` of it, with default options (lazy adoption: one GET per connection
named; default capacity).  Peers: \`nft add element inet ctoffload sel4 {
KEY comment "$note" }\` and \`nft delete element\` of an equivalent element
(the provider writes \`$elem_line\`), and for update \`conntrack -G\` of one
entry.  Adoption of the whole table by a new process: \`echo "update ..." |
ctoffloadctl -o nft_flowtable.capacity=C -o nft_flowtable.adopt=full batch
-\` (it reads every connection at start; the count it logs is checked) and \`ctoffloadctl -o
nft_flowtable.capacity=C -j show\` (its output to a file in the guest's
tmpfs, counted afterwards), against \`nft -n list set inet ctoffload sel4 >/dev/null\` (the
same kernel dump; numeric, because with names nft opens /etc/protocols once
per element, in this VM a 9p round trip to the host: \`nft list set\` with
names is shown once, at the first size).  Only the command is timed.  Sizes
$sizes_text; $oreps runs of each one-shot command and $reps of each adoption,
alternating who goes first (at the first size after one run not recorded);
adoption at N >= $once_from measured once, and
every adoption run stopped after ${bound} s (and then not run again at
larger N).  Conntrack holds only the measured connections' entries, so the
conntrack dumps behind update, batch and show are small here.  Medians;
ratios are medians of the per-run ratios (wall, CPU).  Guest memory
$mem_total; out-of-memory kills in the guest's log: $oom.  Software
emulation (TCG): ratios and growth, not absolute times, are the figures.

Command: \`scripts/vm/run.sh --kernel 6.1 --mem 3072 --timeout 7200 -- bench/vm_oneshot.sh --ctl build/ctoffloadctl --sizes "$sizes_text" --reps $reps --oneshot-reps $oreps --adopt-once-from $once_from --bound $bound$( ((skip_adopt)) && echo " --skip-adoption")\`

| N | fill: batch of adds to N, wall s |
|---|---|
EOF
  while read -r fn _ fw _ _; do
    echo "| $fn | $(fmt "$fw") |"
  done <"$work/fills"
  cat <<EOF

One-shot commands, wall s (user / sys):

| N | ours: \`add\` | \`nft add element\` | ours / nft (wall, CPU) | ours: \`update\` | \`conntrack -G\` | ours / conntrack -G (wall, CPU) | ours: update / \`nft add element\` (wall) | ours: \`del\` | \`nft delete element\` | ours / nft (wall, CPU) |
|---|---|---|---|---|---|---|---|---|---|---|
EOF
  for n in "${sizes[@]}"; do
    echo "| $n | $(cell "$n" ours add) | $(cell "$n" peer add) | $(rcell "$n" ours add peer add) | $(cell "$n" ours update) | $(cell "$n" peer update) | $(rcell "$n" ours update peer update) | $(fmtx "$(ratio "$n" ours update peer add 0)") | $(cell "$n" ours del) | $(cell "$n" peer del) | $(rcell "$n" ours del peer del) |"
  done
  ((skip_adopt)) || cat <<EOF

Adoption of the whole table by a new process, wall s (user / sys):

| N | runs | ours: \`batch\` (adopt all, one update) | ours: \`-j show\` | \`nft -n list set\` | \`nft list set\` (names) | batch / nft -n list (wall, CPU) | show / nft -n list (wall, CPU) |
|---|---|---|---|---|---|---|---|
EOF
  ((skip_adopt)) || for n in "${sizes[@]}"; do
    echo "| $n | $(runs "$n" peer list) | $(cell "$n" ours batch) | $(cell "$n" ours show) | $(cell "$n" peer list) | $(cell "$n" peer names) | $(rcell "$n" ours batch peer list) | $(rcell "$n" ours show peer list) |"
  done
  cat <<EOF

Growth of the wall time from N = $first to N = $last (1.00x: flat; N grows $((last / first))x), of the medians and of the best runs (the best run is the least disturbed by the rest of this shared machine):

| operation | growth: median, best | | operation | growth: median, best |
|---|---|---|---|---|
| ours: \`add\` | $(growth ours add), $(growth_best ours add) | | \`nft add element\` | $(growth peer add), $(growth_best peer add) |
| ours: \`update\` | $(growth ours update), $(growth_best ours update) | | \`conntrack -G\` | $(growth peer update), $(growth_best peer update) |
| ours: \`del\` | $(growth ours del), $(growth_best ours del) | | \`nft delete element\` | $(growth peer del), $(growth_best peer del) |
$( ((skip_adopt)) || echo "| ours: \`batch\` (adoption) | $(growth ours batch), $(growth_best ours batch) | | \`nft -n list set\` | $(growth peer list), $(growth_best peer list) |
| ours: \`-j show\` | $(growth ours show), $(growth_best ours show) | | | |")

EOF
  # Targets: within 2x of the peer at every N, and flat (growth <= 1.5x).
  worst_add=0 worst_del=0 worst_upd=0
  for n in "${sizes[@]}"; do
    a=$(ratio "$n" ours add peer add 0) d=$(ratio "$n" ours del peer del 0) u=$(ratio "$n" ours update peer add 0)
    worst_add=$(awk -v a="$a" -v w="$worst_add" 'BEGIN { print (a > w ? a : w) }')
    worst_del=$(awk -v a="$d" -v w="$worst_del" 'BEGIN { print (a > w ? a : w) }')
    worst_upd=$(awk -v a="$u" -v w="$worst_upd" 'BEGIN { print (a > w ? a : w) }')
  done
  within=$(awk -v a="$worst_add" -v d="$worst_del" -v u="$worst_upd" 'BEGIN { print (a <= 2 && d <= 2 && u <= 2) ? "met" : "not met" }')
  flat=met
  for op in add update del; do
    g=$(awk -v a="$(med "$last" ours "$op" 5)" -v b="$(med "$first" ours "$op" 5)" 'BEGIN { print (b > 0 ? a / b : 99) }')
    awk -v g="$g" 'BEGIN { exit !(g > 1.5) }' && flat="not met"
  done
  echo "Target (one-shot add/del/update within 2x of \`nft add element\`/\`nft delete element\` at every N, and flat in N; adoption reported): within 2x (medians): **$within** (worst ours / nft over the sizes, wall: add $(fmtx "$worst_add"), del $(fmtx "$worst_del"), update against \`nft add element\` $(fmtx "$worst_upd")); flat (growth of the medians N = $first to $last at most 1.5x): **$flat** (add $(growth ours add), update $(growth ours update), del $(growth ours del); of the best runs: add $(growth_best ours add), update $(growth_best ours update), del $(growth_best ours del))$( ((skip_adopt)) || echo "; adoption at N = $last, wall: batch $(wallcell "$last" ours batch) s, show $(wallcell "$last" ours show) s, \`nft -n list set\` $(wallcell "$last" peer list) s")."
  ((skip_adopt)) || cat <<'EOF'

Reading the whole table is the kernel's set dump, which walks the set from
its start for every reply of at most 32 KB: O(N²) in the kernel, for the
provider and for `nft list set` alike (sys time above).  That is why
adoption is lazy by default (a process reads a connection when an
operation names it) and why only `show` and `adopt=full` pay it.  Not
built: a catalogue of held connections under /run, checked against the
kernel with one GET each, and sets split by a hash of the key so that
every dump stays short (both change what a process must trust or the
layout; docs/ARCHITECTURE.md, "Adoption").
EOF
} >>"$md"
log "done"
