// test_support.h - shared helpers for the unit tests.
#pragma once

#include <cstdint>

#include "ctoffload/conn.h"

namespace ctoffload::testing {

// A TCP/IPv4 connection without NAT.
Conn tcp4(const char* src, uint16_t sport, const char* dst, uint16_t dport, uint16_t zone = 0);
// A UDP/IPv6 connection without NAT.
Conn udp6(const char* src, uint16_t sport, const char* dst, uint16_t dport, uint16_t zone = 0);
// A context for 'c' arriving on 'dev' (may be null), input port 1.
Ctx ctx_of(const Conn& c, const Netdev* dev = nullptr);

}  // namespace ctoffload::testing
