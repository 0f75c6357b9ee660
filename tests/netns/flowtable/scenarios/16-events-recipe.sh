# The recipe of docs/RECIPES.md: conntrack -E feeding one long-lived
# ctoffloadctl batch, as an admin runs it.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="docs/examples/offload-from-events.sh in the router: an ASSURED TCP stream to its port is offloaded from conntrack events (no --iif: the route's device) and deleted when it closes; a stream to another port is never touched; ctoffloadctl answers every operation"

PORT=5001

# recipe_sent OP ID: the recipe logged that it sent OP (add/del) for
# transfer ID.
recipe_sent() {
  grep -q -- "^> $1 --proto tcp --src $(src_ep "$2") --dst $(dst_ep "$2")\( \|$\)" "$S/recipe.err"
}

# answered N: ctoffloadctl's answer to the recipe's Nth operation is "ok".
answered() { grep -qx "line $1: ok" "$S/recipe.out"; }

# recipe_state: what a failure message needs: the recipe's output and the
# events the kernel sent (a second conntrack -E, unfiltered).
recipe_state() {
  printf 'recipe stderr: %s; stdout: %s; events on port %s: %s' "$(tail -c 400 "$S/recipe.err")" \
    "$(tail -c 200 "$S/recipe.out")" "$PORT" "$(grep "dport=$PORT " "$S/events" | tail -n 6)"
}

scenario() {
  local recipe=$root/docs/examples/offload-from-events.sh
  [[ -x $recipe ]] || fail "$recipe is missing or not executable"
  command -v awk >/dev/null || fail "awk is missing (the recipe needs it)"
  topo_basic

  # Every event the kernel sends, for the failure messages.
  bg timeout 200 ip netns exec "${NSP}r" conntrack -E -o timestamp >"$S/events" 2>&1
  wait_for 20 "a conntrack -E listening in the router" ct_events_listening
  local listeners
  listeners=$(ct_event_listeners)
  bg timeout 200 ip netns exec "${NSP}r" "$recipe" --ctl "$CTL" "$PORT" >"$S/recipe.out" 2>"$S/recipe.err"
  local timeout_pid=$BG_PID
  # The recipe's conntrack -E must be subscribed before the handshake it
  # has to see.
  wait_for 20 "the recipe's conntrack -E listening in the router" more_listeners "$listeners"
  log "recipe running, conntrack -E subscribed"

  # a: to the recipe's port; b: the same path, another port.
  xfer_start a tcp c "$C4" 40001 "$S4" "$PORT" s
  xfer_start b tcp c "$C4" 40002 "$S4" 5002 s
  xfer_send a 65536
  xfer_send b 65536
  poll_until 20 recipe_sent add a || fail "the recipe sent no add for a within 20s; $(recipe_state)"
  poll_until 10 answered 1 ||
    fail "ctoffloadctl did not answer the add of a within 10s while its input stays open; $(recipe_state)"
  log "recipe: add of a sent and answered"

  xfer_send a 262144
  xfer_send b 262144
  expect_offloaded a
  expect_not_offloaded b
  local n
  n=$(prov_elements)
  ((n == 1)) || fail "expected 1 selection element (a's) in table inet $PTABLE, found $n"
  ctl_show
  local c
  c=$(show_conn a)
  jq -e '.offloaded and .iif == "r-c" and .reply_iif == "r-s" and .mode == "sw"' <<<"$c" >/dev/null ||
    fail "show -j entry of a is wrong or missing (the route towards the client is r-c): ${c:-$SHOW}"
  [[ -z $(show_conn b) ]] || fail "show -j lists b, which the recipe must leave alone: $SHOW"

  # The close: the first FIN is a closing state, and the recipe deletes.
  xfer_finish a
  poll_until 20 recipe_sent del a || fail "the recipe sent no del for a within 20s of its close; $(recipe_state)"
  poll_until 10 answered 2 || fail "ctoffloadctl did not answer the del of a within 10s; $(recipe_state)"
  n=$(prov_elements)
  ((n == 0)) || fail "$n selection elements left after a closed (expected 0)"
  poll_until 5 no_off a || fail "a is still offloaded after its close: $(ct_of a)"
  log "a closed: del sent and answered, no element left"

  xfer_send b 65536
  expect_not_offloaded b
  xfer_finish b
  ! grep -q -- ":40002 " "$S/recipe.err" || fail "the recipe acted on b: $(grep -- ":40002 " "$S/recipe.err")"

  # Stopping the script (not its process group): conntrack -E ends, and
  # ctoffloadctl answers what it has and prints its summary.
  local script
  script=$(child_of "$timeout_pid")
  [[ -n $script ]] || fail "cannot find the recipe's process under timeout ($timeout_pid)"
  kill -TERM "$script"
  wait_pid "$timeout_pid" 15 || fail "the recipe did not end within 15s of SIGTERM"
  local sent answers
  sent=$(grep -c '^> ' "$S/recipe.err" || true)
  answers=$(grep -c '^line [0-9]*: ok$' "$S/recipe.out" || true)
  ((sent == 2 && answers == 2)) || fail "the recipe sent $sent operations and got $answers ok answers (expected 2 and 2): $(cat "$S/recipe.out")"
  grep -qx "2 ok, 0 failed" "$S/recipe.out" || fail "no summary from the recipe's ctoffloadctl: $(cat "$S/recipe.out")"
  log "recipe stopped: $(tail -1 "$S/recipe.out")"
}
