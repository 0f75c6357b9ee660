# NAT: connections under SNAT (masquerade) and DNAT (port forward) are
# offloaded when given with their reply tuple, and the data arrive intact.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="SNAT (masquerade, TCP/IPv4) and DNAT port forwards (TCP/IPv4, UDP/IPv6) offloaded with the reply tuple conntrack shows, data intact"

# nat_reply ID: "SRC SPORT DST DPORT" of ID's reply tuple, from conntrack.
nat_reply() { ct_reply "$(ct_of "$1")"; }

declare -A NAT_RSRC NAT_RDST

# add_nat ID: gives ID with --reply-src/--reply-dst as conntrack shows them;
# fails if conntrack shows no NAT at all (the reply is the mirror).
add_nat() {
  local id=$1 rs rsp rd rdp t
  read -r rs rsp rd rdp <<<"$(nat_reply "$id")"
  [[ -n $rdp ]] || fail "$id: no reply tuple in conntrack: $(ct_of "$id")"
  read -ra t <<<"${XTUP[$id]}"
  if [[ $rs == "${t[3]}" && $rsp == "${t[4]}" && $rd == "${t[1]}" && $rdp == "${t[2]}" ]]; then
    fail "$id: conntrack shows no NAT: $(ct_of "$id")"
  fi
  log "$id: reply tuple $(ep "$rs" "$rsp") -> $(ep "$rd" "$rdp")"
  NAT_RSRC[$id]=$(ep "$rs" "$rsp")
  NAT_RDST[$id]=$(ep "$rd" "$rdp")
  add_flow "$id" r-c --reply-src "$(ep "$rs" "$rsp")" --reply-dst "$(ep "$rd" "$rdp")"
}

scenario() {
  topo_basic
  rx nft -f - <<EOT || fail "cannot load the NAT rules"
table inet fttest_nat {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "r-c" ip daddr $R4C tcp dport 8080 dnat ip to $S4:5002
    iifname "r-c" ip6 daddr $R6C udp dport 8081 dnat ip6 to [$S6]:5003
  }
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "r-s" ip daddr $S4 tcp dport 5001 masquerade
  }
}
EOT
  # s: masqueraded; d: DNAT to S4:5002; u: DNAT to [S6]:5003.
  xfer_start s tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start d tcp c "$C4" 40002 "$R4C" 8080 s 5002
  xfer_start u udp c "$C6" 40003 "$R6C" 8081 s 5003
  xfer_send s 32768
  xfer_send d 32768
  xfer_send u 32768
  add_nat s
  add_nat d
  add_nat u
  xfer_send s 262144
  xfer_send d 262144
  xfer_send u 65536
  expect_offloaded s
  expect_offloaded d
  expect_offloaded u
  # The reply tuples the provider holds are the NAT-ed ones.
  ctl_show
  local c id
  for id in s d u; do
    c=$(show_conn "$id")
    jq -e --arg rs "${NAT_RSRC[$id]}" --arg rd "${NAT_RDST[$id]}" \
      '.offloaded and .reply_src == $rs and .reply_dst == $rd and .reply_iif == "r-s"' <<<"$c" >/dev/null ||
      fail "show -j entry of $id lacks its NAT reply tuple ${NAT_RSRC[$id]} -> ${NAT_RDST[$id]}: ${c:-$SHOW}"
  done
  # The masqueraded connection reached the server from the router's address.
  [[ ${NAT_RDST[s]} == "$R4S:"* ]] || fail "s: reply goes to ${NAT_RDST[s]}, not the router's $R4S"
  [[ ${NAT_RSRC[d]} == "$S4:5002" ]] || fail "d: reply comes from ${NAT_RSRC[d]}, not $S4:5002"
  xfer_send s 262144
  xfer_send d 262144
  xfer_send u 65536
  xfer_finish s
  xfer_finish d
  xfer_finish u
}
