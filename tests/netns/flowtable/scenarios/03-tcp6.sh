# TCP over IPv6.
DESC="TCP/IPv6 offloaded, data intact"

scenario() {
  topo_basic
  roundtrip tcp "$C6" "$S6"
}
