// software_test.cc - the software fallback provider: matching in both
// directions, zones, NAT, capacity, bad input, last used, flush, status, and
// lookups racing writers (suite SoftwareConcurrency, run under TSan).
#include "providers/software.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ctoffload/registry.h"
#include "test_support.h"

namespace ctoffload {
namespace {

using testing::ctx_of;
using testing::tcp4;
using testing::udp6;

std::shared_ptr<SoftwareProvider> make(size_t capacity = 1024) {
  auto p = SoftwareProvider::create(SoftwareOptions{.capacity = capacity});
  EXPECT_TRUE(p.ok()) << p.message();
  return p.ok() ? *p : nullptr;
}

// The packet travelling in 'c''s original direction / reply direction.
Direction hit_orig(SoftwareProvider& p, const Conn& c, uint32_t bytes = 100) {
  return p.lookup(c.family, c.proto, c.zone, c.orig, bytes);
}
Direction hit_reply(SoftwareProvider& p, const Conn& c, uint32_t bytes = 100) {
  return p.lookup(c.family, c.proto, c.zone, c.reply, bytes);
}

int add(SoftwareProvider& p, const Conn& c) { return p.conn_add(ctx_of(c)); }

// What a caller gets for 'c' from a registry holding only 'p': the registry
// checks a connection once, before any provider sees it, so a malformed one
// is refused there and the provider does not check again.
int add_through_registry(const std::shared_ptr<SoftwareProvider>& p, const Conn& c) {
  Registry reg;
  EXPECT_TRUE(reg.add(p).ok());
  const int err = reg.conn_add(ctx_of(c));
  EXPECT_TRUE(reg.remove(p.get()));
  return err;
}

// The same for can_offload: a malformed connection is refused without
// asking the provider.
bool can_offload_through_registry(const std::shared_ptr<SoftwareProvider>& p, const Conn& c) {
  Registry reg;
  EXPECT_TRUE(reg.add(p).ok());
  const bool yes = reg.can_offload(ctx_of(c));
  EXPECT_TRUE(reg.remove(p.get()));
  return yes;
}
void del(SoftwareProvider& p, const Conn& c) { p.conn_del(ctx_of(c)); }

ConnStatus query(SoftwareProvider& p, const Conn& c, bool* held = nullptr) {
  ConnStatus st{};
  const bool h = p.conn_query(ctx_of(c), &st);
  if (held != nullptr) *held = h;
  return st;
}

// Provider options with "capacity" set to 'value'.
ProviderOptions capacity_option(const char* value) {
  ProviderOptions o;
  o.set("capacity", value);
  return o;
}

void set_addr4(Addr& a, const char* text) { ASSERT_EQ(inet_pton(AF_INET, text, a.bytes), 1); }

long long wall_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A distinct TCP/IPv4 connection per 'i' (0 .. 2^24).
Conn nth_conn(uint32_t i, uint16_t zone = 0) {
  Conn c{};
  c.family = AF_INET;
  c.proto = IPPROTO_TCP;
  c.zone = zone;
  c.orig.src.words[0] = htonl(0x0a000000u | (i >> 8));  // 10.x.y.z
  c.orig.dst.words[0] = htonl(0xc6336401u);             // 198.51.100.1
  c.orig.src_port = static_cast<uint16_t>(1024 + (i & 0xff));
  c.orig.dst_port = 443;
  ct_offload_conn_mirror_reply(&c);
  return c;
}

// ---------------------------------------------------------------- creation

TEST(SoftwareProvider, NameIsSoftwareAndItIsAFallback) {
  auto p = make();
  EXPECT_EQ(p->name(), "software");
  EXPECT_TRUE(p->is_fallback());
}

TEST(SoftwareProvider, CreateFromOptionsDefaultsTo65536) {
  auto p = SoftwareProvider::create(ProviderOptions{});
  ASSERT_TRUE(p.ok()) << p.message();
  EXPECT_EQ((*p)->capacity(), 65536u);
  EXPECT_EQ((*p)->size(), 0u);
}

TEST(SoftwareProvider, CreateFromOptionsReadsCapacity) {
  auto p = SoftwareProvider::create(capacity_option("3"));
  ASSERT_TRUE(p.ok()) << p.message();
  EXPECT_EQ((*p)->capacity(), 3u);
}

TEST(SoftwareProvider, CreateCapacityZeroReturnsEinval) {
  auto a = SoftwareProvider::create(SoftwareOptions{.capacity = 0});
  EXPECT_EQ(a.err(), EINVAL);
  auto b = SoftwareProvider::create(capacity_option("0"));
  EXPECT_EQ(b.err(), EINVAL);
  EXPECT_NE(b.message().find("capacity"), std::string::npos) << b.message();
}

TEST(SoftwareProvider, CreateCapacityAbove16MReturnsEinval) {
  auto a = SoftwareProvider::create(SoftwareOptions{.capacity = (size_t{1} << 24) + 1});
  EXPECT_EQ(a.err(), EINVAL);
  auto b = SoftwareProvider::create(capacity_option("16777217"));
  EXPECT_EQ(b.err(), EINVAL);
  EXPECT_NE(b.message().find("capacity"), std::string::npos) << b.message();
}

TEST(SoftwareProvider, CreateCapacityNotANumberReturnsEinvalNamingIt) {
  auto p = SoftwareProvider::create(capacity_option("lots"));
  EXPECT_EQ(p.err(), EINVAL);
  EXPECT_NE(p.message().find("capacity"), std::string::npos) << p.message();
}

TEST(SoftwareProvider, CreateMaximumCapacitySucceeds) {
  // 16M connections reserve about 2 GB of zero pages; nothing is touched.
  auto p = SoftwareProvider::create(SoftwareOptions{.capacity = size_t{1} << 24});
  ASSERT_TRUE(p.ok()) << p.message();
  EXPECT_EQ((*p)->capacity(), size_t{1} << 24);
  const Conn c = nth_conn(12345);
  EXPECT_EQ(add(**p, c), 0);
  EXPECT_EQ(hit_orig(**p, c), Direction::kOriginal);
}

TEST(SoftwareProvider, BytesPerConnectionIs120) {
  // 104-byte record + four 4-byte slots; the bound is 128.
  EXPECT_EQ(SoftwareProvider::bytes_per_connection(), 120u);
  EXPECT_LE(SoftwareProvider::bytes_per_connection(), 128u);
}

// ---------------------------------------------------------------- matching

TEST(SoftwareProvider, Ipv4HitsInBothDirections) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  ASSERT_EQ(add(*p, c), 0);
  EXPECT_EQ(p->size(), 1u);
  EXPECT_EQ(hit_orig(*p, c), Direction::kOriginal);
  EXPECT_EQ(hit_reply(*p, c), Direction::kReply);
}

TEST(SoftwareProvider, Ipv6HitsInBothDirections) {
  auto p = make();
  const Conn c = udp6("fd00::1", 5353, "fd00::2", 53);
  ASSERT_EQ(add(*p, c), 0);
  EXPECT_EQ(hit_orig(*p, c), Direction::kOriginal);
  EXPECT_EQ(hit_reply(*p, c), Direction::kReply);
}

TEST(SoftwareProvider, UnknownTupleMisses) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  ASSERT_EQ(add(*p, c), 0);
  EXPECT_EQ(hit_orig(*p, tcp4("10.0.0.1", 40001, "10.0.0.2", 80)), Direction::kMiss);
  EXPECT_EQ(hit_orig(*p, tcp4("10.0.0.3", 40000, "10.0.0.2", 80)), Direction::kMiss);
  EXPECT_EQ(hit_orig(*p, tcp4("10.0.0.1", 40000, "10.0.0.2", 81)), Direction::kMiss);
  // A miss counts nothing.
  EXPECT_EQ(query(*p, c).packets, 0u);
}

TEST(SoftwareProvider, ProtocolAndFamilyArePartOfTheKey) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  ASSERT_EQ(add(*p, c), 0);
  EXPECT_EQ(p->lookup(AF_INET, IPPROTO_UDP, 0, c.orig, 1), Direction::kMiss);
  // The same 16 address bytes read as IPv6 are another key.
  EXPECT_EQ(p->lookup(AF_INET6, IPPROTO_TCP, 0, c.orig, 1), Direction::kMiss);
  EXPECT_EQ(p->lookup(0, IPPROTO_TCP, 0, c.orig, 1), Direction::kMiss);
  EXPECT_EQ(p->lookup(AF_INET, IPPROTO_TCP, 0, c.orig, 1), Direction::kOriginal);
  // The UDP connection on the same 5-tuple is a separate connection.
  Conn u = c;
  u.proto = IPPROTO_UDP;
  EXPECT_EQ(add(*p, u), 0);
  EXPECT_EQ(p->lookup(AF_INET, IPPROTO_UDP, 0, c.orig, 1), Direction::kOriginal);
  EXPECT_EQ(query(*p, c).packets, 1u);
  EXPECT_EQ(query(*p, u).packets, 1u);
}

TEST(SoftwareProvider, Ipv4LookupIgnoresBytesBeyondTheAddress) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  ASSERT_EQ(add(*p, c), 0);
  Tuple t = c.orig;
  t.src.words[2] = 0xdeadbeef;
  t.dst.words[3] = 0x12345678;
  EXPECT_EQ(p->lookup(AF_INET, IPPROTO_TCP, 0, t, 1), Direction::kOriginal);
}

TEST(SoftwareProvider, SameTupleInTwoZonesIsTwoConnections) {
  auto p = make();
  const Conn z0 = tcp4("10.0.0.1", 40000, "10.0.0.2", 80, 0);
  const Conn z7 = tcp4("10.0.0.1", 40000, "10.0.0.2", 80, 7);
  ASSERT_EQ(add(*p, z0), 0);
  ASSERT_EQ(add(*p, z7), 0);
  EXPECT_EQ(p->size(), 2u);
  EXPECT_EQ(hit_orig(*p, z0, 10), Direction::kOriginal);
  EXPECT_EQ(hit_orig(*p, z7, 20), Direction::kOriginal);
  EXPECT_EQ(hit_reply(*p, z7, 30), Direction::kReply);
  EXPECT_EQ(query(*p, z0).packets, 1u);
  EXPECT_EQ(query(*p, z0).bytes, 10u);
  EXPECT_EQ(query(*p, z7).packets, 2u);
  EXPECT_EQ(query(*p, z7).bytes, 50u);
  // A zone nobody added misses; deleting one zone leaves the other.
  EXPECT_EQ(hit_orig(*p, tcp4("10.0.0.1", 40000, "10.0.0.2", 80, 3)), Direction::kMiss);
  del(*p, z0);
  EXPECT_EQ(hit_orig(*p, z0), Direction::kMiss);
  EXPECT_EQ(hit_orig(*p, z7), Direction::kOriginal);
}

TEST(SoftwareProvider, SnatReplyTupleHitsAndMirrorOfOriginalMisses) {
  // 10.0.0.5:40000 -> 198.51.100.1:443, source NATed to 203.0.113.1:61000.
  auto p = make();
  Conn c = tcp4("10.0.0.5", 40000, "198.51.100.1", 443);
  const Tuple mirror = c.reply;
  set_addr4(c.reply.dst, "203.0.113.1");
  c.reply.dst_port = 61000;
  ASSERT_EQ(add(*p, c), 0);
  EXPECT_EQ(hit_orig(*p, c), Direction::kOriginal);
  EXPECT_EQ(hit_reply(*p, c), Direction::kReply);
  EXPECT_EQ(p->lookup(AF_INET, IPPROTO_TCP, 0, mirror, 1), Direction::kMiss);
  EXPECT_EQ(query(*p, c).packets, 2u);
}

TEST(SoftwareProvider, DnatReplyTupleHitsAndMirrorOfOriginalMisses) {
  // 192.0.2.10:5555 -> 203.0.113.1:80, destination NATed to 10.0.0.7:8080.
  auto p = make();
  Conn c = tcp4("192.0.2.10", 5555, "203.0.113.1", 80);
  const Tuple mirror = c.reply;
  set_addr4(c.reply.src, "10.0.0.7");
  c.reply.src_port = 8080;
  ASSERT_EQ(add(*p, c), 0);
  EXPECT_EQ(hit_reply(*p, c), Direction::kReply);
  EXPECT_EQ(hit_orig(*p, c), Direction::kOriginal);
  EXPECT_EQ(p->lookup(AF_INET, IPPROTO_TCP, 0, mirror, 1), Direction::kMiss);
}

TEST(SoftwareProvider, LookupCountsPacketsAndBytesOfBothDirections) {
  auto p = make();
  const Conn c = udp6("fd00::1", 5353, "fd00::2", 53);
  ASSERT_EQ(add(*p, c), 0);
  for (int i = 0; i < 5; ++i) ASSERT_EQ(hit_orig(*p, c, 100), Direction::kOriginal);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(hit_reply(*p, c, 1500), Direction::kReply);
  const ConnStatus st = query(*p, c);
  EXPECT_EQ(st.packets, 8u);
  EXPECT_EQ(st.bytes, 5u * 100 + 3u * 1500);
}

TEST(SoftwareProvider, LookupBatchAnswersAndCountsLikeLookup) {
  auto p = make(64);
  std::vector<Conn> held;
  for (uint32_t i = 0; i < 40; ++i) {
    held.push_back(i % 2 ? nth_conn(i) : udp6("fd00::1", static_cast<uint16_t>(1000 + i), "fd00::2", 53, 3));
    ASSERT_EQ(add(*p, held.back()), 0);
  }
  // 50 packets (more than the batch pipeline's ring of 32): originals, replies, misses and
  // a packet of an unknown family, each with its own length.
  std::vector<SoftwarePacket> pkts;
  std::vector<Direction> want;
  for (uint32_t i = 0; i < 50; ++i) {
    const Conn& c = held[(size_t{i} * 7) % held.size()];
    SoftwarePacket pk{.family = c.family, .proto = c.proto, .zone = c.zone, .bytes = 100 + i, .tuple = c.orig};
    Direction d = Direction::kOriginal;
    if (i % 3 == 1) {
      pk.tuple = c.reply;
      d = Direction::kReply;
    } else if (i % 5 == 2) {
      pk.tuple.src_port ^= 0x4000;
      d = Direction::kMiss;
    } else if (i == 49) {
      pk.family = 0;
      d = Direction::kMiss;
    }
    pkts.push_back(pk);
    want.push_back(d);
  }
  std::vector<Direction> got(pkts.size(), Direction::kOriginal);
  p->lookup_batch(pkts, got);
  std::map<size_t, std::pair<uint64_t, uint64_t>> expected;  // held index -> packets, bytes
  for (size_t i = 0; i < pkts.size(); ++i) {
    EXPECT_EQ(got[i], want[i]) << "packet " << i;
    if (want[i] != Direction::kMiss) {
      auto& e = expected[(i * 7) % held.size()];
      e.first += 1;
      e.second += pkts[i].bytes;
    }
  }
  for (size_t j = 0; j < held.size(); ++j) {
    const ConnStatus st = query(*p, held[j]);
    EXPECT_EQ(st.packets, expected[j].first) << "conn " << j;
    EXPECT_EQ(st.bytes, expected[j].second) << "conn " << j;
    EXPECT_EQ(st.last_used != 0, expected[j].first != 0) << "conn " << j;
  }
  // A shorter output span bounds the work: nothing past it is counted.
  const ConnStatus before = query(*p, held[0]);
  std::vector<Direction> one(1, Direction::kMiss);
  std::vector<SoftwarePacket> two(
      2,
      SoftwarePacket{
          .family = held[0].family, .proto = held[0].proto, .zone = held[0].zone, .bytes = 1, .tuple = held[0].orig});
  p->lookup_batch(two, one);
  EXPECT_EQ(one[0], Direction::kOriginal);
  EXPECT_EQ(query(*p, held[0]).packets, before.packets + 1);
}

TEST(SoftwareProvider, LookupBatchOnAFullTableFindsEveryDirectionAndNothingElse) {
  // A full table (half its slots used) has clusters longer than the probes
  // the batch's second stage reads, so every way a batch decides is taken:
  // a miss at an empty slot, a candidate, and a long probe left to lookup().
  constexpr uint32_t kCap = 1024;
  auto p = make(kCap);
  std::vector<Conn> held;
  for (uint32_t i = 0; i < kCap; ++i) {
    held.push_back(nth_conn(i));
    ASSERT_EQ(add(*p, held.back()), 0);
  }
  std::vector<SoftwarePacket> pkts;
  std::vector<Direction> want;
  for (const Conn& c : held) {
    for (const auto& [tuple, d] : {std::pair{c.orig, Direction::kOriginal}, std::pair{c.reply, Direction::kReply}}) {
      pkts.push_back(SoftwarePacket{.family = c.family, .proto = c.proto, .zone = c.zone, .bytes = 10, .tuple = tuple});
      want.push_back(d);
      SoftwarePacket other = pkts.back();
      other.zone = 9;  // The same tuple in another zone: never held.
      pkts.push_back(other);
      want.push_back(Direction::kMiss);
    }
  }
  std::vector<Direction> got(pkts.size());
  p->lookup_batch(pkts, got);
  for (size_t i = 0; i < pkts.size(); ++i) ASSERT_EQ(got[i], want[i]) << "packet " << i;
  for (const Conn& c : held) {
    const ConnStatus st = query(*p, c);
    EXPECT_EQ(st.packets, 2u);
    EXPECT_EQ(st.bytes, 20u);
  }
}

// ---------------------------------------------------------------- bad input

TEST(SoftwareProvider, AddInvalidConnectionReturnsEinval) {
  auto p = make();
  Conn bad_family = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  bad_family.family = 99;
  EXPECT_EQ(add_through_registry(p, bad_family), EINVAL);
  Conn zero_port = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  zero_port.orig.dst_port = 0;
  EXPECT_EQ(add_through_registry(p, zero_port), EINVAL);
  Conn unspecified = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  unspecified.reply.src.words[0] = 0;
  EXPECT_EQ(add_through_registry(p, unspecified), EINVAL);
  EXPECT_EQ(p->size(), 0u);
}

TEST(SoftwareProvider, AddIdenticalOriginalAndReplyReturnsEinval) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 7, "10.0.0.1", 7);  // Its mirror is itself.
  EXPECT_EQ(add(*p, c), EINVAL);
  EXPECT_EQ(p->size(), 0u);
}

TEST(SoftwareProvider, AddOtherProtocolReturnsEprotonosupport) {
  auto p = make();
  Conn c = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  c.proto = IPPROTO_SCTP;
  EXPECT_EQ(add_through_registry(p, c), EPROTONOSUPPORT);
  c.proto = IPPROTO_ICMP;
  EXPECT_EQ(add_through_registry(p, c), EPROTONOSUPPORT);
  EXPECT_EQ(p->size(), 0u);
}

TEST(SoftwareProvider, AddSameConnectionTwiceReturnsEexist) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  ASSERT_EQ(add(*p, c), 0);
  EXPECT_EQ(add(*p, c), EEXIST);
  EXPECT_EQ(p->size(), 1u);
}

TEST(SoftwareProvider, AddConnectionWhoseOriginalIsAnotherReplyReturnsEexist) {
  auto p = make();
  const Conn a = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  ASSERT_EQ(add(*p, a), 0);
  // b's original tuple is a's reply tuple; its reply is elsewhere (NAT).
  Conn b{};
  b.family = AF_INET;
  b.proto = IPPROTO_TCP;
  b.orig = a.reply;
  set_addr4(b.reply.src, "10.9.9.9");
  set_addr4(b.reply.dst, "10.0.0.2");
  b.reply.src_port = 9999;
  b.reply.dst_port = 80;
  EXPECT_EQ(add(*p, b), EEXIST);
  EXPECT_EQ(p->size(), 1u);
  // a is untouched.
  EXPECT_EQ(hit_reply(*p, a), Direction::kReply);
}

TEST(SoftwareProvider, AddConnectionSharingANatReplyTupleReturnsEexist) {
  // Two clients SNATed onto the same public endpoint: the second one's
  // reply tuple is the first one's, which would make replies ambiguous.
  auto p = make();
  Conn a = tcp4("10.0.0.5", 40000, "198.51.100.1", 443);
  set_addr4(a.reply.dst, "203.0.113.1");
  a.reply.dst_port = 61000;
  Conn b = tcp4("10.0.0.6", 40000, "198.51.100.1", 443);
  b.reply = a.reply;
  ASSERT_EQ(add(*p, a), 0);
  EXPECT_EQ(add(*p, b), EEXIST);
  EXPECT_EQ(hit_orig(*p, b), Direction::kMiss);
  // In another zone the same tuples are free.
  b.zone = 1;
  EXPECT_EQ(add(*p, b), 0);
}

TEST(SoftwareProvider, CanOffloadOnlyValidTcpAndUdpWithRoomLeft) {
  auto p = make(1);
  const Conn tcp = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  const Conn udp = udp6("fd00::1", 1, "fd00::2", 2);
  EXPECT_TRUE(p->can_offload(ctx_of(tcp)));
  EXPECT_TRUE(p->can_offload(ctx_of(udp)));
  Conn icmp = tcp;
  icmp.proto = IPPROTO_ICMP;
  EXPECT_FALSE(can_offload_through_registry(p, icmp));
  Conn bad = tcp;
  bad.orig.src_port = 0;
  EXPECT_FALSE(can_offload_through_registry(p, bad));
  ASSERT_EQ(add(*p, tcp), 0);
  EXPECT_FALSE(p->can_offload(ctx_of(udp)));  // Full.
  del(*p, tcp);
  EXPECT_TRUE(p->can_offload(ctx_of(udp)));
}

// ---------------------------------------------------------------- capacity

TEST(SoftwareProvider, AddBeyondCapacityReturnsEnospcAndEvictsNothing) {
  constexpr uint32_t kCap = 8;
  auto p = make(kCap);
  for (uint32_t i = 0; i < kCap; ++i) ASSERT_EQ(add(*p, nth_conn(i)), 0) << i;
  EXPECT_EQ(p->size(), kCap);
  EXPECT_EQ(add(*p, nth_conn(kCap)), ENOSPC);
  EXPECT_EQ(add(*p, nth_conn(kCap + 1)), ENOSPC);
  EXPECT_EQ(p->size(), kCap);
  for (uint32_t i = 0; i < kCap; ++i) {
    EXPECT_EQ(hit_orig(*p, nth_conn(i)), Direction::kOriginal) << i;
    EXPECT_EQ(hit_reply(*p, nth_conn(i)), Direction::kReply) << i;
  }
  EXPECT_EQ(hit_orig(*p, nth_conn(kCap)), Direction::kMiss);
  // A duplicate is still reported as such when full.
  EXPECT_EQ(add(*p, nth_conn(3)), EEXIST);
  // Deleting one makes room for exactly one.
  del(*p, nth_conn(3));
  EXPECT_EQ(add(*p, nth_conn(kCap)), 0);
  EXPECT_EQ(add(*p, nth_conn(kCap + 1)), ENOSPC);
  EXPECT_EQ(hit_orig(*p, nth_conn(kCap)), Direction::kOriginal);
  EXPECT_EQ(hit_orig(*p, nth_conn(3)), Direction::kMiss);
}

TEST(SoftwareProvider, CapacityOfOneHoldsOneConnection) {
  auto p = make(1);
  ASSERT_EQ(add(*p, nth_conn(0)), 0);
  EXPECT_EQ(add(*p, nth_conn(1)), ENOSPC);
  del(*p, nth_conn(0));
  EXPECT_EQ(add(*p, nth_conn(1)), 0);
  EXPECT_EQ(hit_reply(*p, nth_conn(1)), Direction::kReply);
}

// ---------------------------------------------------------------- lifecycle

TEST(SoftwareProvider, ConnUpdateIsZeroBeforeAnyHitThenAdvances) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  ASSERT_EQ(add(*p, c), 0);
  EXPECT_EQ(p->conn_update(ctx_of(c)), 0);
  const long long before = wall_ms();
  ASSERT_EQ(hit_orig(*p, c), Direction::kOriginal);
  const long long first = p->conn_update(ctx_of(c));
  const long long after = wall_ms();
  // The coarse clock may lag the precise one by one tick (a few ms).
  EXPECT_GE(first, before - 50);
  EXPECT_LE(first, after);
  // Idle: it stays put.
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(p->conn_update(ctx_of(c)), first);
  // A reply-direction hit moves it forward.
  ASSERT_EQ(hit_reply(*p, c), Direction::kReply);
  const long long second = p->conn_update(ctx_of(c));
  EXPECT_GE(second, first + 20);
  EXPECT_LE(second, wall_ms());
}

TEST(SoftwareProvider, ConnUpdateOfUnknownConnectionIsZero) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  EXPECT_EQ(p->conn_update(ctx_of(c)), 0);
  ASSERT_EQ(add(*p, c), 0);
  ASSERT_EQ(hit_orig(*p, c), Direction::kOriginal);
  // Same original tuple, different reply tuple: not this connection.
  Conn other = c;
  set_addr4(other.reply.dst, "203.0.113.9");
  EXPECT_EQ(p->conn_update(ctx_of(other)), 0);
  EXPECT_NE(p->conn_update(ctx_of(c)), 0);
}

TEST(SoftwareProvider, ConnQueryFillsStatus) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  bool held = true;
  ConnStatus st = query(*p, c, &held);
  EXPECT_FALSE(held);
  ASSERT_EQ(add(*p, c), 0);
  st = query(*p, c, &held);
  EXPECT_TRUE(held);
  EXPECT_STREQ(st.provider, "software");
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_SW);
  EXPECT_EQ(st.packets, 0u);
  EXPECT_EQ(st.bytes, 0u);
  EXPECT_EQ(st.last_used, 0);
  ASSERT_EQ(hit_orig(*p, c, 60), Direction::kOriginal);
  ASSERT_EQ(hit_reply(*p, c, 1400), Direction::kReply);
  st = query(*p, c, &held);
  EXPECT_TRUE(held);
  EXPECT_EQ(st.packets, 2u);
  EXPECT_EQ(st.bytes, 1460u);
  EXPECT_EQ(st.last_used, p->conn_update(ctx_of(c)));
  EXPECT_GT(st.last_used, 0);
}

TEST(SoftwareProvider, ConnQueryOfUnheldConnectionLeavesStatusUntouched) {
  auto p = make();
  ConnStatus st{};
  st.packets = 77;
  EXPECT_FALSE(p->conn_query(ctx_of(tcp4("10.0.0.1", 1, "10.0.0.2", 2)), &st));
  EXPECT_EQ(st.packets, 77u);
}

TEST(SoftwareProvider, DeleteStopsHitsAndForgetsTheConnection) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  ASSERT_EQ(add(*p, c), 0);
  ASSERT_EQ(hit_orig(*p, c), Direction::kOriginal);
  del(*p, c);
  EXPECT_EQ(p->size(), 0u);
  EXPECT_EQ(hit_orig(*p, c), Direction::kMiss);
  EXPECT_EQ(hit_reply(*p, c), Direction::kMiss);
  EXPECT_EQ(p->conn_update(ctx_of(c)), 0);
  bool held = true;
  query(*p, c, &held);
  EXPECT_FALSE(held);
}

TEST(SoftwareProvider, DeleteUnknownConnectionIsANoOp) {
  auto p = make();
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  ASSERT_EQ(add(*p, c), 0);
  del(*p, tcp4("10.0.0.1", 40001, "10.0.0.2", 80));
  // Same original tuple but another reply tuple is another connection.
  Conn natted = c;
  set_addr4(natted.reply.dst, "203.0.113.9");
  del(*p, natted);
  // So is its reply tuple given as an original.
  Conn reversed = c;
  std::swap(reversed.orig, reversed.reply);
  del(*p, reversed);
  Conn bad = c;
  bad.family = 0;
  del(*p, bad);
  EXPECT_EQ(p->size(), 1u);
  EXPECT_EQ(hit_orig(*p, c), Direction::kOriginal);
  EXPECT_EQ(hit_reply(*p, c), Direction::kReply);
}

TEST(SoftwareProvider, ReaddedConnectionStartsWithZeroCounters) {
  auto p = make(1);  // One record: the re-add reuses it.
  const Conn c = tcp4("10.0.0.1", 40000, "10.0.0.2", 80);
  ASSERT_EQ(add(*p, c), 0);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(hit_orig(*p, c), Direction::kOriginal);
  del(*p, c);
  ASSERT_EQ(add(*p, c), 0);
  const ConnStatus st = query(*p, c);
  EXPECT_EQ(st.packets, 0u);
  EXPECT_EQ(st.bytes, 0u);
  EXPECT_EQ(st.last_used, 0);
}

TEST(SoftwareProvider, FlushEmptiesTheTable) {
  constexpr uint32_t kCap = 16;
  auto p = make(kCap);
  for (uint32_t i = 0; i < kCap; ++i) ASSERT_EQ(add(*p, nth_conn(i)), 0);
  ASSERT_EQ(hit_orig(*p, nth_conn(2)), Direction::kOriginal);
  p->flush();
  EXPECT_EQ(p->size(), 0u);
  for (uint32_t i = 0; i < kCap; ++i) {
    EXPECT_EQ(hit_orig(*p, nth_conn(i)), Direction::kMiss) << i;
    EXPECT_EQ(hit_reply(*p, nth_conn(i)), Direction::kMiss) << i;
    EXPECT_EQ(p->conn_update(ctx_of(nth_conn(i))), 0);
  }
  // The whole capacity is available again, with fresh counters.
  for (uint32_t i = 0; i < kCap; ++i) ASSERT_EQ(add(*p, nth_conn(100 + i)), 0) << i;
  EXPECT_EQ(add(*p, nth_conn(2)), ENOSPC);
  EXPECT_EQ(query(*p, nth_conn(100)).packets, 0u);
  EXPECT_EQ(hit_orig(*p, nth_conn(115)), Direction::kOriginal);
}

TEST(SoftwareProvider, ChurnMatchesAModelOfHeldConnections) {
  // Random adds and deletes on a small, crowded table (long clusters that
  // wrap around its end): after every step exactly the held connections
  // hit, in both directions.  This is what backward-shift deletion must
  // preserve.
  constexpr uint32_t kCap = 64;
  constexpr uint32_t kUniverse = 160;
  auto p = make(kCap);
  std::mt19937 rng(42);
  std::set<uint32_t> held;
  for (int step = 0; step < 4000; ++step) {
    const uint32_t i = rng() % kUniverse;
    // Half the universe is NATed, so reply tuples are not mirrors.
    Conn c = nth_conn(i, static_cast<uint16_t>(i % 3));
    if (i % 2 == 0) {
      c.reply.dst.words[0] = htonl(0xcb007100u | (i & 0xff));  // 203.0.113.x
      c.reply.dst_port = static_cast<uint16_t>(20000 + i);
    }
    if (held.count(i) != 0) {
      del(*p, c);
      held.erase(i);
    } else {
      const int err = add(*p, c);
      if (held.size() == kCap) {
        ASSERT_EQ(err, ENOSPC);
      } else {
        ASSERT_EQ(err, 0);
        held.insert(i);
      }
    }
    ASSERT_EQ(p->size(), held.size());
    if (step % 10 != 0) continue;
    for (uint32_t j = 0; j < kUniverse; ++j) {
      Conn d = nth_conn(j, static_cast<uint16_t>(j % 3));
      if (j % 2 == 0) {
        d.reply.dst.words[0] = htonl(0xcb007100u | (j & 0xff));
        d.reply.dst_port = static_cast<uint16_t>(20000 + j);
      }
      const bool in = held.count(j) != 0;
      ASSERT_EQ(hit_orig(*p, d), in ? Direction::kOriginal : Direction::kMiss) << "step " << step << " conn " << j;
      ASSERT_EQ(hit_reply(*p, d), in ? Direction::kReply : Direction::kMiss) << "step " << step << " conn " << j;
    }
  }
}

// ---------------------------------------------------------------- concurrency

// Stress loops stop after their step count or this long, whichever comes
// first (sanitizer builds run them many times slower).
constexpr auto kStressBudget = std::chrono::seconds(3);

// The state of one connection, as the writer thread publishes it: even =
// not held (its conn_del returned, or never added); odd = its conn_add has
// started.  Readers compare it before and after a lookup.
struct Tracked {
  Conn conn{};
  std::atomic<uint64_t> state{0};
};

TEST(SoftwareConcurrency, LookupsNeverHitDeletedConnectionsNorMissHeldOnes) {
  // 32 stable connections are always held; 32 churning ones are added and
  // deleted in a loop, in a table small enough that deletes shift
  // neighbours.  Readers: a stable connection always hits; a churning one
  // whose conn_del returned (and no add started since) never hits.
  constexpr uint32_t kStable = 32;
  constexpr uint32_t kChurn = 32;
  constexpr int kReaders = 2;
  auto p = make(kStable + kChurn);
  std::vector<Conn> stable;
  for (uint32_t i = 0; i < kStable; ++i) {
    stable.push_back(nth_conn(i));
    ASSERT_EQ(add(*p, stable.back()), 0);
  }
  std::vector<Tracked> churn(kChurn);
  for (uint32_t i = 0; i < kChurn; ++i) churn[i].conn = nth_conn(1000 + i, 1);

  std::atomic<bool> stop{false};
  std::atomic<uint64_t> stable_misses{0}, stale_hits{0}, lookups{0};
  std::vector<std::thread> readers;
  readers.reserve(kReaders);
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      std::mt19937 rng(r);
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const Conn& s = stable[rng() % kStable];
        if ((rng() & 1 ? hit_orig(*p, s, 1) : hit_reply(*p, s, 1)) == Direction::kMiss) ++stable_misses;
        Tracked& t = churn[rng() % kChurn];
        const uint64_t g1 = t.state.load(std::memory_order_acquire);
        const Direction d = rng() & 1 ? hit_orig(*p, t.conn, 1) : hit_reply(*p, t.conn, 1);
        const uint64_t g2 = t.state.load(std::memory_order_acquire);
        if (d != Direction::kMiss && g1 % 2 == 0 && g1 == g2) ++stale_hits;
        n += 2;
      }
      lookups += n;
    });
  }
  std::thread writer([&] {
    std::mt19937 rng(99);
    const auto deadline = std::chrono::steady_clock::now() + kStressBudget;
    for (int step = 0; step < 20000 && std::chrono::steady_clock::now() < deadline; ++step) {
      Tracked& t = churn[rng() % kChurn];
      if (t.state.load(std::memory_order_relaxed) % 2 == 0) {
        t.state.fetch_add(1, std::memory_order_release);  // Add starts.
        EXPECT_EQ(add(*p, t.conn), 0);
      } else {
        del(*p, t.conn);
        t.state.fetch_add(1, std::memory_order_release);  // Delete returned.
      }
    }
    stop = true;
  });
  writer.join();
  for (auto& t : readers) t.join();
  EXPECT_EQ(stale_hits.load(), 0u);
  EXPECT_EQ(stable_misses.load(), 0u);
  EXPECT_GT(lookups.load(), 1000u);
  // The table agrees with the writer's view at the end.
  size_t held = kStable;
  for (auto& t : churn) {
    const bool in = t.state.load() % 2 == 1;
    held += in ? 1 : 0;
    EXPECT_EQ(hit_orig(*p, t.conn), in ? Direction::kOriginal : Direction::kMiss);
  }
  EXPECT_EQ(p->size(), held);
}

TEST(SoftwareConcurrency, HeldConnectionIsNeverMissedWhileNeighboursAreDeleted) {
  // A tiny table (capacity 3: twelve slots) where every delete of a
  // churning connection may shift the held one's slots back: lookups of the
  // held connection, in both directions, must never miss while that
  // happens.  Reader 0 looks up one packet at a time; reader 1 in bursts,
  // whose misses are decided early in the batch and trusted only if no
  // slot moved in the meantime.
  auto p = make(3);
  const Conn held = tcp4("10.2.0.1", 1111, "10.2.0.2", 2222);
  ASSERT_EQ(add(*p, held), 0);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> misses{0}, lookups{0};
  std::vector<std::thread> readers;
  readers.reserve(2);
  readers.emplace_back([&] {
    uint64_t n = 0, missed = 0;
    for (; !stop.load(std::memory_order_relaxed); ++n) {
      missed += (n % 2 ? hit_orig(*p, held, 1) : hit_reply(*p, held, 1)) == Direction::kMiss;
    }
    misses += missed;
    lookups += n;
  });
  readers.emplace_back([&] {
    std::vector<SoftwarePacket> burst(32);
    for (size_t k = 0; k < burst.size(); ++k) {
      burst[k] = SoftwarePacket{.family = held.family,
                                .proto = held.proto,
                                .zone = held.zone,
                                .bytes = 1,
                                .tuple = k % 2 ? held.orig : held.reply};
    }
    std::vector<Direction> got(burst.size());
    uint64_t n = 0, missed = 0;
    for (; !stop.load(std::memory_order_relaxed); n += burst.size()) {
      p->lookup_batch(burst, got);
      for (Direction d : got) missed += d == Direction::kMiss;
    }
    misses += missed;
    lookups += n;
  });
  std::mt19937 rng(3);
  const auto deadline = std::chrono::steady_clock::now() + kStressBudget;
  for (int step = 0; step < 200000 && std::chrono::steady_clock::now() < deadline; ++step) {
    const Conn c = nth_conn(rng() % 6, 2);
    if (add(*p, c) != 0) del(*p, c);
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(misses.load(), 0u) << "of " << lookups.load() << " lookups";
}

// One thread, deterministic interleaving: the reader's slot hook deletes a
// neighbour of the connection being looked up right after the reader's
// k-th slot read.  When that delete shifts the looked-up connection's slot
// back over a position the reader has already passed, the reader's probe
// ends at an empty slot although the connection is held; it must see that
// slots moved and probe again.  Tiny tables (capacity 3: twelve slots, six
// in use) make long clusters common, and every table has its own random
// hash seeds, so many tables are tried: every connection in both
// directions, every neighbour deleted, after each of the first four reads.
// 'batch' looks up through lookup_batch_with_slot_hook().  Counts the
// lookups, the misses, and the hits that came only after reading an empty
// slot (a retried probe); the tests expect some of those, or they did not
// make the case they are about.
struct ShiftUnderReader {
  size_t lookups = 0;
  size_t misses = 0;
  size_t retried = 0;
};

ShiftUnderReader delete_neighbours_under_readers(bool batch) {
  ShiftUnderReader r;
  for (int table = 0; table < 300; ++table) {
    auto p = make(3);
    const Conn conns[3] = {nth_conn(3 * table), nth_conn(3 * table + 1), nth_conn(3 * table + 2)};
    for (const Conn& c : conns) {
      EXPECT_EQ(add(*p, c), 0);
    }
    for (int target = 0; target < 3; ++target) {
      for (int victim = 0; victim < 3; ++victim) {
        if (victim == target) continue;
        for (int reply = 0; reply < 2; ++reply) {
          for (int k = 1; k <= 4; ++k) {
            const Conn& t = conns[target];
            int reads = 0;
            bool saw_empty = false;
            auto hook = [&](bool empty) {
              saw_empty = saw_empty || empty;
              if (++reads == k) del(*p, conns[victim]);
            };
            Direction d;
            const Tuple& tuple = reply != 0 ? t.reply : t.orig;
            if (batch) {
              const SoftwarePacket pkt{
                  .family = t.family, .proto = t.proto, .zone = t.zone, .bytes = 1, .tuple = tuple};
              Direction out[1];
              p->lookup_batch_with_slot_hook(std::span(&pkt, 1), out, hook);
              d = out[0];
            } else {
              d = p->lookup_with_slot_hook(t.family, t.proto, t.zone, tuple, 1, hook);
            }
            ++r.lookups;
            if (d == Direction::kMiss) ++r.misses;
            if (d != Direction::kMiss && saw_empty) ++r.retried;
            if (reads >= k) {
              EXPECT_EQ(add(*p, conns[victim]), 0);
            }
          }
        }
      }
    }
  }
  return r;
}

TEST(SoftwareConcurrency, LookupProbesAgainWhenADeleteShiftsItsConnectionBackUnderIt) {
  const ShiftUnderReader r = delete_neighbours_under_readers(false);
  EXPECT_EQ(r.misses, 0u) << "of " << r.lookups << " lookups";
  EXPECT_GT(r.retried, 0u) << "no lookup of " << r.lookups << " had its connection shifted back under it";
}

TEST(SoftwareConcurrency, LookupBatchProbesAgainWhenADeleteShiftsItsConnectionBackUnderIt) {
  const ShiftUnderReader r = delete_neighbours_under_readers(true);
  EXPECT_EQ(r.misses, 0u) << "of " << r.lookups << " lookups";
  EXPECT_GT(r.retried, 0u) << "no lookup of " << r.lookups << " had its connection shifted back under it";
}

TEST(SoftwareConcurrency, CountsMatchTheHitsReadersSaw) {
  // Readers hit stable connections in both directions, one at a time and
  // in bursts, while a writer adds and deletes others around them.  At the end each stable connection's
  // counters are exactly the packets and bytes of the hits readers saw.
  constexpr uint32_t kStable = 8;
  constexpr uint32_t kChurn = 8;
  constexpr int kReaders = 2;
  auto p = make(kStable + kChurn / 2);
  std::vector<Conn> stable;
  for (uint32_t i = 0; i < kStable; ++i) {
    stable.push_back(i % 2 ? nth_conn(i) : udp6("fd00::1", static_cast<uint16_t>(100 + i), "fd00::2", 53));
    ASSERT_EQ(add(*p, stable.back()), 0);
  }
  struct Tally {
    std::vector<uint64_t> packets = std::vector<uint64_t>(kStable);
    std::vector<uint64_t> bytes = std::vector<uint64_t>(kStable);
  };
  std::vector<Tally> tallies(kReaders);
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  readers.reserve(kReaders);
  for (int r = 0; r < kReaders; ++r) {
    readers.emplace_back([&, r] {
      Tally& t = tallies[r];
      std::mt19937 rng(r + 10);
      std::vector<SoftwarePacket> burst(8);
      std::vector<uint32_t> which(burst.size());
      std::vector<Direction> got(burst.size());
      while (!stop.load(std::memory_order_relaxed)) {
        // Reader 0 looks up one packet at a time, the others in bursts.
        for (size_t k = 0; k < burst.size(); ++k) {
          const uint32_t i = which[k] = rng() % kStable;
          const Conn& c = stable[i];
          burst[k] = SoftwarePacket{.family = c.family,
                                    .proto = c.proto,
                                    .zone = c.zone,
                                    .bytes = static_cast<uint32_t>(40 + rng() % 1400),
                                    .tuple = rng() & 1 ? c.orig : c.reply};
          if (r == 0) got[k] = p->lookup(c.family, c.proto, c.zone, burst[k].tuple, burst[k].bytes);
        }
        if (r != 0) p->lookup_batch(burst, got);
        for (size_t k = 0; k < burst.size(); ++k) {
          if (got[k] == Direction::kMiss) continue;
          ++t.packets[which[k]];
          t.bytes[which[k]] += burst[k].bytes;
        }
      }
    });
  }
  std::thread writer([&] {
    std::mt19937 rng(5);
    const auto deadline = std::chrono::steady_clock::now() + kStressBudget;
    for (int step = 0; step < 20000 && std::chrono::steady_clock::now() < deadline; ++step) {
      const Conn c = nth_conn(500 + rng() % kChurn);
      if (add(*p, c) != 0) del(*p, c);
    }
    stop = true;
  });
  writer.join();
  for (auto& t : readers) t.join();
  for (uint32_t i = 0; i < kStable; ++i) {
    uint64_t packets = 0, bytes = 0;
    for (const auto& t : tallies) {
      packets += t.packets[i];
      bytes += t.bytes[i];
    }
    const ConnStatus st = query(*p, stable[i]);
    EXPECT_GT(packets, 0u);
    EXPECT_EQ(st.packets, packets) << "stable " << i;
    EXPECT_EQ(st.bytes, bytes) << "stable " << i;
  }
}

TEST(SoftwareConcurrency, HitsNeverLeakIntoTheNextConnectionOfARecord) {
  // Capacity 1: connections A and B take turns in the single record.
  // Readers look up only A, hard; B is never looked up, so B's counters and
  // last used must stay zero even though B reuses the record A's readers
  // were counting on a moment before.
  auto p = make(1);
  const Conn a = tcp4("10.1.0.1", 5000, "10.1.0.2", 6000);
  const Conn b = udp6("fd00::7", 7000, "fd00::8", 8000, 9);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> hits{0};
  std::vector<std::thread> readers;
  readers.reserve(2);
  for (int r = 0; r < 2; ++r) {
    readers.emplace_back([&, r] {
      uint64_t n = 0;
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        n += ((i + r) % 2 ? hit_orig(*p, a, 1) : hit_reply(*p, a, 1)) != Direction::kMiss;
      }
      hits += n;
    });
  }
  uint64_t leaked = 0;
  const auto deadline = std::chrono::steady_clock::now() + kStressBudget;
  for (int cycle = 0; cycle < 40000 && std::chrono::steady_clock::now() < deadline; ++cycle) {
    ASSERT_EQ(add(*p, a), 0);
    for (int spin = 0; spin < 100 && query(*p, a).packets == 0; ++spin) {
    }
    del(*p, a);
    ASSERT_EQ(add(*p, b), 0);
    const ConnStatus st = query(*p, b);
    leaked += st.packets + st.bytes + (st.last_used != 0);
    del(*p, b);
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(leaked, 0u);
  EXPECT_GT(hits.load(), 0u);
}

TEST(SoftwareConcurrency, QueriesAndFlushRaceLookupsSafely) {
  // conn_update/conn_query/can_offload run lock-free next to lookups, adds,
  // deletes and flushes; afterwards the table is consistent and usable.
  constexpr uint32_t kCap = 128;
  auto p = make(kCap);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bogus{0};
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    std::mt19937 rng(7);
    while (!stop.load(std::memory_order_relaxed)) {
      const Conn c = nth_conn(rng() % (uint64_t{2} * kCap));
      (void)hit_orig(*p, c);
      ConnStatus st{};
      if (p->conn_query(ctx_of(c), &st)) {
        if (std::strcmp(st.provider, "software") != 0 || st.mode != CT_OFFLOAD_MODE_SW) ++bogus;
        if (st.last_used != 0 && st.last_used > wall_ms() + 1000) ++bogus;
      }
      (void)p->conn_update(ctx_of(c));
      (void)p->can_offload(ctx_of(c));
      if (p->size() > kCap) ++bogus;
    }
  });
  threads.emplace_back([&] {
    std::mt19937 rng(8);
    const auto deadline = std::chrono::steady_clock::now() + kStressBudget;
    for (int step = 0; step < 20000 && std::chrono::steady_clock::now() < deadline; ++step) {
      const Conn c = nth_conn(rng() % (uint64_t{2} * kCap));
      const uint32_t op = rng() % 100;
      if (op < 55) {
        const int err = add(*p, c);
        if (err != 0 && err != EEXIST && err != ENOSPC) ++bogus;
      } else if (op < 99) {
        del(*p, c);
      } else {
        p->flush();
      }
    }
    stop = true;
  });
  for (auto& t : threads) t.join();
  EXPECT_EQ(bogus.load(), 0u);
  p->flush();
  EXPECT_EQ(p->size(), 0u);
  for (uint32_t i = 0; i < kCap; ++i) ASSERT_EQ(add(*p, nth_conn(i)), 0);
  for (uint32_t i = 0; i < kCap; ++i) ASSERT_EQ(hit_reply(*p, nth_conn(i)), Direction::kReply);
}

}  // namespace
}  // namespace ctoffload
