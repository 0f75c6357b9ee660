# UDP over IPv4.
DESC="UDP/IPv4 (echoed, so both directions carry data) offloaded, data intact"

scenario() {
  topo_basic
  roundtrip udp "$C4" "$S4"
}
