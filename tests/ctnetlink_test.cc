// ctnetlink_test.cc - the ctnetlink client without a kernel.
//
// Entry messages are built here with libmnl (an encoder independent of the
// libnl code under test), decoded with parse_ct_message() and checked field
// by field.  The client's request/reply logic runs against the tests'
// FakeKernel (support/fake_kernel.h): each test's handler answers the
// requests; the kernel reorders nothing, and can fail a receive with
// ENOBUFS in the middle of a dump.
#include "netlink/ctnetlink.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nf_conntrack_tcp.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "support/fake_kernel.h"
#include "test_support.h"

namespace ctoffload::netlink {
namespace {

using ctoffload::testing::FakeKernel;
using ctoffload::testing::tcp4;
using ctoffload::testing::udp6;

// ------------------------------------------------------------------------
// Building kernel messages
// ------------------------------------------------------------------------

// What one entry message carries; unset optionals are left out.
struct Spec {
  Conn conn{};
  uint32_t status = 0;
  bool send_zone = false;        // CTA_ZONE
  bool send_tuple_zone = false;  // CTA_TUPLE_ZONE in the original tuple instead
  bool send_mark = false;
  std::optional<CtCounters> orig_counters;
  std::optional<CtCounters> reply_counters;
  bool counters32 = false;
  uint32_t timeout = 0;
  uint32_t id = 0;
  std::optional<uint8_t> tcp_state;
  bool unknown_attrs = false;  // Sprinkle attributes no kernel sends today.
};

// 'zone' < 0 leaves CTA_TUPLE_ZONE out.
void put_tuple(nlmsghdr* nlh, uint16_t type, uint8_t family, uint8_t proto, const Tuple& t, int zone, bool unknown) {
  nlattr* tuple = mnl_attr_nest_start(nlh, type);
  nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
  if (family == AF_INET) {
    mnl_attr_put(nlh, CTA_IP_V4_SRC, 4, t.src.bytes);
    mnl_attr_put(nlh, CTA_IP_V4_DST, 4, t.dst.bytes);
  } else {
    mnl_attr_put(nlh, CTA_IP_V6_SRC, 16, t.src.bytes);
    mnl_attr_put(nlh, CTA_IP_V6_DST, 16, t.dst.bytes);
  }
  if (unknown) mnl_attr_put_u32(nlh, 77, 0xabcdef);
  mnl_attr_nest_end(nlh, ip);
  nlattr* p = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
  mnl_attr_put_u8(nlh, CTA_PROTO_NUM, proto);
  mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(t.src_port));
  mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(t.dst_port));
  if (unknown) mnl_attr_put_u64(nlh, 99, 1);
  mnl_attr_nest_end(nlh, p);
  if (zone >= 0) mnl_attr_put_u16(nlh, CTA_TUPLE_ZONE, htons(static_cast<uint16_t>(zone)));
  if (unknown) mnl_attr_put_strz(nlh, 42, "future");
  mnl_attr_nest_end(nlh, tuple);
}

void put_counters(nlmsghdr* nlh, uint16_t type, const CtCounters& c, bool c32) {
  nlattr* n = mnl_attr_nest_start(nlh, type);
  if (c32) {
    mnl_attr_put_u32(nlh, CTA_COUNTERS32_PACKETS, htonl(static_cast<uint32_t>(c.packets)));
    mnl_attr_put_u32(nlh, CTA_COUNTERS32_BYTES, htonl(static_cast<uint32_t>(c.bytes)));
  } else {
    mnl_attr_put_u64(nlh, CTA_COUNTERS_PACKETS, htobe64(c.packets));
    mnl_attr_put_u64(nlh, CTA_COUNTERS_BYTES, htobe64(c.bytes));
  }
  mnl_attr_nest_end(nlh, n);
}

std::vector<unsigned char> build_entry(const Spec& s, uint32_t seq = 0, uint16_t subtype = IPCTNL_MSG_CT_NEW) {
  std::vector<unsigned char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = static_cast<uint16_t>((NFNL_SUBSYS_CTNETLINK << 8) | subtype);
  nlh->nlmsg_flags = NLM_F_MULTI;
  nlh->nlmsg_seq = seq;
  auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  nfg->nfgen_family = s.conn.family;
  nfg->version = NFNETLINK_V0;
  nfg->res_id = 0;
  if (s.unknown_attrs) mnl_attr_put_u32(nlh, 250, 7);  // Beyond CTA_MAX.
  const int tz = s.send_tuple_zone ? s.conn.zone : -1;
  put_tuple(nlh, CTA_TUPLE_ORIG, s.conn.family, s.conn.proto, s.conn.orig, tz, s.unknown_attrs);
  put_tuple(nlh, CTA_TUPLE_REPLY, s.conn.family, s.conn.proto, s.conn.reply, -1, s.unknown_attrs);
  mnl_attr_put_u32(nlh, CTA_STATUS, htonl(s.status));
  mnl_attr_put_u32(nlh, CTA_TIMEOUT, htonl(s.timeout));
  if (s.send_mark) mnl_attr_put_u32(nlh, CTA_MARK, htonl(s.conn.mark));
  if (s.orig_counters) put_counters(nlh, CTA_COUNTERS_ORIG, *s.orig_counters, s.counters32);
  if (s.reply_counters) put_counters(nlh, CTA_COUNTERS_REPLY, *s.reply_counters, s.counters32);
  mnl_attr_put_u32(nlh, CTA_USE, htonl(1));
  mnl_attr_put_u32(nlh, CTA_ID, htonl(s.id));
  if (s.send_zone) mnl_attr_put_u16(nlh, CTA_ZONE, htons(s.conn.zone));
  if (s.tcp_state) {
    nlattr* pi = mnl_attr_nest_start(nlh, CTA_PROTOINFO);
    nlattr* tcp = mnl_attr_nest_start(nlh, CTA_PROTOINFO_TCP);
    mnl_attr_put_u8(nlh, CTA_PROTOINFO_TCP_STATE, *s.tcp_state);
    mnl_attr_put_u8(nlh, CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, 7);
    mnl_attr_nest_end(nlh, tcp);
    mnl_attr_nest_end(nlh, pi);
  }
  buf.resize(nlh->nlmsg_len);
  return buf;
}

// A NATed TCP/IPv4 connection: DNAT of 192.0.2.1:80 to 10.1.0.2:8080 and
// SNAT of 10.0.0.5:40000 to 198.51.100.1:61000.
Conn natted_tcp4() {
  Conn c = tcp4("10.0.0.5", 40000, "192.0.2.1", 80);
  inet_pton(AF_INET, "10.1.0.2", c.reply.src.bytes);
  inet_pton(AF_INET, "198.51.100.1", c.reply.dst.bytes);
  c.reply.src_port = 8080;
  c.reply.dst_port = 61000;
  return c;
}

CtEntry parse_ok(const std::vector<unsigned char>& msg) {
  CtEntry e;
  Status s = parse_ct_message(msg.data(), msg.size(), &e);
  EXPECT_TRUE(s.ok()) << s.to_string();
  return e;
}

void expect_same_tuple(const Tuple& a, const Tuple& b) {
  EXPECT_EQ(0, std::memcmp(a.src.bytes, b.src.bytes, 16));
  EXPECT_EQ(0, std::memcmp(a.dst.bytes, b.dst.bytes, 16));
  EXPECT_EQ(a.src_port, b.src_port);
  EXPECT_EQ(a.dst_port, b.dst_port);
}

// ------------------------------------------------------------------------
// Decoding entries
// ------------------------------------------------------------------------

TEST(CtParse, Ipv4TcpWithoutNatReadsEveryField) {
  Spec s;
  s.conn = tcp4("10.0.0.1", 1234, "10.0.0.2", 80);
  s.status = ct_status::kSeenReply | ct_status::kAssured | ct_status::kConfirmed;
  s.orig_counters = CtCounters{10, 1500};
  s.reply_counters = CtCounters{8, 64000};
  s.timeout = 431999;
  s.id = 0xdeadbeef;
  s.tcp_state = TCP_CONNTRACK_ESTABLISHED;
  CtEntry e = parse_ok(build_entry(s));

  EXPECT_EQ(e.conn.family, AF_INET);
  EXPECT_EQ(e.conn.proto, IPPROTO_TCP);
  EXPECT_EQ(e.conn.zone, 0);
  EXPECT_EQ(e.conn.mark, 0u);
  expect_same_tuple(e.conn.orig, s.conn.orig);
  expect_same_tuple(e.conn.reply, s.conn.reply);
  EXPECT_EQ(e.conn.orig.src_port, 1234);    // Host byte order.
  EXPECT_EQ(e.conn.orig.src.bytes[0], 10);  // Network byte order.
  EXPECT_EQ(e.conn.orig.src.bytes[3], 1);
  EXPECT_EQ(e.conn.orig.src.words[1], 0u);  // IPv4 uses the first 4 bytes only.
  EXPECT_EQ(e.status, ct_status::kSeenReply | ct_status::kAssured | ct_status::kConfirmed);
  ASSERT_TRUE(e.orig_counters.has_value());
  ASSERT_TRUE(e.reply_counters.has_value());
  EXPECT_EQ(e.orig_counters->packets, 10u);
  EXPECT_EQ(e.orig_counters->bytes, 1500u);
  EXPECT_EQ(e.reply_counters->packets, 8u);
  EXPECT_EQ(e.reply_counters->bytes, 64000u);
  EXPECT_TRUE(e.has_counters());
  EXPECT_EQ(e.timeout, 431999u);
  EXPECT_EQ(e.id, 0xdeadbeefu);
  EXPECT_EQ(e.tcp_state, TCP_CONNTRACK_ESTABLISHED);
  EXPECT_TRUE(same_conn(e.conn, s.conn));
}

TEST(CtParse, Ipv6UdpWithNatZoneAndMarkReadsEveryField) {
  Spec s;
  s.conn = udp6("fd00::1", 5353, "fd00::2", 53, 7);
  inet_pton(AF_INET6, "fd01::9", s.conn.reply.src.bytes);
  inet_pton(AF_INET6, "2001:db8::1", s.conn.reply.dst.bytes);
  s.conn.reply.src_port = 5300;
  s.conn.reply.dst_port = 61001;
  s.conn.mark = 0xdead0001;
  s.send_zone = true;
  s.send_mark = true;
  s.status = ct_status::kSrcNat | ct_status::kDstNat | ct_status::kConfirmed;
  s.orig_counters = CtCounters{1ull << 40, 1ull << 50};  // Beyond 32 bits.
  s.reply_counters = CtCounters{0, 0};
  s.timeout = 30;
  s.id = 17;
  CtEntry e = parse_ok(build_entry(s));

  EXPECT_EQ(e.conn.family, AF_INET6);
  EXPECT_EQ(e.conn.proto, IPPROTO_UDP);
  EXPECT_EQ(e.conn.zone, 7);
  EXPECT_EQ(e.conn.mark, 0xdead0001u);
  expect_same_tuple(e.conn.orig, s.conn.orig);
  expect_same_tuple(e.conn.reply, s.conn.reply);
  EXPECT_TRUE(is_natted(e.conn));
  EXPECT_EQ(e.status, ct_status::kSrcNat | ct_status::kDstNat | ct_status::kConfirmed);
  ASSERT_TRUE(e.orig_counters.has_value());
  EXPECT_EQ(e.orig_counters->packets, 1ull << 40);
  EXPECT_EQ(e.orig_counters->bytes, 1ull << 50);
  ASSERT_TRUE(e.reply_counters.has_value());  // Present and zero: measured, not unknown.
  EXPECT_EQ(e.reply_counters->packets, 0u);
  EXPECT_EQ(e.timeout, 30u);
  EXPECT_EQ(e.id, 17u);
  EXPECT_EQ(e.tcp_state, 0);
}

TEST(CtParse, Ipv4NatReplyTupleIsKeptAsSent) {
  Spec s;
  s.conn = natted_tcp4();
  s.status = ct_status::kSrcNat | ct_status::kDstNat;
  CtEntry e = parse_ok(build_entry(s));
  EXPECT_TRUE(same_conn(e.conn, s.conn));
  EXPECT_EQ(e.conn.reply.src_port, 8080);
  EXPECT_EQ(e.conn.reply.dst_port, 61000);
  EXPECT_EQ(format_address(AF_INET, e.conn.reply.src), "10.1.0.2");
  EXPECT_EQ(format_address(AF_INET, e.conn.reply.dst), "198.51.100.1");
}

TEST(CtParse, EntryWithoutCountersReportsThemUnknown) {
  Spec s;
  s.conn = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  CtEntry e = parse_ok(build_entry(s));
  EXPECT_FALSE(e.orig_counters.has_value());
  EXPECT_FALSE(e.reply_counters.has_value());
  EXPECT_FALSE(e.has_counters());
}

TEST(CtParse, ThirtyTwoBitCountersAreRead) {
  Spec s;
  s.conn = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  s.orig_counters = CtCounters{3, 300};
  s.reply_counters = CtCounters{4, 400};
  s.counters32 = true;
  CtEntry e = parse_ok(build_entry(s));
  ASSERT_TRUE(e.has_counters());
  EXPECT_EQ(e.orig_counters->packets, 3u);
  EXPECT_EQ(e.orig_counters->bytes, 300u);
  EXPECT_EQ(e.reply_counters->packets, 4u);
  EXPECT_EQ(e.reply_counters->bytes, 400u);
}

TEST(CtParse, OffloadStatusBitsAreReported) {
  Spec s;
  s.conn = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  s.status = ct_status::kAssured | ct_status::kConfirmed | ct_status::kOffload | ct_status::kHwOffload;
  CtEntry e = parse_ok(build_entry(s));
  EXPECT_EQ(e.status & ct_status::kOffload, ct_status::kOffload);
  EXPECT_EQ(e.status & ct_status::kHwOffload, ct_status::kHwOffload);
  EXPECT_EQ(ct_status::kOffload, 1u << 14);
  EXPECT_EQ(ct_status::kHwOffload, 1u << 15);
  EXPECT_EQ(format_ct_status(e.status), "ASSURED|CONFIRMED|OFFLOAD|HW_OFFLOAD");
}

TEST(CtParse, ZoneSetForOneDirectionIsReadFromTheTuple) {
  Spec s;
  s.conn = tcp4("10.0.0.1", 1, "10.0.0.2", 2, 300);
  s.send_tuple_zone = true;
  CtEntry e = parse_ok(build_entry(s));
  EXPECT_EQ(e.conn.zone, 300);
}

TEST(CtParse, UnknownAttributesAreIgnored) {
  Spec s;
  s.conn = natted_tcp4();
  s.conn.mark = 5;
  s.send_mark = true;
  s.orig_counters = CtCounters{1, 2};
  s.reply_counters = CtCounters{3, 4};
  s.tcp_state = TCP_CONNTRACK_SYN_SENT;
  s.unknown_attrs = true;
  CtEntry e = parse_ok(build_entry(s));
  EXPECT_TRUE(same_conn(e.conn, s.conn));
  EXPECT_EQ(e.conn.mark, 5u);
  ASSERT_TRUE(e.has_counters());
  EXPECT_EQ(e.reply_counters->bytes, 4u);
  EXPECT_EQ(e.tcp_state, TCP_CONNTRACK_SYN_SENT);
}

TEST(CtParse, DeleteEventsDecodeLikeNewEntries) {
  Spec s;
  s.conn = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  CtEntry e = parse_ok(build_entry(s, 0, IPCTNL_MSG_CT_DELETE));
  EXPECT_TRUE(same_conn(e.conn, s.conn));
}

TEST(CtParse, EveryTruncationIsRefusedWithoutCrashing) {
  Spec s;
  s.conn = natted_tcp4();
  s.orig_counters = CtCounters{1, 2};
  s.reply_counters = CtCounters{3, 4};
  s.tcp_state = TCP_CONNTRACK_ESTABLISHED;
  const auto full = build_entry(s);

  // Where top-level attributes end, and where the reply tuple does: a
  // message cut at one of those ends (after both tuples) is a shorter but
  // valid entry without its optional attributes.
  std::set<size_t> whole_ends;
  size_t tuples_end = 0;
  {
    const auto* nlh = reinterpret_cast<const nlmsghdr*>(full.data());
    const auto* base = reinterpret_cast<const char*>(full.data());
    const auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
    while (
        mnl_attr_ok(a, static_cast<int>(full.size() - static_cast<size_t>(reinterpret_cast<const char*>(a) - base)))) {
      const size_t end = static_cast<size_t>(reinterpret_cast<const char*>(a) - base) + MNL_ALIGN(a->nla_len);
      whole_ends.insert(end);
      if (mnl_attr_get_type(a) == CTA_TUPLE_REPLY) tuples_end = end;
      a = mnl_attr_next(a);
    }
  }
  ASSERT_GT(tuples_end, 0u);

  for (size_t cut = 0; cut < full.size(); ++cut) {
    // The datagram is cut but the header still claims the full length.
    std::vector<unsigned char> m(full.begin(), full.begin() + static_cast<long>(cut));
    CtEntry e;
    EXPECT_EQ(parse_ct_message(m.data(), m.size(), &e).err(), EBADMSG) << "cut at " << cut;
    // The header is fixed up to the cut: refused unless the cut falls
    // between whole optional attributes.
    if (cut >= NLMSG_HDRLEN) {
      reinterpret_cast<nlmsghdr*>(m.data())->nlmsg_len = static_cast<uint32_t>(cut);
      int err = parse_ct_message(m.data(), m.size(), &e).err();
      if (whole_ends.count(cut) != 0 && cut >= tuples_end) {
        EXPECT_EQ(err, 0) << "cut at " << cut;
        EXPECT_TRUE(same_conn(e.conn, s.conn));
      } else {
        EXPECT_TRUE(err == EBADMSG || err == EINVAL) << "cut at " << cut << " gave " << err;
      }
    }
  }
}

TEST(CtParse, NullOrTinyBufferReturnsEbadmsg) {
  CtEntry e;
  EXPECT_EQ(parse_ct_message(nullptr, 0, &e).err(), EBADMSG);
  unsigned char two[2] = {1, 2};
  EXPECT_EQ(parse_ct_message(two, sizeof(two), &e).err(), EBADMSG);
}

// Rewrites the first attribute of 'type' found at the top level of 'msg'
// by calling 'edit' on it.
template <typename F>
void edit_top_attr(std::vector<unsigned char>& msg, uint16_t type, F edit) {
  auto* nlh = reinterpret_cast<nlmsghdr*>(msg.data());
  for (auto* a = static_cast<nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg))); mnl_attr_ok(
           a, static_cast<int>(static_cast<char*>(mnl_nlmsg_get_payload_tail(nlh)) - reinterpret_cast<char*>(a)));
       a = mnl_attr_next(a)) {
    if (mnl_attr_get_type(a) == type) {
      edit(a);
      return;
    }
  }
  FAIL() << "attribute " << type << " not found";
}

TEST(CtParse, AttributeOfTheWrongSizeReturnsEinval) {
  Spec s;
  s.conn = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  auto msg = build_entry(s);
  // CTA_STATUS shrunk to two bytes (the padding keeps the stream aligned).
  edit_top_attr(msg, CTA_STATUS, [](nlattr* a) { a->nla_len = NLA_HDRLEN + 2; });
  CtEntry e;
  EXPECT_EQ(parse_ct_message(msg.data(), msg.size(), &e).err(), EINVAL);
}

TEST(CtParse, MissingReplyTupleReturnsEinval) {
  Spec s;
  s.conn = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  auto msg = build_entry(s);
  // Renaming the attribute makes it unknown, hence ignored, hence missing.
  edit_top_attr(msg, CTA_TUPLE_REPLY, [](nlattr* a) { a->nla_type = 200 | NLA_F_NESTED; });
  CtEntry e;
  EXPECT_EQ(parse_ct_message(msg.data(), msg.size(), &e).err(), EINVAL);
}

TEST(CtParse, FamilyMismatchedWithAddressesReturnsEinval) {
  Spec s;
  s.conn = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  auto msg = build_entry(s);
  // Claims IPv6 but carries IPv4 addresses.
  reinterpret_cast<nfgenmsg*>(msg.data() + NLMSG_HDRLEN)->nfgen_family = AF_INET6;
  CtEntry e;
  EXPECT_EQ(parse_ct_message(msg.data(), msg.size(), &e).err(), EINVAL);
}

TEST(CtParse, OtherFamilyReturnsEafnosupport) {
  Spec s;
  s.conn = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  auto msg = build_entry(s);
  reinterpret_cast<nfgenmsg*>(msg.data() + NLMSG_HDRLEN)->nfgen_family = AF_BRIDGE;
  CtEntry e;
  EXPECT_EQ(parse_ct_message(msg.data(), msg.size(), &e).err(), EAFNOSUPPORT);
}

TEST(CtParse, RandomCorruptionNeverCrashes) {
  Spec s;
  s.conn = udp6("fd00::1", 1, "fd00::2", 2, 3);
  s.send_zone = true;
  s.orig_counters = CtCounters{1, 2};
  s.reply_counters = CtCounters{3, 4};
  const auto full = build_entry(s);
  std::mt19937 rng(12345);
  size_t refused = 0;
  for (int i = 0; i < 20000; ++i) {
    auto m = full;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      // Leave nlmsg_len alone half of the time so that the corruption
      // reaches the attributes.
      size_t pos = (i % 2 == 0) ? 4 + rng() % (m.size() - 4) : rng() % m.size();
      m[pos] = static_cast<unsigned char>(rng());
    }
    CtEntry e;
    Status st = parse_ct_message(m.data(), m.size(), &e);
    if (!st) {
      ++refused;
      EXPECT_TRUE(st.err() == EBADMSG || st.err() == EINVAL || st.err() == EAFNOSUPPORT) << st.to_string();
    }
  }
  EXPECT_GT(refused, 0u);
}

TEST(CtStatus, FormatNamesEveryBit) {
  EXPECT_EQ(format_ct_status(0), "");
  EXPECT_EQ(format_ct_status(ct_status::kSeenReply | ct_status::kAssured), "SEEN_REPLY|ASSURED");
  EXPECT_EQ(format_ct_status(1u << 20), "BIT20");
}

// ------------------------------------------------------------------------
// Filters
// ------------------------------------------------------------------------

TEST(CtFilterMatch, EmptyFilterMatchesEverything) {
  CtEntry e;
  e.conn = udp6("fd00::1", 1, "fd00::2", 2, 9);
  e.conn.mark = 77;
  e.status = ct_status::kOffload;
  EXPECT_TRUE(ct_filter_match(CtFilter{}, e));
}

TEST(CtFilterMatch, EachConditionMustHold) {
  CtEntry e;
  e.conn = tcp4("10.0.0.1", 1, "10.0.0.2", 2, 1);
  e.conn.mark = 0x1234;
  e.status = ct_status::kAssured | ct_status::kOffload;

  CtFilter f;
  f.family = AF_INET6;
  EXPECT_FALSE(ct_filter_match(f, e));
  f.family = AF_INET;
  EXPECT_TRUE(ct_filter_match(f, e));

  f.zone = 0;
  EXPECT_FALSE(ct_filter_match(f, e));  // Zone 0 is a zone, not "any".
  f.zone = 1;
  EXPECT_TRUE(ct_filter_match(f, e));

  f.mark = 0x0034;
  f.mark_mask = 0x00ff;
  EXPECT_TRUE(ct_filter_match(f, e));
  f.mark = 0x0035;
  EXPECT_FALSE(ct_filter_match(f, e));
  f.mark = 0x0034;

  f.status = ct_status::kOffload;
  f.status_mask = ct_status::kOffload;
  EXPECT_TRUE(ct_filter_match(f, e));
  f.status_mask = ct_status::kOffload | ct_status::kHwOffload;
  f.status = ct_status::kOffload | ct_status::kHwOffload;
  EXPECT_FALSE(ct_filter_match(f, e));
}

// ------------------------------------------------------------------------
// The client against a scripted kernel
// ------------------------------------------------------------------------

std::vector<unsigned char> concat(const std::vector<std::vector<unsigned char>>& msgs) {
  std::vector<unsigned char> out;
  for (const auto& m : msgs) out.insert(out.end(), m.begin(), m.end());
  return out;
}

std::vector<unsigned char> done_msg(uint32_t seq, int err = 0) {
  std::vector<unsigned char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = NLMSG_DONE;
  nlh->nlmsg_flags = NLM_F_MULTI;
  nlh->nlmsg_seq = seq;
  auto* e = static_cast<int*>(mnl_nlmsg_put_extra_header(nlh, sizeof(int)));
  *e = err;
  buf.resize(nlh->nlmsg_len);
  return buf;
}

// An NLMSG_ERROR for 'request' with errno 'err' (0: ACK) and, when given,
// an extended-ack message.
std::vector<unsigned char> ack_msg(const std::vector<unsigned char>& request, int err, const char* extack = nullptr) {
  const auto* req = reinterpret_cast<const nlmsghdr*>(request.data());
  std::vector<unsigned char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = NLMSG_ERROR;
  nlh->nlmsg_seq = req->nlmsg_seq;
  nlh->nlmsg_flags = NLM_F_CAPPED | (extack != nullptr ? NLM_F_ACK_TLVS : 0);
  auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
  e->error = -err;
  e->msg = *req;
  if (extack != nullptr) mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, extack);
  buf.resize(nlh->nlmsg_len);
  return buf;
}

uint32_t seq_of(const std::vector<unsigned char>& request) {
  return reinterpret_cast<const nlmsghdr*>(request.data())->nlmsg_seq;
}

// The attributes in the 'len' bytes at 'head', by type.
std::map<int, const nlattr*> attrs_in(const void* head, int len) {
  std::map<int, const nlattr*> out;
  const auto* a = static_cast<const nlattr*>(head);
  const char* end = static_cast<const char*>(head) + len;
  while (mnl_attr_ok(a, static_cast<int>(end - reinterpret_cast<const char*>(a)))) {
    out[mnl_attr_get_type(a)] = a;
    a = mnl_attr_next(a);
  }
  return out;
}

// Top-level attributes of a request, by type.
std::map<int, const nlattr*> request_attrs(const std::vector<unsigned char>& request) {
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(request.data());
  return attrs_in(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)),
                  static_cast<int>(nlh->nlmsg_len - MNL_NLMSG_HDRLEN - MNL_ALIGN(sizeof(nfgenmsg))));
}

std::map<int, const nlattr*> nested_attrs(const nlattr* nest) {
  return attrs_in(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest));
}

// 'n' distinct TCP/IPv4 entries, source port 1000 + i, answering 'seq'.
std::vector<std::vector<unsigned char>> entries(uint32_t seq, int n, int first = 0, uint16_t zone = 0) {
  std::vector<std::vector<unsigned char>> out;
  for (int i = first; i < first + n; ++i) {
    Spec s;
    s.conn = tcp4("10.0.0.1", static_cast<uint16_t>(1000 + i), "10.0.0.2", 80, zone);
    s.send_zone = zone != 0;
    s.id = static_cast<uint32_t>(i);
    out.push_back(build_entry(s, seq));
  }
  return out;
}

struct Client {
  FakeKernel* kernel;
  Ctnetlink ct;
};

Client make_client() {
  auto fake = std::make_unique<FakeKernel>();
  FakeKernel* raw = fake.get();
  return Client{raw, Ctnetlink::with_transport(std::move(fake))};
}

TEST(CtClient, GetSendsTheTupleAndZoneAndReturnsTheEntry) {
  auto c = make_client();
  Conn key = tcp4("10.0.0.1", 1234, "10.0.0.2", 80, 5);
  c.kernel->on_request = [&](const std::vector<unsigned char>& req, FakeKernel& k) {
    Spec s;
    s.conn = key;
    s.send_zone = true;
    s.status = ct_status::kOffload;
    s.id = 99;
    k.push(build_entry(s, seq_of(req)));
    k.push(ack_msg(req, 0));
  };
  auto e = c.ct.get(key);
  ASSERT_TRUE(e.ok()) << e.message();
  EXPECT_TRUE(same_conn(e->conn, key));
  EXPECT_EQ(e->id, 99u);
  EXPECT_EQ(e->status, ct_status::kOffload);

  // The request, decoded with libmnl: a ctnetlink GET with an ACK asked
  // for, the original tuple and the zone.
  ASSERT_EQ(c.kernel->requests.size(), 1u);
  const auto& req = c.kernel->requests[0];
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(req.data());
  EXPECT_EQ(nlh->nlmsg_type, (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET);
  EXPECT_EQ(nlh->nlmsg_flags & (NLM_F_REQUEST | NLM_F_ACK), NLM_F_REQUEST | NLM_F_ACK);
  EXPECT_EQ(nlh->nlmsg_flags & NLM_F_DUMP, 0);
  EXPECT_EQ(static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh))->nfgen_family, AF_INET);
  auto top = request_attrs(req);
  ASSERT_TRUE(top.count(CTA_TUPLE_ORIG));
  ASSERT_TRUE(top.count(CTA_ZONE));
  EXPECT_EQ(ntohs(mnl_attr_get_u16(top[CTA_ZONE])), 5);
  auto tuple = nested_attrs(top[CTA_TUPLE_ORIG]);
  auto ip = nested_attrs(tuple[CTA_TUPLE_IP]);
  auto proto = nested_attrs(tuple[CTA_TUPLE_PROTO]);
  EXPECT_EQ(0, std::memcmp(mnl_attr_get_payload(ip[CTA_IP_V4_SRC]), key.orig.src.bytes, 4));
  EXPECT_EQ(0, std::memcmp(mnl_attr_get_payload(ip[CTA_IP_V4_DST]), key.orig.dst.bytes, 4));
  EXPECT_EQ(mnl_attr_get_u8(proto[CTA_PROTO_NUM]), IPPROTO_TCP);
  EXPECT_EQ(ntohs(mnl_attr_get_u16(proto[CTA_PROTO_SRC_PORT])), 1234);
  EXPECT_EQ(ntohs(mnl_attr_get_u16(proto[CTA_PROTO_DST_PORT])), 80);
}

TEST(CtClient, GetOfAMissingEntryReturnsEnoentWithTheKernelsText) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    k.push(ack_msg(req, ENOENT, "no such conntrack"));
  };
  auto e = c.ct.get(tcp4("10.0.0.1", 1, "10.0.0.2", 2));
  EXPECT_EQ(e.err(), ENOENT);
  EXPECT_NE(e.message().find("no such conntrack"), std::string::npos) << e.message();
  EXPECT_NE(e.message().find("10.0.0.1:1"), std::string::npos) << e.message();
}

TEST(CtClient, GetWithoutFamilyOrProtocolReturnsEinvalWithoutAsking) {
  auto c = make_client();
  Conn key{};
  EXPECT_EQ(c.ct.get(key).err(), EINVAL);
  key.family = AF_INET;
  EXPECT_EQ(c.ct.get(key).err(), EINVAL);
  EXPECT_TRUE(c.kernel->requests.empty());
}

TEST(CtClient, RemoveSendsDeleteAndReturnsOkOrEnoent) {
  auto c = make_client();
  int answer = 0;
  c.kernel->on_request = [&](const std::vector<unsigned char>& req, FakeKernel& k) { k.push(ack_msg(req, answer)); };
  Conn key = udp6("fd00::1", 53, "fd00::2", 5353);
  EXPECT_TRUE(c.ct.remove(key).ok());
  answer = ENOENT;
  EXPECT_EQ(c.ct.remove(key).err(), ENOENT);
  ASSERT_EQ(c.kernel->requests.size(), 2u);
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(c.kernel->requests[0].data());
  EXPECT_EQ(nlh->nlmsg_type, (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE);
  EXPECT_EQ(static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh))->nfgen_family, AF_INET6);
  // Every request has its own sequence number.
  EXPECT_NE(seq_of(c.kernel->requests[0]), seq_of(c.kernel->requests[1]));
}

// The messages of one datagram, each whole.
std::vector<std::vector<unsigned char>> messages_of(const std::vector<unsigned char>& dgram) {
  std::vector<std::vector<unsigned char>> out;
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(dgram.data());
  int rem = static_cast<int>(dgram.size());
  for (; mnl_nlmsg_ok(nlh, rem); nlh = mnl_nlmsg_next(nlh, &rem)) {
    const auto* b = reinterpret_cast<const unsigned char*>(nlh);
    out.emplace_back(b, b + nlh->nlmsg_len);
  }
  EXPECT_EQ(rem, 0) << "the datagram ends in a partial message";
  return out;
}

uint16_t source_port_of(const std::vector<unsigned char>& request) {
  auto tuple = nested_attrs(request_attrs(request)[CTA_TUPLE_ORIG]);
  return ntohs(mnl_attr_get_u16(nested_attrs(tuple[CTA_TUPLE_PROTO])[CTA_PROTO_SRC_PORT]));
}

std::vector<Conn> numbered_keys(int n) {
  std::vector<Conn> keys;
  for (int i = 0; i < n; ++i) keys.push_back(tcp4("10.0.0.1", static_cast<uint16_t>(1000 + i), "10.0.0.2", 80));
  return keys;
}

TEST(CtClient, RemoveManySendsAWindowPerDatagramAndOnlyItsLastRequestAsksForAnAck) {
  auto c = make_client();
  constexpr int kN = 600;
  std::vector<Conn> keys = numbered_keys(kN);
  keys[300].family = 0;  // Never sent.
  // The kernel: each delete whose source port is a multiple of 7 finds no
  // entry; the others succeed, answered only when asked.
  c.kernel->on_request = [](const std::vector<unsigned char>& dgram, FakeKernel& k) {
    for (const auto& m : messages_of(dgram)) {
      const auto* nlh = reinterpret_cast<const nlmsghdr*>(m.data());
      EXPECT_EQ(nlh->nlmsg_type, (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE);
      const bool missing = source_port_of(m) % 7 == 0;
      if (missing) {
        k.push(ack_msg(m, ENOENT, "no such conntrack"));
      } else if ((nlh->nlmsg_flags & NLM_F_ACK) != 0) {
        k.push(ack_msg(m, 0));
      }
    }
  };
  const std::vector<Status> rs = c.ct.remove_many(keys);
  ASSERT_EQ(rs.size(), keys.size());
  for (int i = 0; i < kN; ++i) {
    if (i == 300) {
      EXPECT_EQ(rs[i].err(), EINVAL) << rs[i].message();
    } else if ((1000 + i) % 7 == 0) {
      EXPECT_EQ(rs[i].err(), ENOENT) << i;
      EXPECT_NE(rs[i].message().find("no such conntrack"), std::string::npos) << rs[i].message();
      EXPECT_NE(rs[i].message().find(":" + std::to_string(1000 + i)), std::string::npos) << rs[i].message();
    } else {
      EXPECT_TRUE(rs[i].ok()) << i << ": " << rs[i].message();
    }
  }
  // 599 requests in windows of 256: three datagrams, every request once, in
  // order, each with a sequence number of its own, the last of each
  // datagram alone asking for an acknowledgement.
  ASSERT_EQ(c.kernel->requests.size(), 3u);
  std::vector<uint16_t> ports;
  std::set<uint32_t> seqs;
  for (const auto& dgram : c.kernel->requests) {
    const auto msgs = messages_of(dgram);
    EXPECT_LE(msgs.size(), Ctnetlink::kRemoveWindow);
    for (size_t j = 0; j < msgs.size(); ++j) {
      const auto* nlh = reinterpret_cast<const nlmsghdr*>(msgs[j].data());
      EXPECT_EQ((nlh->nlmsg_flags & NLM_F_ACK) != 0, j + 1 == msgs.size()) << j;
      EXPECT_NE(nlh->nlmsg_flags & NLM_F_REQUEST, 0);
      seqs.insert(nlh->nlmsg_seq);
      ports.push_back(source_port_of(msgs[j]));
    }
  }
  ASSERT_EQ(ports.size(), static_cast<size_t>(kN - 1));
  EXPECT_EQ(seqs.size(), ports.size());
  for (size_t j = 0; j < ports.size(); ++j) EXPECT_EQ(ports[j], 1000 + j + (j >= 300 ? 1 : 0));
}

TEST(CtClient, RemoveManyAsksAgainOnANewSocketForWhatALostAnswerLeftOpen) {
  auto c = make_client();
  const std::vector<Conn> keys = numbered_keys(10);
  int datagrams = 0;
  c.kernel->on_request = [&](const std::vector<unsigned char>& dgram, FakeKernel& k) {
    const auto msgs = messages_of(dgram);
    if (++datagrams == 1) {
      // The first request fails and its answer arrives; then the socket
      // overflows, and whatever else the kernel said is lost.
      k.push(ack_msg(msgs[0], EBUSY));
      k.push_error(ENOBUFS);
      return;
    }
    // Asked again: the ones the kernel had carried out are gone by now.
    for (size_t j = 0; j < msgs.size(); ++j) {
      const uint16_t port = source_port_of(msgs[j]);
      if (port < 1005) {
        k.push(ack_msg(msgs[j], ENOENT));
      } else if (j + 1 == msgs.size()) {
        k.push(ack_msg(msgs[j], 0));
      }
    }
  };
  const std::vector<Status> rs = c.ct.remove_many(keys);
  EXPECT_EQ(c.kernel->reopens, 1u);
  ASSERT_EQ(c.kernel->requests.size(), 2u);
  EXPECT_EQ(messages_of(c.kernel->requests[1]).size(), 9u) << "the answered request is not sent again";
  EXPECT_EQ(source_port_of(messages_of(c.kernel->requests[1])[0]), 1001);
  EXPECT_EQ(rs[0].err(), EBUSY) << rs[0].message();
  for (size_t i = 1; i < 5; ++i) EXPECT_EQ(rs[i].err(), ENOENT) << i;
  EXPECT_EQ(rs[1].message(), "delete conntrack entry: no such entry") << "the kernel gave no text: the short one";
  EXPECT_NE(rs[0].message().find(":1000"), std::string::npos) << "other errors name the key: " << rs[0].message();
  for (size_t i = 5; i < 10; ++i) EXPECT_TRUE(rs[i].ok()) << i << ": " << rs[i].message();
}

TEST(CtClient, RemoveManyOnASocketClosedUnderUsSendsTheWindowOnANewOne) {
  auto c = make_client();
  const std::vector<Conn> keys = numbered_keys(3);
  c.kernel->on_request = [](const std::vector<unsigned char>& dgram, FakeKernel& k) {
    const auto msgs = messages_of(dgram);
    k.push(ack_msg(msgs.back(), 0));
  };
  c.kernel->gone = EBADF;
  const std::vector<Status> rs = c.ct.remove_many(keys);
  EXPECT_EQ(c.kernel->reopens, 1u);
  ASSERT_EQ(c.kernel->requests.size(), 1u);  // The first send never got out.
  EXPECT_EQ(messages_of(c.kernel->requests[0]).size(), 3u);
  for (const Status& r : rs) EXPECT_TRUE(r.ok()) << r.message();
}

TEST(CtClient, RemoveManyStopsWhenTheKernelDoesNotAnswer) {
  auto c = make_client();
  const std::vector<Conn> keys = numbered_keys(300);                             // Two windows.
  c.kernel->on_request = [](const std::vector<unsigned char>&, FakeKernel&) {};  // Silence.
  const std::vector<Status> rs = c.ct.remove_many(keys);
  ASSERT_EQ(c.kernel->requests.size(), 1u) << "nothing more is sent to a kernel that does not answer";
  EXPECT_EQ(c.kernel->reopens, 1u) << "a fresh socket for what comes next";
  for (size_t i = 0; i < rs.size(); ++i) EXPECT_EQ(rs[i].err(), ETIMEDOUT) << i;
  EXPECT_EQ(rs[0].message().find("not sent"), std::string::npos) << rs[0].message();
  EXPECT_NE(rs[299].message().find("not sent"), std::string::npos) << rs[299].message();
}

TEST(CtClient, RemoveManyTakesAnEpermForTheFirstRequestAsTheWholeDatagramsRefusal) {
  auto c = make_client();
  const std::vector<Conn> keys = numbered_keys(5);
  // What the kernel does for a sender without CAP_NET_ADMIN: it answers the
  // datagram's first message and drops the rest.
  c.kernel->on_request = [](const std::vector<unsigned char>& dgram, FakeKernel& k) {
    k.push(ack_msg(messages_of(dgram)[0], EPERM));
  };
  const std::vector<Status> rs = c.ct.remove_many(keys);
  for (const Status& r : rs) EXPECT_EQ(r.err(), EPERM) << r.message();
  EXPECT_EQ(c.kernel->reopens, 0u) << "no wait for answers that never come";
}

TEST(CtClient, GetOnASocketClosedUnderUsReopensItAndAsksAgain) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    Spec s;
    s.conn = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
    k.push(concat({build_entry(s, seq_of(req)), ack_msg(req, 0)}));
  };
  c.kernel->gone = EBADF;
  auto e = c.ct.get(tcp4("10.0.0.1", 1000, "10.0.0.2", 80));
  ASSERT_TRUE(e.ok()) << e.message();
  EXPECT_EQ(e->conn.orig.src_port, 1000);
  EXPECT_EQ(c.kernel->reopens, 1u);
  EXPECT_EQ(c.kernel->requests.size(), 1u);  // The first send never got out.
}

TEST(CtClient, RemoveWhoseSocketFailsAfterTheSendAsksAgain) {
  auto c = make_client();
  int sent = 0;
  c.kernel->on_request = [&](const std::vector<unsigned char>& req, FakeKernel& k) {
    if (++sent == 1) {
      k.gone = EBADF;  // Replaced right after the send: the answer is lost.
      return;
    }
    k.push(ack_msg(req, ENOENT));  // The first delete did happen.
  };
  const Status s = c.ct.remove(tcp4("10.0.0.1", 1000, "10.0.0.2", 80));
  EXPECT_EQ(s.err(), ENOENT) << s.to_string();  // Callers take ENOENT as gone.
  EXPECT_EQ(c.kernel->reopens, 1u);
  EXPECT_EQ(c.kernel->requests.size(), 2u);
}

TEST(CtClient, SocketThatCannotBeReopenedSaysSo) {
  auto c = make_client();
  c.kernel->gone = EBADF;
  c.kernel->reopen_errno = EMFILE;
  const Status s = c.ct.remove(tcp4("10.0.0.1", 1000, "10.0.0.2", 80));
  EXPECT_EQ(s.err(), EMFILE);
  EXPECT_NE(s.message().find("reopen ctnetlink socket"), std::string::npos) << s.message();
  // Nothing was sent, and the next request tries again.
  c.kernel->reopen_errno = 0;
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) { k.push(ack_msg(req, 0)); };
  EXPECT_TRUE(c.ct.remove(tcp4("10.0.0.1", 1000, "10.0.0.2", 80)).ok());
}

TEST(CtClient, DumpVisitsEveryEntryAcrossDatagrams) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    const uint32_t seq = seq_of(req);
    k.push(concat(entries(seq, 40, 0)));
    k.push(concat(entries(seq, 40, 40)));
    auto last = entries(seq, 20, 80);
    last.push_back(done_msg(seq));
    k.push(concat(last));
  };
  std::vector<uint16_t> ports;
  auto stats = c.ct.dump(CtFilter{}, [&](const CtEntry& e) { ports.push_back(e.conn.orig.src_port); });
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_EQ(stats->entries, 100u);
  EXPECT_EQ(stats->messages, 100u);
  EXPECT_EQ(stats->resyncs, 0u);
  ASSERT_EQ(ports.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(ports[static_cast<size_t>(i)], 1000 + i);

  const auto* nlh = reinterpret_cast<const nlmsghdr*>(c.kernel->requests[0].data());
  EXPECT_EQ(nlh->nlmsg_type, (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET);
  EXPECT_EQ(nlh->nlmsg_flags & NLM_F_DUMP, NLM_F_DUMP);
  EXPECT_TRUE(request_attrs(c.kernel->requests[0]).empty());  // No filter, no attributes.
}

TEST(CtClient, DumpSkipsRepliesToEarlierRequests) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    const uint32_t seq = seq_of(req);
    auto stale = entries(seq + 1000, 5);  // Left over from an abandoned request.
    k.push(concat(stale));
    auto mine = entries(seq, 3);
    mine.push_back(done_msg(seq));
    k.push(concat(mine));
  };
  size_t n = 0;
  auto stats = c.ct.dump(CtFilter{}, [&](const CtEntry&) { ++n; });
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_EQ(n, 3u);
}

TEST(CtClient, DumpRestartsAfterEnobufsAndReportsTheResync) {
  auto c = make_client();
  int dumps = 0;
  c.kernel->on_request = [&](const std::vector<unsigned char>& req, FakeKernel& k) {
    const uint32_t seq = seq_of(req);
    if (++dumps == 1) {
      k.push(concat(entries(seq, 30)));
      k.push_error(ENOBUFS);                 // The socket overflowed: part of the dump is lost.
      k.push(concat(entries(seq, 30, 60)));  // Still queued on the old socket.
      return;
    }
    auto all = entries(seq, 100);
    all.push_back(done_msg(seq));
    k.push(concat(all));
  };
  size_t visited = 0;
  size_t resyncs_seen = 0;
  size_t visited_at_resync = 0;
  auto stats = c.ct.dump(
      CtFilter{}, [&](const CtEntry&) { ++visited; },
      [&] {
        ++resyncs_seen;
        visited_at_resync = visited;
        visited = 0;  // The caller drops what it collected.
      });
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_EQ(stats->resyncs, 1u);
  EXPECT_EQ(resyncs_seen, 1u);
  EXPECT_EQ(visited_at_resync, 30u);
  EXPECT_EQ(visited, 100u);  // Nothing lost.
  EXPECT_EQ(stats->entries, 100u);
  EXPECT_EQ(c.kernel->reopens, 1u);
  EXPECT_EQ(c.kernel->requests.size(), 2u);
}

TEST(CtClient, DumpWhoseSocketIsClosedMidwayRestartsOnANewOneAndLosesNothing) {
  auto c = make_client();
  int dumps = 0;
  c.kernel->on_request = [&](const std::vector<unsigned char>& req, FakeKernel& k) {
    const uint32_t seq = seq_of(req);
    if (++dumps == 1) {
      k.push(concat(entries(seq, 30)));
      return;  // Then the descriptor is replaced (below, after the first datagram).
    }
    auto all = entries(seq, 50);
    all.push_back(done_msg(seq));
    k.push(concat(all));
  };
  size_t visited = 0;
  auto stats = c.ct.dump(
      CtFilter{},
      [&](const CtEntry&) {
        if (++visited == 30 && dumps == 1) c.kernel->gone = EBADF;
      },
      [&] { visited = 0; });
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_EQ(stats->resyncs, 1u);
  EXPECT_EQ(visited, 50u);
  EXPECT_EQ(c.kernel->reopens, 1u);
}

TEST(CtClient, DumpThatKeepsOverflowingFailsWithEnobufs) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    k.push(concat(entries(seq_of(req), 2)));
    k.push_error(ENOBUFS);
  };
  auto stats = c.ct.dump(CtFilter{}, [](const CtEntry&) {});
  EXPECT_EQ(stats.err(), ENOBUFS);
  EXPECT_EQ(c.kernel->reopens, 8u);
}

TEST(CtClient, DumpPutsTheFilterTheKernelUnderstandsInTheRequest) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) { k.push(done_msg(seq_of(req))); };
  CtFilter f;
  f.family = AF_INET6;
  f.zone = 3;
  f.mark = 0x10;
  f.mark_mask = 0xf0;
  f.status = ct_status::kOffload;
  f.status_mask = ct_status::kOffload;
  ASSERT_TRUE(c.ct.dump(f, [](const CtEntry&) {}).ok());
  const auto& req = c.kernel->requests.at(0);
  const auto* nlh = reinterpret_cast<const nlmsghdr*>(req.data());
  EXPECT_EQ(static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(nlh))->nfgen_family, AF_INET6);
  auto top = request_attrs(req);
  ASSERT_TRUE(top.count(CTA_MARK) && top.count(CTA_MARK_MASK));
  EXPECT_EQ(ntohl(mnl_attr_get_u32(top[CTA_MARK])), 0x10u);
  EXPECT_EQ(ntohl(mnl_attr_get_u32(top[CTA_MARK_MASK])), 0xf0u);
  ASSERT_TRUE(top.count(CTA_STATUS) && top.count(CTA_STATUS_MASK));
  EXPECT_EQ(ntohl(mnl_attr_get_u32(top[CTA_STATUS])), ct_status::kOffload);
  EXPECT_EQ(ntohl(mnl_attr_get_u32(top[CTA_STATUS_MASK])), ct_status::kOffload);
  ASSERT_TRUE(top.count(CTA_ZONE));
  EXPECT_EQ(ntohs(mnl_attr_get_u16(top[CTA_ZONE])), 3);
  ASSERT_TRUE(top.count(CTA_FILTER));
  auto filt = nested_attrs(top[CTA_FILTER]);
  ASSERT_TRUE(filt.count(CTA_FILTER_ORIG_FLAGS) && filt.count(CTA_FILTER_REPLY_FLAGS));
  EXPECT_EQ(mnl_attr_get_u32(filt[CTA_FILTER_ORIG_FLAGS]), 0u);  // No tuple matching.
}

TEST(CtClient, DumpOfZoneZeroLeavesTheZoneToUserspace) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    // A kernel that does not filter: zones 0 and 4 both come back.
    auto all = entries(seq_of(req), 3, 0, 0);
    auto z4 = entries(seq_of(req), 2, 10, 4);
    all.insert(all.end(), z4.begin(), z4.end());
    all.push_back(done_msg(seq_of(req)));
    k.push(concat(all));
  };
  CtFilter f;
  f.zone = 0;
  size_t n = 0;
  auto stats = c.ct.dump(f, [&](const CtEntry& e) {
    EXPECT_EQ(e.conn.zone, 0);
    ++n;
  });
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_EQ(n, 3u);
  EXPECT_EQ(stats->messages, 5u);
  auto top = request_attrs(c.kernel->requests.at(0));
  EXPECT_FALSE(top.count(CTA_ZONE));  // The kernel reads zone 0 as "any zone".
}

TEST(CtClient, DumpRetriesWithoutKernelFilterWhenTheKernelRefusesIt) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    if (!request_attrs(req).empty()) {
      k.push(ack_msg(req, EOPNOTSUPP));
      return;
    }
    auto all = entries(seq_of(req), 4);
    all.push_back(done_msg(seq_of(req)));
    k.push(concat(all));
  };
  CtFilter f;
  f.zone = 9;  // Nothing is in zone 9: userspace filtering drops all four.
  size_t n = 0;
  auto stats = c.ct.dump(f, [&](const CtEntry&) { ++n; });
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_EQ(n, 0u);
  EXPECT_EQ(stats->messages, 4u);
  EXPECT_EQ(c.kernel->requests.size(), 2u);
}

TEST(CtClient, MalformedEntryFailsTheDumpButLeavesTheSocketClean) {
  auto c = make_client();
  int dumps = 0;
  c.kernel->on_request = [&](const std::vector<unsigned char>& req, FakeKernel& k) {
    const uint32_t seq = seq_of(req);
    auto all = entries(seq, 3);
    if (++dumps == 1) {
      auto bad = all[1];
      bad.resize(bad.size() - 4);  // Cut inside its last attribute...
      reinterpret_cast<nlmsghdr*>(bad.data())->nlmsg_len = static_cast<uint32_t>(bad.size());  // ...consistently.
      all[1] = bad;
    }
    k.push(concat(all));
    k.push(concat({entries(seq, 2, 3)[0], entries(seq, 2, 3)[1], done_msg(seq)}));
  };
  size_t n = 0;
  auto stats = c.ct.dump(CtFilter{}, [&](const CtEntry&) { ++n; });
  EXPECT_TRUE(stats.err() == EBADMSG || stats.err() == EINVAL) << stats.message();
  EXPECT_TRUE(c.kernel->queue.empty());  // The rest of the dump was read.
  // The next dump works.
  n = 0;
  auto again = c.ct.dump(CtFilter{}, [&](const CtEntry&) { ++n; });
  ASSERT_TRUE(again.ok()) << again.message();
  EXPECT_EQ(n, 5u);
}

TEST(CtClient, DumpEndingInAnErrorReturnsTheKernelsErrno) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    auto all = entries(seq_of(req), 2);
    all.push_back(done_msg(seq_of(req), -EPERM));
    k.push(concat(all));
  };
  auto stats = c.ct.dump(CtFilter{}, [](const CtEntry&) {});
  EXPECT_EQ(stats.err(), EPERM);
}

TEST(CtClient, DumpEndingInACodeThatIsNoErrnoIsEbadmsg) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    auto all = entries(seq_of(req), 1);
    all.push_back(done_msg(seq_of(req), INT_MIN));  // cannot be negated
    k.push(concat(all));
  };
  auto stats = c.ct.dump(CtFilter{}, [](const CtEntry&) {});
  EXPECT_EQ(stats.err(), EBADMSG);
}

TEST(CtClient, DumpRefusedAtTheStartReturnsTheKernelsErrno) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    k.push(ack_msg(req, EPERM, "Operation not permitted here"));
  };
  auto stats = c.ct.dump(CtFilter{}, [](const CtEntry&) {});
  EXPECT_EQ(stats.err(), EPERM);
  EXPECT_NE(stats.message().find("Operation not permitted here"), std::string::npos) << stats.message();
}

TEST(CtClient, UnansweredRequestReturnsEtimedoutAndResetsTheSocket) {
  auto c = make_client();  // No on_request: the kernel never answers.
  auto e = c.ct.get(tcp4("10.0.0.1", 1, "10.0.0.2", 2));
  EXPECT_EQ(e.err(), ETIMEDOUT);
  EXPECT_EQ(c.kernel->reopens, 1u);
}

TEST(CtClient, DumpSkipsEntriesOfOtherFamilies) {
  auto c = make_client();
  c.kernel->on_request = [](const std::vector<unsigned char>& req, FakeKernel& k) {
    auto all = entries(seq_of(req), 2);
    auto odd = all[0];
    reinterpret_cast<nfgenmsg*>(odd.data() + NLMSG_HDRLEN)->nfgen_family = AF_BRIDGE;
    all.push_back(odd);
    all.push_back(done_msg(seq_of(req)));
    k.push(concat(all));
  };
  size_t n = 0;
  auto stats = c.ct.dump(CtFilter{}, [&](const CtEntry&) { ++n; });
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_EQ(n, 2u);
  EXPECT_EQ(stats->skipped, 1u);
}

// ------------------------------------------------------------------------
// Accounting switch (on a scratch file standing in for the sysctl)
// ------------------------------------------------------------------------

class CtAccounting : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ctoffload-acct-XXXXXX";
    int fd = mkstemp(tmpl);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, "0\n", 2), 2);
    close(fd);
    path_ = tmpl;
  }
  void TearDown() override { unlink(path_.c_str()); }
  std::string contents() const {
    std::ifstream in(path_);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  std::string path_;
};

TEST_F(CtAccounting, SetWritesOneAndReadBackSaysOn) {
  auto before = conntrack_accounting(path_);
  ASSERT_TRUE(before.ok()) << before.message();
  EXPECT_FALSE(*before);
  ASSERT_TRUE(set_conntrack_accounting(true, path_).ok());
  EXPECT_EQ(contents(), "1\n");
  auto after = conntrack_accounting(path_);
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(*after);
  ASSERT_TRUE(set_conntrack_accounting(false, path_).ok());
  EXPECT_EQ(contents(), "0\n");
}

TEST_F(CtAccounting, MissingSwitchReturnsEnoentSayingConntrackIsAbsent) {
  Status s = set_conntrack_accounting(true, "/nonexistent/ctoffload/nf_conntrack_acct");
  EXPECT_EQ(s.err(), ENOENT);
  EXPECT_NE(s.message().find("conntrack is not available"), std::string::npos) << s.message();
  EXPECT_EQ(conntrack_accounting("/nonexistent/ctoffload/nf_conntrack_acct").err(), ENOENT);
}

TEST_F(CtAccounting, GarbageInTheSwitchReturnsEinval) {
  {
    std::ofstream out(path_);
    out << "yes\n";
  }
  EXPECT_EQ(conntrack_accounting(path_).err(), EINVAL);
}

}  // namespace
}  // namespace ctoffload::netlink
