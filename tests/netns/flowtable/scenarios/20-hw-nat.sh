# NAT in hardware: the NIC rewrites addresses and ports and fixes checksums.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="Masquerade (TCP/IPv4) and DNAT port forwards (TCP/IPv4, UDP/IPv6) in hardware: [HW_OFFLOAD], the NIC does the rewrites; checksums are computed in full by the ends (tx offload off), and the receivers count no checksum error; data intact"

# csum_errors NS: InCsumErrors of TCP, UDP and UDP6 in namespace NS, summed.
csum_errors() {
  in_ns "$1" cat /proc/net/snmp /proc/net/snmp6 | awk '
    /^Tcp: / { if (!th) { for (i = 1; i <= NF; i++) h[i] = $i; th = 1; next } for (i = 1; i <= NF; i++) if (h[i] == "InCsumErrors") s += $i }
    /^Udp: / { if (!uh) { for (i = 1; i <= NF; i++) g[i] = $i; uh = 1; next } for (i = 1; i <= NF; i++) if (g[i] == "InCsumErrors") s += $i }
    $1 == "Udp6InCsumErrors" { s += $2 }
    END { print s + 0 }'
}

add_nat() {
  local id=$1 rs rsp rd rdp
  read -r rs rsp rd rdp <<<"$(ct_reply "$(ct_of "$id")")"
  [[ -n $rdp ]] || fail "$id: no reply tuple in conntrack: $(ct_of "$id")"
  log "$id: reply tuple $(ep "$rs" "$rsp") -> $(ep "$rd" "$rdp")"
  add_flow "$id" r-c --reply-src "$(ep "$rs" "$rsp")" --reply-dst "$(ep "$rd" "$rdp")"
}

scenario() {
  topo_hw
  # The ends compute every checksum themselves (no CHECKSUM_PARTIAL, no
  # TSO): a wrong incremental update by the NIC is then a checksum error
  # at the receiver, not a packet the receiver trusts blindly.
  in_ns c ethtool -K c-r tx off >/dev/null || fail "ethtool -K c-r tx off"
  in_ns s ethtool -K s-r tx off >/dev/null || fail "ethtool -K s-r tx off"
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
  xfer_start m tcp c "$C4" 40001 "$S4" 5001 s
  xfer_start d tcp c "$C4" 40002 "$R4C" 8080 s 5002
  xfer_start u udp c "$C6" 40003 "$R6C" 8081 s 5003
  local id
  for id in m d u; do xfer_send "$id" 16384; done
  local e0c e0s
  e0c=$(csum_errors c)
  e0s=$(csum_errors s)
  for id in m d u; do add_nat "$id"; done
  for id in m d u; do xfer_send "$id" 16384; done
  for id in m d u; do expect_hw_offloaded "$id"; done
  poll_until 5 nic_rules_are 3 r-c r-s || fail "the NIC should hold 3 rules per port: r-c $(nic r-c rules), r-s $(nic r-s rules)"
  ctl_show
  for id in m d u; do
    jq -e '.mode == "hw" and .flowtable == "ft_hw"' <<<"$(show_conn "$id")" >/dev/null ||
      fail "show -j should say mode hw for $id: $(show_conn "$id")"
  done
  hw_path_check m 524288
  hw_path_check d 524288
  hw_path_check u 98304
  local e1c e1s
  e1c=$(csum_errors c)
  e1s=$(csum_errors s)
  log "checksum errors: client $e0c -> $e1c, server $e0s -> $e1s"
  ((e1c == e0c && e1s == e0s)) || fail "checksum errors after the NIC's rewrites: client $e0c -> $e1c, server $e0s -> $e1s"
  for id in m d u; do expect_hw_offloaded "$id" 1; done
  for id in m d u; do xfer_finish "$id"; done
}
