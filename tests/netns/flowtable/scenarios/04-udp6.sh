# UDP over IPv6.
DESC="UDP/IPv6 (echoed) offloaded, data intact"

scenario() {
  topo_basic
  roundtrip udp "$C6" "$S6"
}
