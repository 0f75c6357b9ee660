// usage_store_test.cc - the shared store of connection readings: the answers
// of observe(), the keyed fingerprints, growth, processes sharing a store
// (fork), a torn slot, the lock's timeout, pruning, namespaces and bad
// directories.  Each test works in a temporary directory of its own under
// /tmp.
#include "providers/usage_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "test_support.h"

namespace ctoffload {
namespace {

using testing::tcp4;
using testing::udp6;

// A directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/usage_store_test.XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    EXPECT_NE(made, nullptr) << "errno " << errno;
    path_ = made ? made : "/tmp/usage_store_test.failed";
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

UsageStoreOptions options(const TempDir& dir, int timeout_ms = 2000) {
  UsageStoreOptions o;
  o.dir = dir.path() + "/store";
  o.table = "ctoffload";
  o.lock_timeout_ms = timeout_ms;
  return o;
}

// Connection number 'i': TCP from 10.x.y.z:40000 to 192.0.2.1:80.
Conn conn_n(uint32_t i) {
  Conn c{};
  c.family = AF_INET;
  c.proto = IPPROTO_TCP;
  c.orig.src.bytes[0] = 10;
  c.orig.src.bytes[1] = static_cast<uint8_t>(i >> 16);
  c.orig.src.bytes[2] = static_cast<uint8_t>(i >> 8);
  c.orig.src.bytes[3] = static_cast<uint8_t>(i);
  c.orig.dst.bytes[0] = 192;
  c.orig.dst.bytes[2] = 2;
  c.orig.dst.bytes[3] = 1;
  c.orig.src_port = 40000;
  c.orig.dst_port = 80;
  c.reply = mirror(c.orig);
  return c;
}

// Runs 'body' in a forked child, which exits with what it returns (0 = all
// good; a child must not use gtest's assertions).  Returns the child's pid.
pid_t spawn(const std::function<int()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(body());
  EXPECT_GT(pid, 0) << "errno " << errno;
  return pid;
}

// The exit code of child 'pid', or 1000 + signal when it was killed.
int wait_for(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return WIFSIGNALED(status) ? 1000 + WTERMSIG(status) : -2;
}

// Kills and reaps child 'pid' unless it was reaped: a failed assertion must
// not leave a child waiting forever.
class ChildGuard {
 public:
  explicit ChildGuard(pid_t pid) : pid_(pid) {}
  ~ChildGuard() {
    if (pid_ > 0 && ::waitpid(pid_, nullptr, WNOHANG) == 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  int wait() { return wait_for(std::exchange(pid_, -1)); }

 private:
  pid_t pid_;
};

struct stat stat_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path << ": "
                                          << "errno " << errno;
  return st;
}

// The file at 'path' now, held open: while it is held, its inode number is
// not given to a file made after it (ext4 reuses a freed number at once),
// so "replaced by a new file" can be told by the number.
class HeldFile {
 public:
  explicit HeldFile(const std::string& path) : fd_(::open(path.c_str(), O_RDONLY | O_CLOEXEC)) {
    EXPECT_GE(fd_, 0) << path << ": errno " << errno;
  }
  ~HeldFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  HeldFile(const HeldFile&) = delete;
  HeldFile& operator=(const HeldFile&) = delete;
  ino_t inode() const {
    struct stat st {};
    EXPECT_EQ(::fstat(fd_, &st), 0) << "errno " << errno;
    return st.st_ino;
  }

 private:
  int fd_;
};

// The header of the data file at 'path', read directly from the file.
UsageFileHeader header_in_file(const std::string& path) {
  UsageFileHeader h{};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path << ": errno " << errno;
  if (fd < 0) return h;
  EXPECT_EQ(::pread(fd, &h, sizeof h, 0), static_cast<ssize_t>(sizeof h)) << path;
  ::close(fd);
  return h;
}

// The index of the slot holding 'c' in the data file at 'path', read
// directly from the file.
std::optional<uint64_t> slot_index_in_file(const std::string& path, const Conn& c) {
  UsageFileHeader h{};
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::optional<uint64_t> found;
  if (::pread(fd, &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h)) {
    const uint64_t fp = usage_fingerprint(h.seed, c);
    for (uint64_t i = 0; i < h.slots && !found; i++) {
      UsageSlot s{};
      if (::pread(fd, &s, sizeof s, static_cast<off_t>(sizeof h + i * sizeof s)) != static_cast<ssize_t>(sizeof s)) {
        break;
      }
      if (s.tag != kUsageTagEmpty && s.fingerprint == fp) found = i;
    }
  }
  ::close(fd);
  return found;
}

// Writes 'size' bytes at 'offset' of the file at 'path' (a writer killed
// mid-write, or another program).
void write_in_file(const std::string& path, off_t offset, const void* data, size_t size) {
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path << ": errno " << errno;
  EXPECT_EQ(::pwrite(fd, data, size, offset), static_cast<ssize_t>(size));
  ::close(fd);
}

// Where field 'field_offset' of slot 'index' is in a data file.
off_t slot_field_at(uint64_t index, size_t field_offset) {
  return static_cast<off_t>(sizeof(UsageFileHeader) + index * sizeof(UsageSlot) + field_offset);
}

// The first slot of 'c''s probe in a store of 'h''s seed and size.
uint64_t first_slot_of(const UsageFileHeader& h, const Conn& c) {
  return usage_first_slot(usage_fingerprint(h.seed, c), h.slots);
}

UsageStore open_ok(const UsageStoreOptions& o) {
  auto s = UsageStore::open(o);
  EXPECT_TRUE(s.ok()) << s.message();
  return std::move(s).value();
}

UsageStore::Session lock_ok(UsageStore& store) {
  auto s = store.lock();
  EXPECT_TRUE(s.ok()) << s.message();
  return std::move(s).value();
}

// ---- The answers of observe() ----

TEST(UsageStore, FirstReadingIsUnknown) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  UsageStore::Session s = lock_ok(store);
  const Conn c = tcp4("10.0.0.1", 1234, "10.0.0.2", 80);
  EXPECT_EQ(s.peek(c), 0);
  EXPECT_EQ(s.observe(c, 7, 100, 1000), 0);
  EXPECT_EQ(s.peek(c), 0);
  EXPECT_EQ(s.size(), 1u);
  EXPECT_TRUE(s.last_error().ok()) << s.last_error().to_string();
}

TEST(UsageStore, MovedCountersGiveTheReadingTime) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  UsageStore::Session s = lock_ok(store);
  const Conn c = tcp4("10.0.0.1", 1234, "10.0.0.2", 80);
  EXPECT_EQ(s.observe(c, 7, 100, 1000), 0);
  EXPECT_EQ(s.observe(c, 7, 150, 2000), 2000);
  EXPECT_EQ(s.peek(c), 2000);
  EXPECT_EQ(s.observe(c, 7, 151, 2500), 2500);
  EXPECT_EQ(s.size(), 1u);
}

TEST(UsageStore, IdleKeepsTheLastUsedTime) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  UsageStore::Session s = lock_ok(store);
  const Conn c = tcp4("10.0.0.1", 1234, "10.0.0.2", 80);
  EXPECT_EQ(s.observe(c, 7, 100, 1000), 0);
  // Idle since the first reading: still unknown.
  EXPECT_EQ(s.observe(c, 7, 100, 1500), 0);
  EXPECT_EQ(s.observe(c, 7, 150, 2000), 2000);
  EXPECT_EQ(s.observe(c, 7, 150, 3000), 2000);
  EXPECT_EQ(s.observe(c, 7, 150, 4000), 2000);
  EXPECT_EQ(s.peek(c), 2000);
}

TEST(UsageStore, NewConntrackIdStartsOver) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  UsageStore::Session s = lock_ok(store);
  const Conn c = tcp4("10.0.0.1", 1234, "10.0.0.2", 80);
  EXPECT_EQ(s.observe(c, 7, 100, 1000), 0);
  EXPECT_EQ(s.observe(c, 7, 150, 2000), 2000);
  // The same tuple, a new conntrack entry (even with the same counters).
  EXPECT_EQ(s.observe(c, 8, 150, 3000), 0);
  EXPECT_EQ(s.peek(c), 0);
  EXPECT_EQ(s.observe(c, 8, 150, 3500), 0);
  EXPECT_EQ(s.observe(c, 8, 160, 4000), 4000);
  EXPECT_EQ(s.size(), 1u);
}

TEST(UsageStore, KeyIsFamilyProtoZoneAndOriginalTuple) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  UsageStore::Session s = lock_ok(store);
  const Conn c = tcp4("10.0.0.1", 1234, "10.0.0.2", 80);
  EXPECT_EQ(s.observe(c, 7, 100, 1000), 0);
  EXPECT_EQ(s.observe(c, 7, 200, 2000), 2000);

  // The reply tuple, the mark and stray bytes behind an IPv4 address are
  // not part of the key.
  Conn same = c;
  same.mark = 42;
  same.reply.src_port = 9999;
  same.orig.src.bytes[7] = 1;
  EXPECT_EQ(s.peek(same), 2000);

  // Another zone, protocol, port or family is another connection.
  EXPECT_EQ(s.peek(tcp4("10.0.0.1", 1234, "10.0.0.2", 80, 5)), 0);
  Conn udp = c;
  udp.proto = IPPROTO_UDP;
  EXPECT_EQ(s.peek(udp), 0);
  EXPECT_EQ(s.peek(tcp4("10.0.0.1", 1235, "10.0.0.2", 80)), 0);
  const Conn v6 = udp6("fd00::1", 1234, "fd00::2", 80);
  EXPECT_EQ(s.observe(v6, 7, 100, 1000), 0);
  EXPECT_EQ(s.observe(v6, 7, 300, 3000), 3000);
  EXPECT_EQ(s.peek(c), 2000);
  EXPECT_EQ(s.size(), 2u);
}

// ---- The keyed fingerprint ----

TEST(UsageStore, SipHashMatchesThePublishedVectors) {
  // The key 00 01 .. 0f and the messages 00 01 .. (n-1) of the SipHash
  // paper and its reference implementation's test vectors.
  const UsageSeed key{0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
  uint8_t msg[64];
  for (size_t i = 0; i < sizeof msg; i++) msg[i] = static_cast<uint8_t>(i);
  const std::pair<size_t, uint64_t> vectors[] = {
      {0, 0x726fdb47dd0e0e31ull},  {1, 0x74f839c593dc67fdull},  {7, 0xab0200f58b01d137ull},
      {8, 0x93f5f5799a932462ull},  {15, 0xa129ca6149be45e5ull}, {16, 0x3f2acc7f57c29bdbull},
      {40, 0x0e3ea96b5304a7d0ull}, {63, 0x958a324ceb064572ull},
  };
  for (const auto& [len, want] : vectors) EXPECT_EQ(usage_siphash24(key, msg, len), want) << len;
}

TEST(UsageStore, FingerprintsDifferForDifferentZonesAndFamilies) {
  const UsageSeed seed{0x0123456789abcdefull, 0xfedcba9876543210ull};
  const Conn c = tcp4("10.0.0.1", 1234, "10.0.0.2", 80);
  const uint64_t fp = usage_fingerprint(seed, c);

  // The same key: the reply tuple, the mark and stray bytes behind an IPv4
  // address are not part of it.
  Conn same = c;
  same.mark = 42;
  same.reply.src_port = 9999;
  same.orig.src.bytes[7] = 1;
  same.orig.dst.bytes[15] = 1;
  EXPECT_EQ(usage_fingerprint(seed, same), fp);

  // Another zone.
  const Conn zoned = tcp4("10.0.0.1", 1234, "10.0.0.2", 80, 5);
  EXPECT_NE(usage_fingerprint(seed, zoned), fp);
  // Another family with the very same address bytes (an IPv6 address whose
  // first four bytes are 10.0.0.1 and the rest zero).
  Conn v6 = c;
  v6.family = AF_INET6;
  EXPECT_NE(usage_fingerprint(seed, v6), fp);
  // Another protocol, port or direction.
  Conn udp = c;
  udp.proto = IPPROTO_UDP;
  EXPECT_NE(usage_fingerprint(seed, udp), fp);
  EXPECT_NE(usage_fingerprint(seed, tcp4("10.0.0.1", 1235, "10.0.0.2", 80)), fp);
  EXPECT_NE(usage_fingerprint(seed, tcp4("10.0.0.1", 1234, "10.0.0.2", 81)), fp);
  EXPECT_NE(usage_fingerprint(seed, tcp4("10.0.0.2", 80, "10.0.0.1", 1234)), fp);
  // Another seed: another fingerprint of the same key.
  EXPECT_NE(usage_fingerprint(UsageSeed{seed.k0, seed.k1 ^ 1}, c), fp);

  // In a store, they are separate connections with separate readings.
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  UsageStore::Session s = lock_ok(store);
  EXPECT_EQ(s.observe(c, 1, 10, 1000), 0);
  EXPECT_EQ(s.observe(zoned, 2, 10, 1000), 0);
  EXPECT_EQ(s.observe(v6, 3, 10, 1000), 0);
  EXPECT_EQ(s.observe(c, 1, 11, 2000), 2000);
  EXPECT_EQ(s.observe(zoned, 2, 11, 3000), 3000);
  EXPECT_EQ(s.observe(v6, 3, 11, 4000), 4000);
  EXPECT_EQ(s.size(), 3u);
  EXPECT_EQ(s.peek(same), 2000);
  EXPECT_EQ(s.peek(zoned), 3000);
  EXPECT_EQ(s.peek(v6), 4000);
  s.forget(v6);
  EXPECT_EQ(s.peek(c), 2000);
  EXPECT_EQ(s.peek(zoned), 3000);
  EXPECT_EQ(s.size(), 2u);
}

// ---- Processes ----

TEST(UsageStore, SecondProcessSeesTheFirstProcessReadings) {
  TempDir dir;
  const UsageStoreOptions o = options(dir);
  const Conn c = tcp4("10.0.0.1", 1234, "10.0.0.2", 80);
  const pid_t child = spawn([&] {
    auto store = UsageStore::open(o);
    if (!store) return 2;
    auto s = store->lock();
    if (!s) return 3;
    if (s->observe(c, 7, 100, 1000) != 0) return 4;
    if (s->observe(c, 7, 150, 2000) != 2000) return 5;
    return 0;
  });
  ASSERT_EQ(wait_for(child), 0);

  // A new process (a one-shot ctoffloadctl) reads what the child recorded.
  UsageStore store = open_ok(o);
  UsageStore::Session s = lock_ok(store);
  EXPECT_EQ(s.peek(c), 2000);
  EXPECT_EQ(s.observe(c, 7, 150, 3000), 2000);
  EXPECT_EQ(s.observe(c, 7, 170, 4000), 4000);
}

TEST(UsageStore, GrowsPastInitialSlotsAndKeepsEveryEntry) {
  TempDir dir;
  constexpr uint32_t kConns = 100000;
  UsageStore store = open_ok(options(dir));
  {
    UsageStore::Session s = lock_ok(store);
    EXPECT_EQ(s.slots(), kUsageInitialSlots);
    for (uint32_t i = 0; i < kConns; i++) {
      ASSERT_EQ(s.observe(conn_n(i), i, 1, 1000), 0) << i;
      ASSERT_LE(s.size() * 4, s.slots() * 3) << i;  // Never more than 3/4 full.
    }
    for (uint32_t i = 0; i < kConns; i++) ASSERT_EQ(s.observe(conn_n(i), i, 2, 2000 + i), 2000 + i) << i;
    EXPECT_EQ(s.size(), kConns);
    // 2^17 slots would be 76% full: grown to 2^18 at 75%.
    EXPECT_EQ(s.slots(), uint64_t{1} << 18);
    EXPECT_TRUE(s.last_error().ok()) << s.last_error().to_string();
  }
  // Another store object (as another process would) sees every entry.
  UsageStore again = open_ok(options(dir));
  UsageStore::Session s = lock_ok(again);
  EXPECT_EQ(s.size(), kConns);
  for (uint32_t i = 0; i < kConns; i++) ASSERT_EQ(s.peek(conn_n(i)), 2000 + i) << i;
  const struct stat st = stat_of(store.path());
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), sizeof(UsageFileHeader) + s.slots() * sizeof(UsageSlot));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_FALSE(std::filesystem::exists(store.path() + ".tmp"));
}

TEST(UsageStore, SeedIsRandomPerStoreAndSurvivesGrowth) {
  TempDir dir;
  UsageStoreOptions other_table = options(dir);
  other_table.table = "other";
  UsageStore store = open_ok(options(dir));
  UsageStore other = open_ok(other_table);
  { UsageStore::Session s = lock_ok(store); }
  { UsageStore::Session s = lock_ok(other); }
  const UsageFileHeader first = header_in_file(store.path());
  // Drawn for each new file: two stores never share a seed (nor is it
  // left zero).
  EXPECT_NE(first.seed, header_in_file(other.path()).seed);
  EXPECT_NE(first.seed, UsageSeed{});

  const HeldFile before(store.path());  // It grows three times: 256 -> 2048 slots.
  {
    UsageStore::Session s = lock_ok(store);
    for (uint32_t i = 0; i < 1000; i++) {
      ASSERT_EQ(s.observe(conn_n(i), 1, 1, 1000), 0);
      ASSERT_EQ(s.observe(conn_n(i), 1, 2, 2000), 2000);
    }
    EXPECT_EQ(s.slots(), 2048u);
    EXPECT_TRUE(s.last_error().ok()) << s.last_error().to_string();
  }
  // Grown into a new file, which copied the seed: the fingerprints in the
  // slots are still the connections'.
  EXPECT_NE(stat_of(store.path()).st_ino, before.inode());
  const UsageFileHeader grown = header_in_file(store.path());
  EXPECT_EQ(grown.slots, 2048u);
  EXPECT_EQ(grown.seed, first.seed);
  EXPECT_EQ(slot_index_in_file(store.path(), conn_n(999)).has_value(), true);

  // So did the shrink of retain().
  {
    UsageStore::Session s = lock_ok(store);
    const Conn kept[] = {conn_n(3)};
    EXPECT_EQ(s.retain(kept), 999u);
    EXPECT_EQ(s.slots(), kUsageInitialSlots);
    EXPECT_EQ(s.peek(conn_n(3)), 2000);
  }
  EXPECT_EQ(header_in_file(store.path()).seed, first.seed);

  // Another store object (another process) reads the file's seed.
  {
    UsageStore again = open_ok(options(dir));
    UsageStore::Session s = lock_ok(again);
    EXPECT_EQ(s.peek(conn_n(3)), 2000);
  }

  // clear() makes a new empty file, with a new seed.
  {
    UsageStore::Session s = lock_ok(store);
    s.clear();
    EXPECT_TRUE(s.last_error().ok()) << s.last_error().to_string();
  }
  EXPECT_NE(header_in_file(store.path()).seed, first.seed);
}

TEST(UsageStore, AnotherProcessGrewTheFileAndWeRemap) {
  TempDir dir;
  const UsageStoreOptions o = options(dir);
  UsageStore store = open_ok(o);
  const Conn c = tcp4("172.16.0.1", 1234, "172.16.0.2", 80);
  {
    UsageStore::Session s = lock_ok(store);
    EXPECT_EQ(s.observe(c, 1, 10, 1000), 0);
    EXPECT_EQ(s.observe(c, 1, 20, 2000), 2000);
    EXPECT_EQ(s.slots(), kUsageInitialSlots);
  }
  const struct stat before = stat_of(store.path());

  constexpr uint32_t kConns = 10000;
  const pid_t child = spawn([&] {
    auto other = UsageStore::open(o);
    if (!other) return 2;
    auto s = other->lock();
    if (!s) return 3;
    for (uint32_t i = 0; i < kConns; i++) {
      if (s->observe(conn_n(i), 1, 1, 4000) != 0) return 4;
      if (s->observe(conn_n(i), 1, 2, 5000) != 5000) return 5;
    }
    return s->last_error().ok() ? 0 : 6;
  });
  ASSERT_EQ(wait_for(child), 0);

  // The child replaced the file we have mapped.
  const struct stat after = stat_of(store.path());
  ASSERT_NE(before.st_ino, after.st_ino);

  UsageStore::Session s = lock_ok(store);
  EXPECT_GT(s.slots(), kUsageInitialSlots);
  EXPECT_EQ(s.size(), kConns + 1);
  EXPECT_EQ(s.peek(c), 2000);
  for (uint32_t i = 0; i < kConns; i++) ASSERT_EQ(s.peek(conn_n(i)), 5000) << i;
  EXPECT_EQ(s.observe(c, 1, 30, 6000), 6000);
}

TEST(UsageStore, WriterKilledMidSlotLeavesATombstoneNotGarbage) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  const std::string path = store.path();
  { UsageStore::Session s = lock_ok(store); }  // Makes the file and its seed.
  const UsageFileHeader h = header_in_file(path);
  ASSERT_EQ(h.slots, kUsageInitialSlots);
  // 'x' and 'y' start their probes at the same slot, so 'y' lies behind 'x'
  // and a lookup of 'y' must probe past 'x''s slot.
  const Conn x = conn_n(0);
  const uint64_t home = first_slot_of(h, x);
  uint32_t yi = 1;
  while (first_slot_of(h, conn_n(yi)) != home) yi++;
  const Conn y = conn_n(yi);
  std::vector<Conn> others;
  for (uint32_t i = 1; others.size() < 50; i++) {
    if (i != yi) others.push_back(conn_n(100000 + i));
  }
  {
    UsageStore::Session s = lock_ok(store);
    EXPECT_EQ(s.observe(x, 1, 10, 1000), 0);
    EXPECT_EQ(s.observe(x, 1, 20, 2000), 2000);
    EXPECT_EQ(s.observe(y, 2, 10, 1000), 0);
    EXPECT_EQ(s.observe(y, 2, 20, 3000), 3000);
    for (const Conn& c : others) {
      EXPECT_EQ(s.observe(c, 3, 10, 1000), 0);
      EXPECT_EQ(s.observe(c, 3, 20, 4000), 4000);
    }
    EXPECT_EQ(s.size(), 52u);
  }
  const std::optional<uint64_t> xi = slot_index_in_file(path, x);
  const std::optional<uint64_t> yslot = slot_index_in_file(path, y);
  ASSERT_TRUE(xi && yslot);
  ASSERT_NE(*xi, *yslot);
  ASSERT_EQ(*xi, home);  // 'x' went in first.

  // A writer killed in the middle of updating 'x': new packets, old tag.
  const uint64_t torn = 0xdeadbeef;
  write_in_file(path, slot_field_at(*xi, offsetof(UsageSlot, packets)), &torn, sizeof torn);

  UsageStore::Session s = lock_ok(store);
  EXPECT_EQ(s.peek(x), 0);     // Not garbage: unknown.
  EXPECT_EQ(s.peek(y), 3000);  // Found past the torn slot.
  for (const Conn& c : others) EXPECT_EQ(s.peek(c), 4000);
  // Neither its old nor its torn counters match: the torn slot is gone.
  EXPECT_EQ(s.observe(x, 1, 20, 5000), 0);
  EXPECT_EQ(s.observe(x, 1, 0xdeadbeef, 5000), 5000);
  EXPECT_EQ(s.peek(y), 3000);
  EXPECT_EQ(s.size(), 52u);
  // Rewritten in its own slot (the first free one of its probe).
  EXPECT_EQ(slot_index_in_file(path, x), xi);
}

TEST(UsageStore, RetainDropsATornSlotWithoutCountingIt) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  const Conn x = conn_n(1);
  const Conn y = conn_n(2);
  {
    UsageStore::Session s = lock_ok(store);
    EXPECT_EQ(s.observe(x, 1, 10, 1000), 0);
    EXPECT_EQ(s.observe(y, 1, 10, 1000), 0);
    EXPECT_EQ(s.observe(y, 1, 11, 2000), 2000);
  }
  const std::optional<uint64_t> xi = slot_index_in_file(store.path(), x);
  ASSERT_TRUE(xi);
  const int64_t torn = 77;
  write_in_file(store.path(), slot_field_at(*xi, offsetof(UsageSlot, last_used_ms)), &torn, sizeof torn);

  UsageStore::Session s = lock_ok(store);
  EXPECT_EQ(s.size(), 2u);  // Counted until someone looks.
  const std::vector<Conn> held{x, y};
  EXPECT_EQ(s.retain(held), 0u);
  EXPECT_EQ(s.size(), 1u);
  EXPECT_EQ(s.peek(x), 0);
  EXPECT_EQ(s.peek(y), 2000);
}

TEST(UsageStore, GrowthDropsATornSlot) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  const Conn x = conn_n(1);
  {
    UsageStore::Session s = lock_ok(store);
    EXPECT_EQ(s.observe(x, 1, 10, 1000), 0);
  }
  const std::optional<uint64_t> xi = slot_index_in_file(store.path(), x);
  ASSERT_TRUE(xi);
  const uint32_t torn = 99;
  write_in_file(store.path(), slot_field_at(*xi, offsetof(UsageSlot, ct_id)), &torn, sizeof torn);

  UsageStore::Session s = lock_ok(store);
  // Past 3/4 of 256 slots (the torn one counted): growth.
  for (uint32_t i = 100; i < 300; i++) EXPECT_EQ(s.observe(conn_n(i), 1, 1, 1000), 0);
  EXPECT_GT(s.slots(), kUsageInitialSlots);
  EXPECT_EQ(s.size(), 200u);  // Recounted by the growth, without 'x'.
  EXPECT_FALSE(slot_index_in_file(store.path(), x));
  EXPECT_EQ(s.peek(x), 0);
}

TEST(UsageStore, HalfWrittenNewEntryIsStillAnEmptySlot) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  const Conn x = conn_n(5);
  { UsageStore::Session s = lock_ok(store); }
  const UsageFileHeader h = header_in_file(store.path());
  // A writer killed after the body of a new entry, before its tag.
  UsageSlot half{};
  half.fingerprint = usage_fingerprint(h.seed, x);
  half.ct_id = 1;
  half.packets = 10;
  half.last_used_ms = 1234;
  half.tag = kUsageTagEmpty;
  write_in_file(store.path(), slot_field_at(first_slot_of(h, x), 0), &half, sizeof half);

  UsageStore::Session s = lock_ok(store);
  EXPECT_EQ(s.peek(x), 0);
  EXPECT_EQ(s.size(), 0u);
  EXPECT_EQ(s.observe(x, 1, 10, 2000), 0);
  EXPECT_EQ(s.observe(x, 1, 11, 3000), 3000);
  EXPECT_EQ(s.size(), 1u);
}

TEST(UsageStore, GarbageDataFileIsReplacedByAnEmptyStore) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  {
    const int fd = ::open(store.path().c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, "not a store", 11), 11);
    ::close(fd);
  }
  UsageStore::Session s = lock_ok(store);
  EXPECT_EQ(s.size(), 0u);
  EXPECT_EQ(s.slots(), kUsageInitialSlots);
  const Conn c = conn_n(1);
  EXPECT_EQ(s.observe(c, 1, 1, 1000), 0);
  EXPECT_EQ(s.observe(c, 1, 2, 2000), 2000);
  const UsageFileHeader h = header_in_file(store.path());
  EXPECT_EQ(std::memcmp(h.magic, "CTOFFUS1", 8), 0);
  EXPECT_EQ(h.version, 2u);
  EXPECT_EQ(h.slot_size, 32u);
  EXPECT_EQ(h.used, 1u);
}

TEST(UsageStore, FormatVersion1FileIsReplacedByAnEmptyVersion2Store) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  // A consistent version 1 file (64-byte slots, keys in the clear) holding
  // one live slot.
  struct {
    char magic[8] = {'C', 'T', 'O', 'F', 'F', 'U', 'S', '1'};
    uint32_t version = 1;
    uint32_t slot_size = 64;
    uint64_t slots = 256;
    uint64_t used = 1;
    uint64_t tombstones = 0;
    uint64_t reserved[3] = {};
  } v1;
  static_assert(sizeof v1 == 64);
  std::vector<uint8_t> file(64 + 256 * 64, 0);
  std::memcpy(file.data(), &v1, sizeof v1);
  std::memset(file.data() + 64, 0x5a, 64);
  {
    const int fd = ::open(store.path().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::write(fd, file.data(), file.size()), static_cast<ssize_t>(file.size()));
    ::close(fd);
  }
  const HeldFile before(store.path());

  UsageStore::Session s = lock_ok(store);
  EXPECT_NE(stat_of(store.path()).st_ino, before.inode());
  EXPECT_EQ(s.size(), 0u);
  EXPECT_EQ(s.slots(), kUsageInitialSlots);
  const UsageFileHeader h = header_in_file(store.path());
  EXPECT_EQ(h.version, kUsageVersion);
  EXPECT_EQ(h.slot_size, sizeof(UsageSlot));
  EXPECT_EQ(h.used, 0u);
  EXPECT_EQ(static_cast<uint64_t>(stat_of(store.path()).st_size), sizeof(UsageFileHeader) + 256 * sizeof(UsageSlot));
  const Conn c = conn_n(1);
  EXPECT_EQ(s.observe(c, 1, 1, 1000), 0);
  EXPECT_EQ(s.observe(c, 1, 2, 2000), 2000);
}

TEST(UsageStore, DeletedFilesLoseOnlyHistory) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  const Conn c = conn_n(1);
  {
    UsageStore::Session s = lock_ok(store);
    EXPECT_EQ(s.observe(c, 1, 1, 1000), 0);
    EXPECT_EQ(s.observe(c, 1, 2, 2000), 2000);
  }
  ASSERT_EQ(::unlink(store.path().c_str()), 0);
  ASSERT_EQ(::unlink(store.lock_path().c_str()), 0);
  UsageStore::Session s = lock_ok(store);
  EXPECT_TRUE(std::filesystem::exists(store.path()));
  EXPECT_TRUE(std::filesystem::exists(store.lock_path()));
  EXPECT_EQ(s.size(), 0u);
  EXPECT_EQ(s.observe(c, 1, 2, 3000), 0);
  EXPECT_EQ(s.observe(c, 1, 3, 4000), 4000);
}

// ---- The lock ----

TEST(UsageStore, LockTimesOutWithEtimedout) {
  TempDir dir;
  UsageStore store = open_ok(options(dir, 150));
  int ready[2];
  int quit[2];
  ASSERT_EQ(::pipe(ready), 0);
  ASSERT_EQ(::pipe(quit), 0);
  const UsageStoreOptions o = options(dir);
  ChildGuard child(spawn([&] {
    ::close(ready[0]);
    ::close(quit[1]);  // So that the read below sees EOF when the parent dies.
    auto other = UsageStore::open(o);
    if (!other) return 2;
    auto s = other->lock();
    if (!s) return 3;
    char b = 'r';
    if (::write(ready[1], &b, 1) != 1) return 4;
    if (::read(quit[0], &b, 1) != 1) return 5;  // Holds the lock until told.
    return 0;
  }));
  ::close(ready[1]);
  ::close(quit[0]);
  char b = 0;
  ASSERT_EQ(::read(ready[0], &b, 1), 1);

  const auto t0 = std::chrono::steady_clock::now();
  auto s = store.lock();
  const auto waited = std::chrono::steady_clock::now() - t0;
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.err(), ETIMEDOUT);
  EXPECT_NE(s.message().find(store.lock_path()), std::string::npos) << s.message();
  EXPECT_GE(waited, std::chrono::milliseconds(150));
  EXPECT_LT(waited, std::chrono::milliseconds(1500));

  UsageStoreOptions once = options(dir, 0);
  UsageStore no_wait = open_ok(once);  // Opening never waits for the lock.
  EXPECT_EQ(no_wait.lock().err(), ETIMEDOUT);

  ASSERT_EQ(::write(quit[1], &b, 1), 1);
  EXPECT_EQ(child.wait(), 0);
  ::close(ready[0]);
  ::close(quit[1]);
  auto after = store.lock();
  EXPECT_TRUE(after.ok()) << after.message();
}

TEST(UsageStore, SessionsOfOneProcessTakeTurns) {
  TempDir dir;
  UsageStore store = open_ok(options(dir, 300));
  UsageStore::Session held = lock_ok(store);
  auto second = store.lock();  // Another thread would get the same.
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.err(), ETIMEDOUT);
  EXPECT_NE(second.message().find("this process"), std::string::npos) << second.message();

  // Moving the store and the session keeps both working.
  UsageStore moved = std::move(store);
  UsageStore::Session s = std::move(held);
  EXPECT_EQ(s.observe(conn_n(1), 1, 1, 1000), 0);
  std::thread other([&] {
    auto t = moved.lock();
    EXPECT_TRUE(t.ok()) << t.message();
    if (t.ok()) {
      EXPECT_EQ(t->observe(conn_n(1), 1, 2, 2000), 2000);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  { UsageStore::Session done = std::move(s); }  // Releases: the thread goes on.
  other.join();
  UsageStore::Session last = lock_ok(moved);
  EXPECT_EQ(last.peek(conn_n(1)), 2000);
}

TEST(UsageStore, ConcurrentProcessesNeverLoseAReading) {
  TempDir dir;
  const UsageStoreOptions o = options(dir, 20000);
  constexpr int kChildren = 4;
  constexpr uint32_t kOwn = 2000;
  constexpr uint32_t kShared = 300;
  // Each observation in a session of its own, so the children interleave
  // everywhere, growth included.
  auto observe_once = [](UsageStore& store, const Conn& c, uint64_t packets, long long now) -> long long {
    auto s = store.lock();
    if (!s) return -1;
    return s->observe(c, 1, packets, now);
  };
  std::vector<pid_t> kids;
  kids.reserve(kChildren);
  for (int k = 0; k < kChildren; k++) {
    kids.push_back(spawn([&, k] {
      auto store = UsageStore::open(o);
      if (!store) return 2;
      const long long now = 1000 + k;
      for (uint32_t i = 0; i < kOwn; i++) {
        const Conn own = conn_n(100000 * (k + 1) + i);
        if (observe_once(*store, own, 1, 1) != 0) return 3;
        if (observe_once(*store, own, 2, now) != now) return 4;
        if (i < kShared) {
          // Packets unique to this child: its second reading always moves.
          const Conn shared = conn_n(i);
          if (observe_once(*store, shared, 10 * k + 1, now) < 0) return 5;
          if (observe_once(*store, shared, 10 * k + 2, now) != now) return 6;
        }
      }
      return 0;
    }));
  }
  for (pid_t pid : kids) EXPECT_EQ(wait_for(pid), 0);

  UsageStore store = open_ok(o);
  UsageStore::Session s = lock_ok(store);
  EXPECT_EQ(s.size(), kChildren * kOwn + kShared);
  for (int k = 0; k < kChildren; k++) {
    for (uint32_t i = 0; i < kOwn; i++) ASSERT_EQ(s.peek(conn_n(100000 * (k + 1) + i)), 1000 + k) << k << " " << i;
  }
  for (uint32_t i = 0; i < kShared; i++) {
    const long long t = s.peek(conn_n(i));
    EXPECT_GE(t, 1000) << i;
    EXPECT_LT(t, 1000 + kChildren) << i;
  }
}

// ---- Pruning ----

TEST(UsageStore, ForgetAndRetain) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  UsageStore::Session s = lock_ok(store);
  const Conn a = tcp4("10.0.0.1", 1001, "10.0.0.2", 80);
  const Conn b = tcp4("10.0.0.1", 1002, "10.0.0.2", 80);
  const Conn c = udp6("fd00::1", 1003, "fd00::2", 53, 3);
  const Conn d = tcp4("10.0.0.1", 1004, "10.0.0.2", 80);
  long long now = 1000;
  for (const Conn& x : {a, b, c, d}) {
    EXPECT_EQ(s.observe(x, 1, 1, now), 0);
    EXPECT_EQ(s.observe(x, 1, 2, now + 1), now + 1);
    now += 100;
  }
  EXPECT_EQ(s.size(), 4u);

  s.forget(b);
  EXPECT_EQ(s.peek(b), 0);
  EXPECT_EQ(s.size(), 3u);
  s.forget(b);  // Absent: nothing happens.
  s.forget(tcp4("10.9.9.9", 1, "10.0.0.2", 80));
  EXPECT_EQ(s.size(), 3u);
  EXPECT_EQ(s.observe(b, 1, 2, 5000), 0);  // Forgotten: a first reading again.

  // Held connections match by key: another mark or reply tuple is the same
  // connection.
  Conn c_natted = c;
  c_natted.mark = 7;
  c_natted.reply.dst_port = 4242;
  const std::vector<Conn> held{a, c_natted};
  const size_t dropped = s.retain(held);
  EXPECT_EQ(dropped, 2u);
  EXPECT_EQ(s.size(), 2u);
  EXPECT_EQ(s.peek(a), 1001);
  EXPECT_EQ(s.peek(c), 1201);
  EXPECT_EQ(s.peek(b), 0);
  EXPECT_EQ(s.peek(d), 0);
  EXPECT_TRUE(s.last_error().ok()) << s.last_error().to_string();
}

TEST(UsageStore, ForgottenSlotDoesNotHideTheKeysBehindIt) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  { UsageStore::Session s = lock_ok(store); }  // Makes the file and its seed.
  const UsageFileHeader h = header_in_file(store.path());
  // 'x', 'y' and 'z' start their probes at the same slot, in this order.
  const uint64_t home = first_slot_of(h, conn_n(0));
  std::vector<Conn> chain{conn_n(0)};
  for (uint32_t i = 1; chain.size() < 3; i++) {
    if (first_slot_of(h, conn_n(i)) == home) chain.push_back(conn_n(i));
  }
  const Conn& x = chain[0];
  const Conn& y = chain[1];
  const Conn& z = chain[2];
  UsageStore::Session s = lock_ok(store);
  long long now = 1000;
  for (const Conn& c : chain) {
    EXPECT_EQ(s.observe(c, 1, 1, now), 0);
    EXPECT_EQ(s.observe(c, 1, 2, now + 1), now + 1);
    now += 1000;
  }
  s.forget(x);
  s.forget(y);
  EXPECT_EQ(s.peek(x), 0);
  EXPECT_EQ(s.peek(y), 0);
  EXPECT_EQ(s.peek(z), 3001);
  EXPECT_EQ(s.size(), 1u);
  // 'y' comes back into the first deleted slot, and 'z' is still found.
  EXPECT_EQ(s.observe(y, 2, 5, 4000), 0);
  EXPECT_EQ(slot_index_in_file(store.path(), y), home);
  EXPECT_EQ(s.observe(y, 2, 6, 5000), 5000);
  EXPECT_EQ(s.observe(z, 1, 2, 6000), 3001);
  EXPECT_EQ(s.size(), 2u);
}

TEST(UsageStore, RetainKeepsExactlyTheHeldConnections) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  UsageStore::Session s = lock_ok(store);
  // IPv4 and IPv6 connections in two zones; each has a known last use.
  std::vector<Conn> all;
  for (uint32_t i = 0; i < 1500; i++) all.push_back(conn_n(i));
  for (uint32_t i = 0; i < 1500; i++) {
    Conn c = udp6("fd00::1", static_cast<uint16_t>(1024 + i), "fd00::2", 53, static_cast<uint16_t>(i % 2));
    all.push_back(c);
  }
  for (size_t i = 0; i < all.size(); i++) {
    ASSERT_EQ(s.observe(all[i], 1, 1, 1000), 0);
    ASSERT_EQ(s.observe(all[i], 1, 2, 2000 + static_cast<long long>(i)), 2000 + static_cast<long long>(i));
  }
  ASSERT_EQ(s.size(), 3000u);

  // Held: every third connection, some twice, and connections the store
  // never saw (which retain() does not add).
  std::vector<Conn> held;
  for (size_t i = 0; i < all.size(); i += 3) held.push_back(all[i]);
  for (size_t i = 0; i < 300; i += 3) held.push_back(all[i]);
  for (uint32_t i = 0; i < 50; i++) held.push_back(conn_n(500000 + i));
  // Same key, other zone: not held.
  Conn zone_twin = all[1500];
  zone_twin.zone = 7;
  held.push_back(zone_twin);

  EXPECT_EQ(s.retain(held), 2000u);
  EXPECT_EQ(s.size(), 1000u);
  for (size_t i = 0; i < all.size(); i++) {
    const long long want = i % 3 == 0 ? 2000 + static_cast<long long>(i) : 0;
    ASSERT_EQ(s.peek(all[i]), want) << i;
  }
  for (uint32_t i = 0; i < 50; i++) EXPECT_EQ(s.peek(conn_n(500000 + i)), 0);
  EXPECT_EQ(s.peek(zone_twin), 0);
  EXPECT_TRUE(s.last_error().ok()) << s.last_error().to_string();

  // Again: nothing more to drop.  Nothing held: everything goes.
  EXPECT_EQ(s.retain(held), 0u);
  EXPECT_EQ(s.size(), 1000u);
  EXPECT_EQ(s.retain({}), 1000u);
  EXPECT_EQ(s.size(), 0u);
  EXPECT_EQ(s.slots(), kUsageInitialSlots);
}

TEST(UsageStore, RetainShrinksAnEmptiedStore) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  UsageStore::Session s = lock_ok(store);
  for (uint32_t i = 0; i < 10000; i++) EXPECT_EQ(s.observe(conn_n(i), 1, 1, 1000), 0);
  EXPECT_EQ(s.slots(), 16384u);
  const Conn kept[] = {conn_n(7)};
  EXPECT_EQ(s.retain(kept), 9999u);
  EXPECT_EQ(s.size(), 1u);
  EXPECT_EQ(s.slots(), kUsageInitialSlots);
  EXPECT_EQ(s.observe(conn_n(7), 1, 2, 2000), 2000);
  EXPECT_TRUE(s.last_error().ok()) << s.last_error().to_string();
}

TEST(UsageStore, ClearDropsEverything) {
  TempDir dir;
  UsageStore store = open_ok(options(dir));
  UsageStore::Session s = lock_ok(store);
  for (uint32_t i = 0; i < 1000; i++) {
    EXPECT_EQ(s.observe(conn_n(i), 1, 1, 1000), 0);
    EXPECT_EQ(s.observe(conn_n(i), 1, 2, 2000), 2000);
  }
  s.clear();
  EXPECT_TRUE(s.last_error().ok()) << s.last_error().to_string();
  EXPECT_EQ(s.size(), 0u);
  EXPECT_EQ(s.slots(), kUsageInitialSlots);
  for (uint32_t i = 0; i < 1000; i++) ASSERT_EQ(s.peek(conn_n(i)), 0);
  EXPECT_EQ(s.observe(conn_n(1), 1, 2, 3000), 0);
  EXPECT_EQ(s.observe(conn_n(1), 1, 3, 4000), 4000);
}

// ---- Failures ----

TEST(UsageStore, GrowthFailureStillAnswersAndSetsLastError) {
  TempDir dir;
  const UsageStoreOptions o = options(dir);
  // In a child limited to files of 12000 bytes: the initial file (8256
  // bytes) fits, the first growth (16448) fails with EFBIG.
  const pid_t child = spawn([&] {
    (void)::signal(SIGXFSZ, SIG_IGN);
    const rlimit lim{12000, 12000};
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return 2;
    auto store = UsageStore::open(o);
    if (!store) return 3;
    auto s = store->lock();
    if (!s) return 4;
    for (uint32_t i = 0; i < 192; i++) {
      if (s->observe(conn_n(i), 1, 1, 1000) != 0) return 5;
    }
    if (!s->last_error().ok()) return 6;
    // Past 3/4 full: growth fails, entries still go in up to 7/8 (224).
    for (uint32_t i = 192; i < 300; i++) {
      if (s->observe(conn_n(i), 1, 1, 1000) != 0) return 7;
    }
    if (s->last_error().err() != EFBIG) return 8;
    if (s->last_error().message().find(".tmp") == std::string::npos) return 9;
    if (s->slots() != kUsageInitialSlots || s->size() != 224) return 10;
    if (std::filesystem::exists(store->path() + ".tmp")) return 11;
    // The answers stay right: recorded ones move, unrecorded ones are read
    // for the first time again.
    for (uint32_t i = 0; i < 224; i++) {
      if (s->observe(conn_n(i), 1, 2, 2000) != 2000) return 12;
    }
    if (s->observe(conn_n(250), 1, 2, 2000) != 0) return 13;
    return 0;
  });
  ASSERT_EQ(wait_for(child), 0);

  // Without the limit, the next insertion grows the file and keeps all.
  UsageStore store = open_ok(o);
  UsageStore::Session s = lock_ok(store);
  EXPECT_EQ(s.size(), 224u);
  EXPECT_EQ(s.observe(conn_n(250), 1, 2, 3000), 0);
  EXPECT_TRUE(s.last_error().ok()) << s.last_error().to_string();
  EXPECT_GT(s.slots(), kUsageInitialSlots);
  for (uint32_t i = 0; i < 224; i++) ASSERT_EQ(s.peek(conn_n(i)), 2000) << i;
}

TEST(UsageStore, NamespacesGetDifferentFiles) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root for unshare(CLONE_NEWNET)";
  TempDir dir;
  const UsageStoreOptions o = options(dir);
  UsageStore store = open_ok(o);
  const Conn c = conn_n(1);
  int out[2];
  ASSERT_EQ(::pipe(out), 0);
  const pid_t child = spawn([&] {
    if (::unshare(CLONE_NEWNET) != 0) return 2;
    auto other = UsageStore::open(o);
    if (!other) return 3;
    auto s = other->lock();
    if (!s) return 4;
    if (s->observe(c, 1, 1, 1000) != 0 || s->observe(c, 1, 2, 2000) != 2000) return 5;
    const std::string& p = other->path();
    if (::write(out[1], p.data(), p.size()) != static_cast<ssize_t>(p.size())) return 6;
    return 0;
  });
  ::close(out[1]);
  std::string child_path;
  char buf[512];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) child_path.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  ASSERT_EQ(wait_for(child), 0);

  EXPECT_NE(child_path, store.path());
  EXPECT_EQ(child_path.rfind(o.dir + "/ctoffload.net", 0), 0u) << child_path;
  EXPECT_TRUE(std::filesystem::exists(child_path));
  UsageStore::Session s = lock_ok(store);
  EXPECT_EQ(s.peek(c), 0);  // The child's namespace's reading is not ours.
}

TEST(UsageStore, BadDirectoryNamesTheDirectory) {
  TempDir dir;
  const std::string file = dir.path() + "/regular";
  {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    ::close(fd);
  }
  UsageStoreOptions o;
  o.table = "ctoffload";

  o.dir = file + "/sub";
  auto under_file = UsageStore::open(o);
  ASSERT_FALSE(under_file.ok());
  EXPECT_EQ(under_file.err(), ENOTDIR);
  EXPECT_NE(under_file.message().find(o.dir), std::string::npos) << under_file.message();

  o.dir = file;
  auto is_file = UsageStore::open(o);
  ASSERT_FALSE(is_file.ok());
  EXPECT_EQ(is_file.err(), ENOTDIR);
  EXPECT_NE(is_file.message().find(file), std::string::npos) << is_file.message();

  o.dir = dir.path() + "/missing/sub";
  auto missing = UsageStore::open(o);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.err(), ENOENT);
  EXPECT_NE(missing.message().find(o.dir), std::string::npos) << missing.message();
}

TEST(UsageStore, InvalidTableNameIsEinval) {
  TempDir dir;
  for (const std::string& bad : {std::string(), std::string("a/b"), std::string(".."), std::string(".hidden"),
                                 std::string("sp ace"), std::string(129, 'a')}) {
    UsageStoreOptions o = options(dir);
    o.table = bad;
    auto s = UsageStore::open(o);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.err(), EINVAL) << bad;
  }
  UsageStoreOptions o = options(dir);
  o.table = "my_table-1.v2";
  auto ok = UsageStore::open(o);
  ASSERT_TRUE(ok.ok()) << ok.message();
  struct stat ns {};
  ASSERT_EQ(::stat("/proc/self/ns/net", &ns), 0);
  EXPECT_EQ(ok->path(), o.dir + "/my_table-1.v2.net" + std::to_string(ns.st_ino) + ".usage");
  EXPECT_EQ(ok->lock_path(), o.dir + "/my_table-1.v2.net" + std::to_string(ns.st_ino) + ".lock");
  EXPECT_EQ(
      stat_of(o.dir).st_mode & 0777, 0755u & ~[] {
        const mode_t m = ::umask(0);
        ::umask(m);
        return m;
      }());
  EXPECT_EQ(stat_of(ok->lock_path()).st_mode & 0777, 0600u);
}

}  // namespace
}  // namespace ctoffload
