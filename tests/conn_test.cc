// conn_test.cc - parsing, formatting and validation of the connection model.
#include "ctoffload/conn.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>
#include <vector>

#include "conn_check.h"
#include "test_support.h"

namespace ctoffload {
namespace {

Endpoint ep(const char* text) {
  auto r = parse_endpoint(text);
  EXPECT_TRUE(r.ok()) << text << ": " << r.message();
  return r.ok() ? *r : Endpoint{};
}

TEST(ConnParse, Ipv4EndpointRoundTrips) {
  auto r = parse_endpoint("10.0.0.1:80");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->family, AF_INET);
  EXPECT_EQ(r->port, 80);
  EXPECT_EQ(r->addr.bytes[0], 10);
  EXPECT_EQ(r->addr.bytes[3], 1);
  EXPECT_EQ(r->addr.words[1], 0u);
  EXPECT_EQ(format_endpoint(*r), "10.0.0.1:80");
}

TEST(ConnParse, Ipv6EndpointNeedsBracketsAndRoundTrips) {
  auto r = parse_endpoint("[fd00::1]:443");
  ASSERT_TRUE(r.ok()) << r.message();
  EXPECT_EQ(r->family, AF_INET6);
  EXPECT_EQ(r->port, 443);
  EXPECT_EQ(format_endpoint(*r), "[fd00::1]:443");

  auto bare = parse_endpoint("fd00::1:443");
  EXPECT_EQ(bare.err(), EINVAL);
  EXPECT_NE(bare.message().find("brackets"), std::string::npos) << bare.message();
}

TEST(ConnParse, BadEndpointsNameTheProblem) {
  struct Case {
    const char* text;
    const char* says;
  } cases[] = {
      {"", "empty"},
      {"10.0.0.1", "missing ':PORT'"},
      {"10.0.0.1:", "missing port"},
      {"10.0.0.1:65536", "bad port"},
      {"10.0.0.1:-1", "bad port"},
      {"10.0.0.1:8o", "bad port"},
      {"10.0.0.256:80", "bad address"},
      {"host.example:80", "bad address"},
      {"[fd00::1:80", "missing ']'"},
      {"[fd00::1]80", "missing ':PORT'"},
      {"[10.0.0.1]:80", "bad IPv6"},
      {"[fd00::zz]:80", "bad IPv6"},
  };
  for (const auto& c : cases) {
    auto r = parse_endpoint(c.text);
    EXPECT_EQ(r.err(), EINVAL) << c.text;
    EXPECT_NE(r.message().find(c.says), std::string::npos) << c.text << " -> " << r.message();
  }
}

TEST(ConnParse, ProtocolsOtherThanTcpUdpAreRefused) {
  EXPECT_EQ(*parse_proto("tcp"), IPPROTO_TCP);
  EXPECT_EQ(*parse_proto("udp"), IPPROTO_UDP);
  EXPECT_EQ(*parse_proto("17"), IPPROTO_UDP);
  EXPECT_EQ(parse_proto("icmp").err(), EPROTONOSUPPORT);
  EXPECT_EQ(parse_proto("").err(), EPROTONOSUPPORT);
}

TEST(ConnMake, WithoutReplyTheReplyIsTheMirror) {
  auto c = make_conn(IPPROTO_TCP, ep("10.0.0.1:1234"), ep("10.0.0.2:80"));
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_EQ(format_endpoint(c->family, c->reply.src, c->reply.src_port), "10.0.0.2:80");
  EXPECT_EQ(format_endpoint(c->family, c->reply.dst, c->reply.dst_port), "10.0.0.1:1234");
  EXPECT_FALSE(is_natted(*c));
}

TEST(ConnMake, DnatReplyTupleIsKept) {
  // A port-forward: the client talks to 192.0.2.1:80, the server is 10.0.0.2:8080.
  auto c = make_conn(IPPROTO_TCP, ep("198.51.100.7:40000"), ep("192.0.2.1:80"), ep("10.0.0.2:8080"),
                     ep("198.51.100.7:40000"), 3, 0x10);
  ASSERT_TRUE(c.ok()) << c.message();
  EXPECT_TRUE(is_natted(*c));
  EXPECT_EQ(c->zone, 3);
  EXPECT_EQ(c->mark, 0x10u);
  EXPECT_EQ(format_conn(*c), "tcp 198.51.100.7:40000 -> 192.0.2.1:80 zone 3 reply 10.0.0.2:8080 -> 198.51.100.7:40000");
}

TEST(ConnMake, MixedFamiliesAreRefused) {
  auto c = make_conn(IPPROTO_TCP, ep("10.0.0.1:1"), ep("[fd00::2]:80"));
  EXPECT_EQ(c.err(), EINVAL);
  EXPECT_NE(c.message().find("mixed address families"), std::string::npos);
  auto r = make_conn(IPPROTO_TCP, ep("10.0.0.1:1"), ep("10.0.0.2:80"), ep("[fd00::2]:80"), ep("[fd00::1]:1"));
  EXPECT_EQ(r.err(), EINVAL);
  EXPECT_NE(r.message().find("reply tuple"), std::string::npos);
}

TEST(ConnMake, ReplyEndpointsComeTogether) {
  auto c = make_conn(IPPROTO_UDP, ep("10.0.0.1:1"), ep("10.0.0.2:53"), ep("10.0.0.2:53"), std::nullopt);
  EXPECT_EQ(c.err(), EINVAL);
}

TEST(ConnMake, ZeroPortsOnTcpAndUdpAreRefused) {
  auto c = make_conn(IPPROTO_TCP, ep("10.0.0.1:0"), ep("10.0.0.2:80"));
  EXPECT_EQ(c.err(), EINVAL);
  EXPECT_NE(c.message().find("original source port is 0"), std::string::npos) << c.message();
  auto u = make_conn(IPPROTO_UDP, ep("10.0.0.1:5"), ep("10.0.0.2:0"));
  EXPECT_EQ(u.err(), EINVAL);
  EXPECT_NE(u.message().find("destination port is 0"), std::string::npos) << u.message();
}

TEST(ConnMake, UnknownProtocolIsEprotonosupport) {
  auto c = make_conn(IPPROTO_SCTP, ep("10.0.0.1:1"), ep("10.0.0.2:80"));
  EXPECT_EQ(c.err(), EPROTONOSUPPORT);
}

TEST(ConnValidate, UnspecifiedMulticastAndBroadcastAreRefused) {
  EXPECT_EQ(make_conn(IPPROTO_TCP, ep("0.0.0.0:1"), ep("10.0.0.2:80")).err(), EINVAL);
  EXPECT_EQ(make_conn(IPPROTO_UDP, ep("10.0.0.1:1"), ep("224.0.0.1:80")).err(), EINVAL);
  EXPECT_EQ(make_conn(IPPROTO_UDP, ep("10.0.0.1:1"), ep("255.255.255.255:80")).err(), EINVAL);
  EXPECT_EQ(make_conn(IPPROTO_UDP, ep("[::]:1"), ep("[fd00::2]:80")).err(), EINVAL);
  EXPECT_EQ(make_conn(IPPROTO_UDP, ep("[fd00::1]:1"), ep("[ff02::1]:80")).err(), EINVAL);
}

TEST(ConnValidate, HandBuiltConnectionsAreChecked) {
  Conn c = testing::tcp4("10.0.0.1", 1, "10.0.0.2", 80);
  EXPECT_TRUE(validate(c).ok());
  Conn bad_family = c;
  bad_family.family = 99;
  EXPECT_EQ(validate(bad_family).err(), EINVAL);
  Conn stray = c;
  stray.orig.src.bytes[7] = 1;  // IPv4 with garbage after the first four bytes.
  EXPECT_EQ(validate(stray).err(), EINVAL);
  EXPECT_NE(validate(stray).message().find("non-zero bytes"), std::string::npos);
  Conn zero_reply = c;
  zero_reply.reply.src_port = 0;
  EXPECT_EQ(validate(zero_reply).err(), EINVAL);
  EXPECT_NE(validate(zero_reply).message().find("reply source port"), std::string::npos);
}

// check::conn_valid() (the registry's inlined boundary) says yes exactly
// when validate() does: on valid connections and on each kind of invalid one,
// in the original and in the reply direction.
void expect_agree(const Conn& c, bool valid, const char* what) {
  EXPECT_EQ(validate(c).ok(), valid) << what << ": " << validate(c).message();
  EXPECT_EQ(check::conn_valid(c), valid) << what;
}

std::vector<Tuple*> tuples(Conn& c) { return {&c.orig, &c.reply}; }

TEST(ConnValidate, InlinedCheckAgreesWithValidate) {
  const Conn bases[] = {testing::tcp4("10.0.0.1", 1, "10.0.0.2", 80), testing::udp6("fd00::1", 5353, "fd00::2", 53)};
  for (const Conn& base : bases) {
    const bool v4 = base.family == AF_INET;
    expect_agree(base, true, "valid");
    for (uint8_t proto : {uint8_t{IPPROTO_TCP}, uint8_t{IPPROTO_UDP}}) {
      Conn c = base;
      c.proto = proto;
      expect_agree(c, true, "tcp or udp");
    }
    for (uint8_t proto : {uint8_t{0}, uint8_t{IPPROTO_ICMP}, uint8_t{IPPROTO_SCTP}, uint8_t{255}}) {
      Conn c = base;
      c.proto = proto;
      expect_agree(c, false, "protocol");
    }
    for (uint8_t family : {uint8_t{0}, uint8_t{AF_UNIX}, uint8_t{99}, uint8_t{255}}) {
      Conn c = base;
      c.family = family;
      expect_agree(c, false, "family");
    }
    for (int t = 0; t < 2; ++t) {
      for (int end = 0; end < 2; ++end) {
        {
          Conn c = base;
          Tuple* tp = tuples(c)[t];
          (end ? tp->dst_port : tp->src_port) = 0;
          expect_agree(c, false, "zero port");
        }
        auto with_addr = [&](void (*set)(Addr&), bool valid, const char* what) {
          Conn c = base;
          Tuple* tp = tuples(c)[t];
          set(end ? tp->dst : tp->src);
          expect_agree(c, valid, what);
        };
        with_addr([](Addr& a) { a = Addr{}; }, false, "unspecified");
        if (v4) {
          with_addr([](Addr& a) { a.words[0] = 0xffffffffu; }, false, "broadcast");
          for (int hi = 0xe0; hi <= 0xef; ++hi) {
            Conn c = base;
            Addr& a = end ? tuples(c)[t]->dst : tuples(c)[t]->src;
            a.bytes[0] = static_cast<uint8_t>(hi);
            expect_agree(c, false, "multicast");
          }
          for (int hi : {0x01, 0x7f, 0xdf, 0xf0, 0xfe}) {
            Conn c = base;
            Addr& a = end ? tuples(c)[t]->dst : tuples(c)[t]->src;
            a.bytes[0] = static_cast<uint8_t>(hi);
            expect_agree(c, true, "unicast first byte");
          }
          for (int byte = 4; byte < 16; ++byte) {
            Conn c = base;
            Addr& a = end ? tuples(c)[t]->dst : tuples(c)[t]->src;
            a.bytes[byte] = 1;
            expect_agree(c, false, "v4 with garbage");
          }
          with_addr([](Addr& a) { a.words[0] = htonl(1); }, true, "0.0.0.1");
          with_addr([](Addr& a) { a.words[0] = htonl(0xfffffffe); }, true, "255.255.255.254 is class E, not broadcast");
        } else {
          with_addr([](Addr& a) { a.bytes[0] = 0xff; }, false, "multicast");
          with_addr([](Addr& a) { a.bytes[0] = 0xfe; }, true, "fe..");
          with_addr(
              [](Addr& a) {
                a = Addr{};
                a.bytes[15] = 1;
              },
              true, "::1");
          with_addr(
              [](Addr& a) {
                a = Addr{};
                a.bytes[0] = 1;
              },
              true, "100::");
        }
      }
    }
  }
}

TEST(ConnCApi, ParseFormatValidateThroughTheCApi) {
  uint8_t family = 0;
  ct_offload_addr addr{};
  uint16_t port = 0;
  ASSERT_EQ(ct_offload_endpoint_parse("[fd00::5]:8080", &family, &addr, &port), 0);
  EXPECT_EQ(family, AF_INET6);
  EXPECT_EQ(port, 8080);
  char buf[64];
  EXPECT_EQ(ct_offload_endpoint_format(family, &addr, port, buf, sizeof buf), 14);
  EXPECT_STREQ(buf, "[fd00::5]:8080");
  char tiny[5];
  EXPECT_EQ(ct_offload_endpoint_format(family, &addr, port, tiny, sizeof tiny), 14);
  EXPECT_STREQ(tiny, "[fd0");  // Truncated but terminated, like snprintf.

  EXPECT_EQ(ct_offload_endpoint_parse("nonsense", &family, &addr, &port), EINVAL);
  EXPECT_NE(std::strstr(ct_offload_last_error(), "nonsense"), nullptr) << ct_offload_last_error();
  EXPECT_EQ(ct_offload_endpoint_parse(nullptr, &family, &addr, &port), EINVAL);

  Conn c = testing::udp6("fd00::1", 5353, "fd00::2", 53);
  EXPECT_EQ(ct_offload_conn_validate(&c), 0);
  c.proto = 1;
  EXPECT_EQ(ct_offload_conn_validate(&c), EPROTONOSUPPORT);
  EXPECT_EQ(ct_offload_conn_validate(nullptr), EINVAL);
}

TEST(ConnHash, DiffersByZoneAndDirection) {
  Conn c = testing::tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  EXPECT_NE(hash_tuple(c.family, c.proto, 0, c.orig), hash_tuple(c.family, c.proto, 1, c.orig));
  EXPECT_NE(hash_tuple(c.family, c.proto, 0, c.orig), hash_tuple(c.family, c.proto, 0, c.reply));
  EXPECT_EQ(hash_tuple(c.family, c.proto, 0, c.orig), hash_tuple(c.family, c.proto, 0, mirror(c.reply)));
}

TEST(ConnNetdev, LongNamesAreRefused) {
  EXPECT_TRUE(make_netdev("veth0", 3).ok());
  EXPECT_EQ(make_netdev("a-name-longer-than-ifnamsiz", 3).err(), EINVAL);
  EXPECT_EQ(make_netdev("eth0", -1).err(), EINVAL);
}

TEST(ConnNetdev, NamesNoDeviceCanHaveAreRefused) {
  using namespace std::string_view_literals;
  EXPECT_TRUE(make_netdev("veth-a_1.2").ok());
  EXPECT_TRUE(make_netdev("").ok()) << "empty means unset";
  for (std::string_view bad : {"a\0b"sv, "\0"sv, "eth 0"sv, "eth\t0"sv, "a/b"sv, "a:b"sv, "."sv, ".."sv, "a\x7f"sv}) {
    auto d = make_netdev(bad);
    EXPECT_EQ(d.err(), EINVAL) << "accepted a device name of " << bad.size() << " bytes";
  }
}

}  // namespace
}  // namespace ctoffload
