// conn_check.h - validate()'s accepting path, inlined where it runs on every
// conn_add (the registry's boundary) and used by validate() itself, so the
// rule is written once.
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

// Not 0.0.0.0, not 255.255.255.255, not 224.0.0.0/4, nothing after the
// first four bytes.
__attribute__((always_inline)) inline bool addr4_ok(const Addr& a) {
  const uint32_t w = a.words[0];
  const bool clean = (a.words[1] | a.words[2] | a.words[3]) == 0;
  const bool specified_not_broadcast = static_cast<uint32_t>(w + 1) > 1;  // w != 0 && w != ~0.
  const bool not_multicast = static_cast<uint8_t>(a.bytes[0] - 0xe0) >= 0x10;
  return clean && specified_not_broadcast && not_multicast;
}

// Not ::, not ff00::/8.
__attribute__((always_inline)) inline bool addr6_ok(const Addr& a) {
  const bool specified = (a.words[0] | a.words[1] | a.words[2] | a.words[3]) != 0;
  return specified && a.bytes[0] != 0xff;
}

__attribute__((always_inline)) inline bool ports_ok(const Tuple& t) { return t.src_port != 0 && t.dst_port != 0; }

__attribute__((always_inline)) inline bool conn_valid(const Conn& c) {
  const bool proto = c.proto == IPPROTO_TCP || c.proto == IPPROTO_UDP;
  const bool ports = ports_ok(c.orig) && ports_ok(c.reply);
  if (c.family == AF_INET) {
    return proto && ports && addr4_ok(c.orig.src) && addr4_ok(c.orig.dst) && addr4_ok(c.reply.src) &&
           addr4_ok(c.reply.dst);
  }
  if (c.family == AF_INET6) {
    return proto && ports && addr6_ok(c.orig.src) && addr6_ok(c.orig.dst) && addr6_ok(c.reply.src) &&
           addr6_ok(c.reply.dst);
  }
  return false;
}

}  // namespace ctoffload::check
