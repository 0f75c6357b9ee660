// conn_state_test.cc - the registry's sharded per-connection state table.
#include "conn_state.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <atomic>
#include <map>
#include <random>
#include <thread>
#include <tuple>
#include <vector>

#include "test_support.h"

namespace ctoffload {
namespace {

using testing::tcp4;

// Connection number 'i': source 10.x.y.z (the low 24 bits of i), port
// 1000 + i % 50000, to 192.0.2.1:80.
Conn nth(uint32_t i, uint16_t zone = 0) {
  Conn c = tcp4("10.0.0.1", static_cast<uint16_t>(1000 + (i % 50000)), "192.0.2.1", 80, zone);
  c.orig.src.words[0] = htonl(0x0a000000u | (i & 0xffffffu));
  c.reply = mirror(c.orig);
  return c;
}

TEST(ConnStateTable, AConnectionGoesNoneAddedEstablishedAndBack) {
  ConnStateTable t;
  const Conn c = nth(1);
  EXPECT_EQ(t.get(c), OffloadState::kNone);
  EXPECT_EQ(t.establish(c), OffloadState::kNone) << "established before any add";
  EXPECT_EQ(t.get(c), OffloadState::kNone);
  t.mark_added(c);
  EXPECT_EQ(t.get(c), OffloadState::kAdded);
  EXPECT_EQ(t.establish(c), OffloadState::kAdded);
  EXPECT_EQ(t.get(c), OffloadState::kEstablished);
  EXPECT_EQ(t.establish(c), OffloadState::kEstablished) << "only once";
  t.mark_added(c);
  EXPECT_EQ(t.get(c), OffloadState::kEstablished) << "a repeated add does not undo established";
  t.erase(c);
  EXPECT_EQ(t.get(c), OffloadState::kNone);
  EXPECT_EQ(t.size(), 0u);
}

TEST(ConnStateTable, IdentityIsFamilyProtocolZoneAndOriginalTuple) {
  ConnStateTable t;
  Conn c = nth(7);
  t.mark_added(c);
  Conn natted = c;
  natted.reply.src_port = 4444;  // The reply tuple is not part of the identity.
  natted.mark = 99;
  EXPECT_EQ(t.get(natted), OffloadState::kAdded);
  Conn other_zone = nth(7, 3);
  EXPECT_EQ(t.get(other_zone), OffloadState::kNone);
  Conn udp = c;
  udp.proto = IPPROTO_UDP;
  EXPECT_EQ(t.get(udp), OffloadState::kNone);
  Conn reversed = c;
  std::swap(reversed.orig, reversed.reply);
  EXPECT_EQ(t.get(reversed), OffloadState::kNone);
}

TEST(ConnStateTable, UsedSinceLastQueryAnswersOnlyWhenTheTimeAdvanced) {
  ConnStateTable t;
  const Conn c = nth(3);
  EXPECT_EQ(t.report_if_advanced(c, 0), 0);
  EXPECT_EQ(t.size(), 0u) << "nothing is recorded for an answer of 0";
  EXPECT_EQ(t.report_if_advanced(c, 1000), 1000) << "first query: nothing to compare with";
  EXPECT_EQ(t.get(c), OffloadState::kNone) << "recorded, but not offloaded";
  EXPECT_EQ(t.report_if_advanced(c, 1000), 0) << "idle since";
  EXPECT_EQ(t.report_if_advanced(c, 999), 0) << "a time going back is no use";
  EXPECT_EQ(t.report_if_advanced(c, 1500), 1500);
  EXPECT_EQ(t.report_if_advanced(c, 1500), 0);
  t.erase(c);
  EXPECT_EQ(t.report_if_advanced(c, 1500), 1500) << "a deleted connection starts afresh";
  t.mark_added(c);
  EXPECT_EQ(t.get(c), OffloadState::kAdded);
  EXPECT_EQ(t.report_if_advanced(c, 1500), 0) << "the add keeps the previous answer";
}

// Random adds, establishes and erases against a std::map: growth and the
// backward-shift deletion must never lose or invent a connection.
TEST(ConnStateTable, ManyConnectionsMatchAReferenceMap) {
  ConnStateTable t;
  std::map<uint32_t, OffloadState> ref;
  std::mt19937 rng(42);
  for (int step = 0; step < 200000; ++step) {
    const uint32_t i = rng() % 20000;
    const Conn c = nth(i);
    switch (rng() % 4) {
      case 0:
      case 1:
        t.mark_added(c);
        if (ref[i] == OffloadState::kNone) ref[i] = OffloadState::kAdded;
        break;
      case 2: {
        const OffloadState want = ref.contains(i) ? ref[i] : OffloadState::kNone;
        ASSERT_EQ(t.establish(c), want) << "step " << step;
        if (want == OffloadState::kAdded) ref[i] = OffloadState::kEstablished;
        break;
      }
      default:
        t.erase(c);
        ref.erase(i);
        break;
    }
  }
  EXPECT_EQ(t.size(), ref.size());
  for (uint32_t i = 0; i < 20000; ++i) {
    const OffloadState want = ref.contains(i) ? ref[i] : OffloadState::kNone;
    ASSERT_EQ(t.get(nth(i)), want) << i;
  }
  t.clear();
  EXPECT_EQ(t.size(), 0u);
  EXPECT_EQ(t.get(nth(ref.begin()->first)), OffloadState::kNone);
}

TEST(ConnStateTable, IPv6ConnectionsAreKeptApart) {
  ConnStateTable t;
  Conn a = testing::udp6("fd00::1", 1000, "fd00::2", 80);
  Conn b = testing::udp6("fd00::1:1", 1000, "fd00::2", 80);
  t.mark_added(a);
  EXPECT_EQ(t.get(a), OffloadState::kAdded);
  EXPECT_EQ(t.get(b), OffloadState::kNone);
}

// Two threads racing to establish each connection: exactly one wins each.
TEST(ConnStateTableConcurrency, EstablishIsWonByExactlyOneThread) {
  ConnStateTable t;
  constexpr uint32_t kConns = 2000;
  for (uint32_t i = 0; i < kConns; ++i) t.mark_added(nth(i));
  std::atomic<int> wins{0};
  auto racer = [&] {
    for (uint32_t i = 0; i < kConns; ++i) {
      if (t.establish(nth(i)) == OffloadState::kAdded) ++wins;
    }
  };
  std::thread a(racer), b(racer);
  a.join();
  b.join();
  EXPECT_EQ(wins.load(), static_cast<int>(kConns));
}

// Threads adding and erasing connections of their own while the table
// grows: every thread's connections are found, none of the others' lost.
TEST(ConnStateTableConcurrency, ThreadsWorkingOnTheirOwnConnectionsDoNotDisturbEachOther) {
  ConnStateTable t;
  constexpr uint32_t kPer = 5000;
  std::atomic<int> wrong{0};
  auto worker = [&](uint32_t base) {
    for (uint32_t i = 0; i < kPer; ++i) t.mark_added(nth(base + i));
    for (uint32_t i = 0; i < kPer; i += 2) t.erase(nth(base + i));
    for (uint32_t i = 0; i < kPer; ++i) {
      const OffloadState want = i % 2 ? OffloadState::kAdded : OffloadState::kNone;
      if (t.get(nth(base + i)) != want) ++wrong;
    }
  };
  std::thread a(worker, 0), b(worker, 100000);
  a.join();
  b.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(t.size(), size_t{kPer});
}

// Readers take no lock: while a writer adds, erases (moving slots back) and
// grows shards, a reader must still find every connection that stays added,
// never a torn or missing one.
TEST(ConnStateTableConcurrency, LockFreeReadersNeverMissAConnectionWhileWritersMoveSlots) {
  ConnStateTable t;
  constexpr uint32_t kStable = 512, kChurn = 20000;
  for (uint32_t i = 0; i < kStable; ++i) t.mark_added(nth(i));
  std::atomic<bool> stop{false};
  std::atomic<long> misses{0}, reads{0};
  std::thread reader([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      for (uint32_t i = 0; i < kStable; ++i) {
        if (t.get(nth(i)) != OffloadState::kAdded) ++misses;
        ++reads;
      }
    }
  });
  for (int round = 0; round < 3; ++round) {
    for (uint32_t i = 0; i < kChurn; ++i) t.mark_added(nth(100000 + i));
    for (uint32_t i = 0; i < kChurn; ++i) t.erase(nth(100000 + i));
  }
  stop = true;
  reader.join();
  EXPECT_EQ(misses.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(t.size(), size_t{kStable});
}

}  // namespace
}  // namespace ctoffload
