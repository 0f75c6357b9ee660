# UDP over IPv4.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="UDP/IPv4 (echoed, so both directions carry data) offloaded, data intact"

scenario() {
  topo_basic
  roundtrip udp "$C4" "$S4"
}
