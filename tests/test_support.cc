// test_support.cc - shared helpers for the unit tests.
#include "test_support.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdexcept>

namespace ctoffload::testing {

Conn tcp4(const char* src, uint16_t sport, const char* dst, uint16_t dport, uint16_t zone) {
  Conn c{};
  c.family = AF_INET;
  c.proto = IPPROTO_TCP;
  c.zone = zone;
  if (inet_pton(AF_INET, src, c.orig.src.bytes) != 1 || inet_pton(AF_INET, dst, c.orig.dst.bytes) != 1) {
    throw std::invalid_argument("bad test address");
  }
  c.orig.src_port = sport;
  c.orig.dst_port = dport;
  ct_offload_conn_mirror_reply(&c);
  return c;
}

Conn udp6(const char* src, uint16_t sport, const char* dst, uint16_t dport, uint16_t zone) {
  Conn c{};
  c.family = AF_INET6;
  c.proto = IPPROTO_UDP;
  c.zone = zone;
  if (inet_pton(AF_INET6, src, c.orig.src.bytes) != 1 || inet_pton(AF_INET6, dst, c.orig.dst.bytes) != 1) {
    throw std::invalid_argument("bad test address");
  }
  c.orig.src_port = sport;
  c.orig.dst_port = dport;
  ct_offload_conn_mirror_reply(&c);
  return c;
}

Ctx ctx_of(const Conn& c, const Netdev* dev) {
  Ctx ctx{};
  ctx.conn = &c;
  ctx.netdev_in = dev;
  ctx.input_port_id = 1;
  return ctx;
}

}  // namespace ctoffload::testing
