# TCP over IPv6.
# shellcheck disable=SC2034  # read by run.sh --list
DESC="TCP/IPv6 offloaded, data intact"

scenario() {
  topo_basic
  roundtrip tcp "$C6" "$S6"
}
