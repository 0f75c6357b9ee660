// conn_check.h - what makes a connection valid, written once: the
// predicates validate() (conn.cc) names in its errors, and conn_valid(),
// its accepting path, inlined where it runs on every conn_add (the
// registry's boundary).
//
// conn_valid() says yes exactly when validate() (conn.h) accepts the
// connection: TCP or UDP, IPv4 or IPv6, four non-zero ports, and four
// addresses that are neither unspecified nor multicast nor (IPv4) the
// broadcast address, IPv4 ones with zero bytes after the first four.  It
// builds no Status and calls nothing out of line.  When it says no,
// validate() says which check failed.  Side by side with the build before
// it, dispatch measured no faster (docs/BENCHMARKS.md, issue 18's
// section): the registry's time goes elsewhere (mark_added, the loop).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>

#include "ctoffload/conn.h"

namespace ctoffload::check {

// An IPv4 address has nothing after its first four bytes.
__attribute__((always_inline)) inline bool v4_clean(const Addr& a) {
  return a.words[1] == 0 && a.words[2] == 0 && a.words[3] == 0;
}

// 0.0.0.0 or ::.
__attribute__((always_inline)) inline bool unspecified(uint8_t family, const Addr& a) {
  if (family == AF_INET) return a.words[0] == 0;
  return a.words[0] == 0 && a.words[1] == 0 && a.words[2] == 0 && a.words[3] == 0;
}

// 224.0.0.0/4 or 255.255.255.255; ff00::/8.
__attribute__((always_inline)) inline bool multicast_or_broadcast(uint8_t family, const Addr& a) {
  if (family == AF_INET) return (a.bytes[0] & 0xf0) == 0xe0 || a.words[0] == 0xffffffffu;
  return a.bytes[0] == 0xff;
}

__attribute__((always_inline)) inline bool addr_ok(uint8_t family, const Addr& a) {
  return (family != AF_INET || v4_clean(a)) && !unspecified(family, a) && !multicast_or_broadcast(family, a);
}

__attribute__((always_inline)) inline bool tuple_ok(uint8_t family, const Tuple& t) {
  return addr_ok(family, t.src) && addr_ok(family, t.dst) && t.src_port != 0 && t.dst_port != 0;
}

__attribute__((always_inline)) inline bool conn_valid(const Conn& c) {
  return (c.family == AF_INET || c.family == AF_INET6) && (c.proto == IPPROTO_TCP || c.proto == IPPROTO_UDP) &&
         tuple_ok(c.family, c.orig) && tuple_ok(c.family, c.reply);
}

}  // namespace ctoffload::check
