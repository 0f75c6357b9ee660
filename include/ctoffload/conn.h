// conn.h - the connection model for C++ callers and providers.
//
// The C structs of ct-offload.h are the model: C++ uses them directly (no
// copy, no conversion on the dispatch path) and gets here the parsing,
// formatting, validation, comparison and hashing around them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "ctoffload/ct-offload.h"
#include "ctoffload/result.h"

namespace ctoffload {

using Conn = ::ct_offload_conn;
using Tuple = ::ct_offload_tuple;
using Addr = ::ct_offload_addr;
using Netdev = ::ct_offload_netdev;
using Ctx = ::ct_offload_ctx;

// An address with its port, as humans write it: "10.0.0.1:80",
// "[fd00::1]:80".
struct Endpoint {
  uint8_t family = 0;  // AF_INET or AF_INET6.
  Addr addr{};
  uint16_t port = 0;
};

// Parses "10.0.0.1:80" or "[fd00::1]:80".  EINVAL names what is wrong (a
// bad address, a missing or out-of-range port, an IPv6 address without
// brackets).
Result<Endpoint> parse_endpoint(std::string_view text);

// Parses a bare address ("10.0.0.1", "fd00::1").
Result<Endpoint> parse_address(std::string_view text);

// "10.0.0.1:80" / "[fd00::1]:80".
std::string format_endpoint(uint8_t family, const Addr& addr, uint16_t port);
std::string format_endpoint(const Endpoint& ep);
// "10.0.0.1" / "fd00::1".
std::string format_address(uint8_t family, const Addr& addr);

// Parses "tcp"/"udp" (or a protocol number, 6 or 17) into an IPPROTO_*.
// EPROTONOSUPPORT for anything else.
Result<uint8_t> parse_proto(std::string_view text);
// "tcp", "udp", or the number.
std::string proto_name(uint8_t proto);

// Builds a validated connection.  Without 'reply_src'/'reply_dst' the reply
// tuple is the mirror of the original; with them (both required together)
// it is what conntrack shows under NAT.  Errors: EINVAL for mixed families,
// zero ports on TCP/UDP, unspecified or multicast addresses;
// EPROTONOSUPPORT for protocols other than TCP and UDP.
Result<Conn> make_conn(uint8_t proto, const Endpoint& src, const Endpoint& dst,
                       const std::optional<Endpoint>& reply_src = std::nullopt,
                       const std::optional<Endpoint>& reply_dst = std::nullopt, uint16_t zone = 0, uint32_t mark = 0);

// Checks a connection built by other means (the C API); see make_conn().
Status validate(const Conn& conn);

// The reply tuple a connection without NAT has.
Tuple mirror(const Tuple& t);

// True when the reply tuple differs from the mirror of the original.
bool is_natted(const Conn& conn);

// "tcp 10.0.0.1:1234 -> 10.0.0.2:80 zone 0" plus " reply 10.0.0.2:80 ->
// 192.0.2.1:4000" when NATed.
std::string format_conn(const Conn& conn);

// Makes a Netdev from a name and ifindex; EINVAL when the name does not fit
// IFNAMSIZ.
Result<Netdev> make_netdev(std::string_view name, int ifindex = 0);

// Field-wise equality of everything that identifies a connection: family,
// protocol, zone, both tuples.  The mark is not part of the identity.
bool same_conn(const Conn& a, const Conn& b);
bool same_tuple(const Tuple& a, const Tuple& b);

// Hash of a tuple plus family, protocol and zone, for exact-match tables.
uint64_t hash_tuple(uint8_t family, uint8_t proto, uint16_t zone, const Tuple& t);

}  // namespace ctoffload
