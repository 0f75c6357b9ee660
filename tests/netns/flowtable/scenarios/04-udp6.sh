# UDP over IPv6.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="UDP/IPv6 (echoed) offloaded, data intact"

scenario() {
  topo_basic
  roundtrip udp "$C6" "$S6"
}
