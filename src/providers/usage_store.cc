// usage_store.cc - the shared store of connection readings (usage_store.h).
#include "providers/usage_store.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>

namespace ctoffload {

namespace {

constexpr size_t kHeaderSize = sizeof(UsageFileHeader);
constexpr size_t kSlotSize = sizeof(UsageSlot);
constexpr size_t kBodyOffset = 4;                      // Everything after the tag.
constexpr size_t kBodySize = kSlotSize - kBodyOffset;  // What the tag checks.
constexpr size_t kKeySize = 40;                        // What the fingerprint hashes.
constexpr size_t kMaxTableName = 128;
constexpr const char* kNetnsPath = "/proc/self/ns/net";

static_assert(offsetof(UsageSlot, ct_id) == kBodyOffset);
static_assert(offsetof(UsageSlot, fingerprint) == 8);
static_assert(offsetof(UsageFileHeader, seed) == 40);

uint32_t fnv1a32(const uint8_t* p, size_t n) {
  uint32_t h = 0x811c9dc5u;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x01000193u;
  }
  return h;
}

// SipHash reads its input as little-endian words whatever the host.
uint64_t load_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

struct SipState {
  uint64_t v0, v1, v2, v3;

  void round() {
    v0 += v1;
    v1 = std::rotl(v1, 13);
    v1 ^= v0;
    v0 = std::rotl(v0, 32);
    v2 += v3;
    v3 = std::rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = std::rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = std::rotl(v1, 17);
    v1 ^= v2;
    v2 = std::rotl(v2, 32);
  }
  // Two compression rounds per message word (the "2" of SipHash-2-4).
  void absorb(uint64_t m) {
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
};

// The connection's key in its 40 canonical bytes (usage_store.h): family at
// 0, proto at 1, zone at 2, source address at 4, destination address at 20,
// source port at 36, destination port at 38.
struct KeyBytes {
  uint8_t b[kKeySize];
};

KeyBytes key_bytes(const Conn& conn) {
  KeyBytes k;
  std::memset(k.b, 0, sizeof k.b);
  k.b[0] = conn.family;
  k.b[1] = conn.proto;
  std::memcpy(k.b + 2, &conn.zone, 2);
  // IPv4 addresses are their first four bytes; stray bytes behind them must
  // not make two keys of one connection.
  const size_t alen = conn.family == AF_INET ? 4 : 16;
  std::memcpy(k.b + 4, conn.orig.src.bytes, alen);
  std::memcpy(k.b + 20, conn.orig.dst.bytes, alen);
  std::memcpy(k.b + 36, &conn.orig.src_port, 2);
  std::memcpy(k.b + 38, &conn.orig.dst_port, 2);
  return k;
}

const uint8_t* bytes_of(const UsageSlot& s) { return reinterpret_cast<const uint8_t*>(&s); }

bool is_live(const UsageSlot& s) { return s.tag != kUsageTagEmpty && s.tag != kUsageTagDeleted; }

// A live-tagged slot whose tag matches its bytes (not half-written).
bool is_intact(const UsageSlot& s) { return is_live(s) && s.tag == usage_slot_check(s); }

// Writes 'v' into 'dst': the body first, the tag last, so that a writer
// killed in between leaves the old tag over new bytes - an empty slot stays
// empty, a tombstone stays a tombstone, a live slot fails its check.
void write_slot(UsageSlot* dst, const UsageSlot& v) {
  const uint32_t tag = usage_slot_check(v);
  std::memcpy(reinterpret_cast<uint8_t*>(dst) + kBodyOffset, bytes_of(v) + kBodyOffset, kBodySize);
  // Release: the body's stores may not move after the tag's.
  std::atomic_ref<uint32_t>(dst->tag).store(tag, std::memory_order_release);
}

// One aligned 4-byte store: a deletion cannot be torn.
void delete_slot(UsageSlot* dst) {
  std::atomic_ref<uint32_t>(dst->tag).store(kUsageTagDeleted, std::memory_order_release);
}

void dec(uint64_t& counter) {
  if (counter > 0) counter--;
}

// The smallest slot count at which 'live' entries and one more fill at most
// half the table, leaving room before the next growth at 3/4; 0 when even
// kUsageMaxSlots is too small.
uint64_t fitting_slots(uint64_t live) {
  uint64_t n = kUsageInitialSlots;
  while ((live + 1) * 2 > n) {
    if (n >= kUsageMaxSlots) return 0;
    n *= 2;
  }
  return n;
}

bool valid_table(const std::string& t) {
  if (t.empty() || t.size() > kMaxTableName || t[0] == '.') return false;
  for (char c : t) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
    if (!ok) return false;
  }
  return true;
}

// A descriptor, closed on destruction.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

bool same_file(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }

}  // namespace

uint64_t usage_siphash24(const UsageSeed& key, const void* data, size_t len) {
  const auto* p = static_cast<const uint8_t*>(data);
  SipState s{key.k0 ^ 0x736f6d6570736575ull, key.k1 ^ 0x646f72616e646f6dull, key.k0 ^ 0x6c7967656e657261ull,
             key.k1 ^ 0x7465646279746573ull};
  const size_t whole = len - len % 8;
  for (size_t i = 0; i < whole; i += 8) s.absorb(load_le64(p + i));
  // The last word: the remaining bytes, and the length's low byte on top.
  uint64_t last = static_cast<uint64_t>(len & 0xff) << 56;
  for (size_t i = whole; i < len; i++) last |= static_cast<uint64_t>(p[i]) << (8 * (i - whole));
  s.absorb(last);
  // Four finalization rounds (the "4").
  s.v2 ^= 0xff;
  for (int i = 0; i < 4; i++) s.round();
  return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

uint64_t usage_fingerprint(const UsageSeed& seed, const Conn& conn) {
  const KeyBytes k = key_bytes(conn);
  return usage_siphash24(seed, k.b, sizeof k.b);
}

uint32_t usage_slot_check(const UsageSlot& slot) {
  const uint32_t h = fnv1a32(bytes_of(slot) + kBodyOffset, kBodySize);
  return h < 2 ? h + 2 : h;
}

// ---- The mapped data file ----

namespace {

// A shared mapping of a whole data file, unmapped on destruction.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* base, size_t len, const struct stat& st) : base_(base), len_(len), dev_(st.st_dev), ino_(st.st_ino) {}
  Mapping(Mapping&& o) noexcept
      : base_(std::exchange(o.base_, nullptr)), len_(std::exchange(o.len_, 0)), dev_(o.dev_), ino_(o.ino_) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      base_ = std::exchange(o.base_, nullptr);
      len_ = std::exchange(o.len_, 0);
      dev_ = o.dev_;
      ino_ = o.ino_;
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  void reset() {
    if (base_) ::munmap(base_, len_);
    base_ = nullptr;
    len_ = 0;
  }
  bool mapped() const { return base_ != nullptr; }
  bool is(const struct stat& st) const { return mapped() && st.st_dev == dev_ && st.st_ino == ino_; }
  UsageFileHeader* header() const { return static_cast<UsageFileHeader*>(base_); }
  UsageSlot* slots() const { return reinterpret_cast<UsageSlot*>(static_cast<uint8_t*>(base_) + kHeaderSize); }

 private:
  void* base_ = nullptr;
  size_t len_ = 0;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

bool header_ok(const UsageFileHeader& h, off_t file_size) {
  if (std::memcmp(h.magic, kUsageMagic, sizeof h.magic) != 0) return false;
  if (h.version != kUsageVersion || h.slot_size != kSlotSize) return false;
  if (h.slots < kUsageInitialSlots || h.slots > kUsageMaxSlots || (h.slots & (h.slots - 1)) != 0) return false;
  return static_cast<uint64_t>(file_size) == kHeaderSize + h.slots * kSlotSize;
}

// Where a fingerprint is, or where it would go.
struct Probe {
  UsageSlot* found = nullptr;  // The fingerprint's intact slot.
  UsageSlot* reuse = nullptr;  // The first tombstone or half-written slot on the way.
  bool reuse_torn = false;     // 'reuse' is half-written (counted as used, not as a tombstone).
  UsageSlot* empty = nullptr;  // The empty slot that ended the probe.
};

Probe probe(const Mapping& m, uint64_t fingerprint) {
  Probe p;
  const uint64_t n = m.header()->slots;
  const uint64_t mask = n - 1;
  UsageSlot* slots = m.slots();
  uint64_t i = usage_first_slot(fingerprint, n);
  // Bounded by the slot count: counters a dead writer left wrong must not
  // make a probe loop forever.
  for (uint64_t k = 0; k < n; k++, i = (i + 1) & mask) {
    UsageSlot* s = &slots[i];
    if (s->tag == kUsageTagEmpty) {
      p.empty = s;
      break;
    }
    if (s->tag == kUsageTagDeleted) {
      if (!p.reuse) p.reuse = s;
      continue;
    }
    if (s->fingerprint != fingerprint) continue;
    if (s->tag == usage_slot_check(*s)) {
      p.found = s;
      break;
    }
    // Ours, half-written: a tombstone; an intact copy cannot follow
    // (insertion would have reused this slot or one before it).
    if (!p.reuse) {
      p.reuse = s;
      p.reuse_torn = true;
    }
  }
  return p;
}

// Draws a new seed from getrandom(2), the kernel's CSPRNG (which blocks only
// until it is first seeded at boot).  Returns 0 or an errno.
int draw_seed(UsageSeed& seed) {
  uint8_t buf[sizeof seed];
  size_t got = 0;
  while (got < sizeof buf) {
    const ssize_t n = ::getrandom(buf + got, sizeof buf - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    got += static_cast<size_t>(n);
  }
  std::memcpy(&seed, buf, sizeof seed);
  return 0;
}

}  // namespace

struct UsageStore::Impl {
  std::string path;
  std::string tmp_path;
  std::string lock_path;
  int timeout_ms = 0;
  std::mutex thread_mutex;  // Sessions of this process on this store.
  Mapping map;              // The data file, under the lock.

  UsageFileHeader& header() const { return *map.header(); }
  uint64_t fingerprint(const Conn& conn) const { return usage_fingerprint(header().seed, conn); }

  // Under the lock: maps the current data file (creating it when missing,
  // replacing it when not understood).
  Status sync() {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      if (errno != ENOENT) return Status::error(errno, "cannot stat the usage store " + path);
      map.reset();  // Deleted under us: start over.
      return rebuild(kUsageInitialSlots);
    }
    if (map.is(st)) return Status();
    Fd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) return Status::error(errno, "cannot open the usage store " + path);
    if (::fstat(fd.get(), &st) != 0) return Status::error(errno, "cannot stat the usage store " + path);
    UsageFileHeader h{};
    const ssize_t got = ::pread(fd.get(), &h, sizeof h, 0);
    if (got < 0) return Status::error(errno, "cannot read the usage store " + path);
    if (static_cast<size_t>(got) != sizeof h || !header_ok(h, st.st_size)) {
      map.reset();
      return rebuild(kUsageInitialSlots);  // Garbage or another format: a cache starts over.
    }
    const size_t len = static_cast<size_t>(st.st_size);
    void* base = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (base == MAP_FAILED) return Status::error(errno, "cannot map the usage store " + path);
    map = Mapping(base, len, st);
    return Status();
  }

  // Writes a data file of 'slots' slots holding the intact entries of the
  // current mapping (if any) under its seed, renames it over the data file
  // and maps it.  Without a mapping, or for an empty file, the new file gets
  // a new seed.  On failure the current mapping and file are untouched.
  Status rebuild(uint64_t slots) { return build(slots, true); }
  Status rebuild_empty(uint64_t slots) { return build(slots, false); }

  Status build(uint64_t slots, bool copy) {
    copy = copy && map.mapped();
    UsageSeed seed{};
    if (copy) {
      seed = header().seed;  // The fingerprints in the slots stay valid.
    } else if (int err = draw_seed(seed); err != 0) {
      return Status::error(err, "cannot draw a random seed (getrandom) for " + path);
    }
    const size_t len = kHeaderSize + slots * kSlotSize;
    // O_TRUNC: a .tmp left by a writer killed mid-growth is ours to reuse
    // (we hold the lock).
    Fd fd(::open(tmp_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() < 0) return Status::error(errno, "cannot create " + tmp_path);
    auto fail = [&](int err, const std::string& what) {
      ::unlink(tmp_path.c_str());
      return Status::error(err, what);
    };
    // Reserve the space now: on tmpfs, a page that cannot be allocated when
    // first written through the mapping is a SIGBUS.
    if (int err = ::posix_fallocate(fd.get(), 0, static_cast<off_t>(len)); err != 0) {
      return fail(err, "cannot allocate " + std::to_string(len) + " bytes for " + tmp_path);
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return fail(errno, "cannot stat " + tmp_path);
    void* base = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    if (base == MAP_FAILED) return fail(errno, "cannot map " + tmp_path);
    Mapping fresh(base, len, st);
    UsageFileHeader& h = *fresh.header();
    std::memcpy(h.magic, kUsageMagic, sizeof h.magic);
    h.version = kUsageVersion;
    h.slot_size = kSlotSize;
    h.slots = slots;
    h.seed = seed;
    if (copy) {
      const uint64_t n = header().slots;
      const UsageSlot* old = map.slots();
      for (uint64_t i = 0; i < n; i++) {
        if (!is_intact(old[i])) continue;  // Tombstones and half-written slots stay behind.
        const Probe p = probe(fresh, old[i].fingerprint);
        if (p.found || !p.empty) continue;  // A duplicate (never written so), or full.
        *p.empty = old[i];
        h.used++;
      }
    }
    // Atomic: other processes see the old file or the new one, whole.
    if (::rename(tmp_path.c_str(), path.c_str()) != 0) return fail(errno, "cannot rename " + tmp_path + " to " + path);
    map = std::move(fresh);
    return Status();
  }

  // Makes room for one more entry in an empty slot: rehashes into the
  // smallest size that fits the entries with room to spare.
  Status grow() {
    const uint64_t target = fitting_slots(header().used);
    if (target == 0) {
      return Status::error(ENOSPC,
                           "the usage store " + path + " is full (" + std::to_string(kUsageMaxSlots) + " slots)");
    }
    return rebuild(target);
  }

  bool wants_growth() const {
    const UsageFileHeader& h = header();
    return (h.used + h.tombstones + 1) * 4 > h.slots * 3;
  }
  // Past growth's threshold, an entry still goes in when growth failed, up
  // to 7/8 full.
  bool has_room() const {
    const UsageFileHeader& h = header();
    return (h.used + h.tombstones + 1) * 8 <= h.slots * 7;
  }

  // Records 'v' (a fingerprint not held intact) where probe 'p' says.
  Status insert(const UsageSlot& v, Probe p) {
    Status err;
    if (!p.reuse && (!p.empty || wants_growth())) {
      err = grow();
      if (err.ok()) {
        p = probe(map, v.fingerprint);  // Same seed, new slot count.
      } else if (!has_room()) {
        return err;
      }
    }
    UsageFileHeader& h = header();
    if (p.reuse) {
      // Raise before, lower after: a writer killed in between leaves the
      // counters high, never low.
      if (!p.reuse_torn) h.used++;
      write_slot(p.reuse, v);
      if (!p.reuse_torn) dec(h.tombstones);
      return err;
    }
    if (!p.empty) return Status::error(ENOSPC, "the usage store " + path + " has no free slot");
    h.used++;
    write_slot(p.empty, v);
    return err;
  }

  void erase(UsageSlot* s) {
    UsageFileHeader& h = header();
    h.tombstones++;
    delete_slot(s);
    dec(h.used);
  }
};

// ---- UsageStore ----

UsageStore::UsageStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
UsageStore::UsageStore(UsageStore&&) noexcept = default;
UsageStore& UsageStore::operator=(UsageStore&&) noexcept = default;
UsageStore::~UsageStore() = default;

const std::string& UsageStore::path() const { return impl_->path; }
const std::string& UsageStore::lock_path() const { return impl_->lock_path; }

Result<UsageStore> UsageStore::open(const UsageStoreOptions& opts) {
  if (!valid_table(opts.table)) {
    return Status::error(EINVAL, "usage store: table name '" + opts.table + "' must be 1 to " +
                                     std::to_string(kMaxTableName) +
                                     " letters, digits, '_', '-' or '.', not starting with '.'");
  }
  std::string dir = opts.dir;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  if (dir.empty()) return Status::error(EINVAL, "usage store: the directory name is empty");

  struct stat ns;
  if (::stat(kNetnsPath, &ns) != 0) {
    return Status::error(
        errno, std::string("usage store: cannot read the network namespace of this process (") + kNetnsPath + ")");
  }
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::error(errno, "usage store: cannot create the directory " + dir);
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return Status::error(errno, "usage store: cannot stat the directory " + dir);
  if (!S_ISDIR(st.st_mode)) return Status::error(ENOTDIR, "usage store: " + dir + " is not a directory");

  auto impl = std::make_unique<Impl>();
  const std::string base = dir + "/" + opts.table + ".net" + std::to_string(ns.st_ino);
  impl->path = base + ".usage";
  impl->tmp_path = impl->path + ".tmp";
  impl->lock_path = base + ".lock";
  impl->timeout_ms = opts.lock_timeout_ms;
  Fd fd(::open(impl->lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (fd.get() < 0) return Status::error(errno, "usage store: cannot create the lock file " + impl->lock_path);
  return UsageStore(std::move(impl));
}

namespace {

using Clock = std::chrono::steady_clock;

// Calls 'attempt' until it returns true (then returns true) or 'deadline'
// passes (then returns false), sleeping 1, 2, 4, then 8 ms between attempts.
// Polling, not a timed wait: flock() has none, and ThreadSanitizer does not
// see the timed lock of std::timed_mutex.
template <typename Attempt>
bool retry_until(Clock::time_point deadline, Attempt attempt) {
  auto step = std::chrono::milliseconds(1);
  for (;;) {
    if (attempt()) return true;
    const Clock::time_point now = Clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(step, deadline - now));
    step = std::min(step * 2, std::chrono::milliseconds(8));
  }
}

}  // namespace

Result<UsageStore::Session> UsageStore::lock() {
  Impl& s = *impl_;
  const bool forever = s.timeout_ms < 0;
  const Clock::time_point deadline = Clock::now() + std::chrono::milliseconds(forever ? 0 : s.timeout_ms);
  auto timed_out = [&](const char* holder) {
    return Status::error(ETIMEDOUT, "timed out after " + std::to_string(s.timeout_ms) + " ms waiting for the lock " +
                                        s.lock_path + " (" + holder + " holds it)");
  };

  // Threads of this process first: the flock below excludes them too, but
  // the mapping they share is this process's memory.
  std::unique_lock<std::mutex> thread_lock(s.thread_mutex, std::defer_lock);
  if (forever) {
    thread_lock.lock();
  } else if (!retry_until(deadline, [&] { return thread_lock.try_lock(); })) {
    return timed_out("another session of this process");
  }

  Fd fd;
  for (;;) {
    // Opened afresh for each session: a lock belongs to an open file
    // description, which fork() shares.
    fd = Fd(::open(s.lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() < 0) return Status::error(errno, "cannot open the lock file " + s.lock_path);
    if (forever) {
      while (::flock(fd.get(), LOCK_EX) != 0) {
        if (errno != EINTR) return Status::error(errno, "cannot lock " + s.lock_path);
      }
    } else {
      int err = 0;
      const bool done = retry_until(deadline, [&] {
        if (::flock(fd.get(), LOCK_EX | LOCK_NB) == 0) return true;
        if (errno == EWOULDBLOCK || errno == EINTR) return false;
        err = errno;
        return true;
      });
      if (!done) return timed_out("another process");
      if (err != 0) return Status::error(err, "cannot lock " + s.lock_path);
    }
    // The lock file we locked must still be the one at the path: when it
    // was deleted (or replaced) meanwhile, others lock the new one.
    struct stat held, at_path;
    if (::fstat(fd.get(), &held) != 0) return Status::error(errno, "cannot stat the lock file " + s.lock_path);
    if (::stat(s.lock_path.c_str(), &at_path) == 0) {
      if (same_file(held, at_path)) break;
    } else if (errno != ENOENT) {
      return Status::error(errno, "cannot stat the lock file " + s.lock_path);
    }
  }
  if (Status st = s.sync(); !st.ok()) return st;
  return Session(impl_.get(), fd.release(), std::move(thread_lock));
}

// ---- Session ----

UsageStore::Session::Session(Impl* store, int lock_fd, std::unique_lock<std::mutex> thread_lock)
    : store_(store), lock_fd_(lock_fd), thread_lock_(std::move(thread_lock)) {}

UsageStore::Session::Session(Session&& o) noexcept
    : store_(std::exchange(o.store_, nullptr)),
      lock_fd_(std::exchange(o.lock_fd_, -1)),
      thread_lock_(std::move(o.thread_lock_)),
      last_error_(std::move(o.last_error_)) {}

UsageStore::Session& UsageStore::Session::operator=(Session&& o) noexcept {
  if (this != &o) {
    release();
    store_ = std::exchange(o.store_, nullptr);
    lock_fd_ = std::exchange(o.lock_fd_, -1);
    thread_lock_ = std::move(o.thread_lock_);
    last_error_ = std::move(o.last_error_);
  }
  return *this;
}

UsageStore::Session::~Session() { release(); }

void UsageStore::Session::release() {
  // Reverse order of lock(): the file lock, then the threads' mutex.
  if (lock_fd_ >= 0) {
    ::flock(lock_fd_, LOCK_UN);
    ::close(lock_fd_);
    lock_fd_ = -1;
  }
  if (thread_lock_.owns_lock()) thread_lock_.unlock();
  store_ = nullptr;
}

long long UsageStore::Session::observe(const Conn& conn, uint32_t ct_id, uint64_t packets, long long now_ms) {
  UsageSlot v{};
  v.fingerprint = store_->fingerprint(conn);
  v.ct_id = ct_id;
  v.packets = packets;
  const Probe p = probe(store_->map, v.fingerprint);
  if (p.found) {
    const UsageSlot& old = *p.found;
    if (old.ct_id == ct_id && old.packets == packets) return old.last_used_ms;
    // Another ct_id is a new conntrack entry: its first reading.
    v.last_used_ms = old.ct_id == ct_id ? now_ms : 0;
    write_slot(p.found, v);
    return v.last_used_ms;
  }
  v.last_used_ms = 0;
  if (Status s = store_->insert(v, p); !s.ok()) last_error_ = std::move(s);
  return 0;
}

long long UsageStore::Session::peek(const Conn& conn) const {
  const Probe p = probe(store_->map, store_->fingerprint(conn));
  return p.found ? p.found->last_used_ms : 0;
}

void UsageStore::Session::forget(const Conn& conn) {
  const Probe p = probe(store_->map, store_->fingerprint(conn));
  if (p.found) store_->erase(p.found);
}

size_t UsageStore::Session::retain(std::span<const Conn> held) {
  Impl& s = *store_;
  UsageFileHeader& h = s.header();
  UsageSlot* slots = s.map.slots();
  // The slots can no longer name their connections: mark the slot of each
  // held connection (one lookup each), then sweep the unmarked ones.
  std::vector<uint64_t> marked((h.slots + 63) / 64, 0);
  for (const Conn& c : held) {
    const Probe p = probe(s.map, s.fingerprint(c));
    if (!p.found) continue;
    const auto i = static_cast<uint64_t>(p.found - slots);
    marked[i / 64] |= uint64_t{1} << (i % 64);
  }
  size_t dropped = 0;
  for (uint64_t i = 0; i < h.slots; i++) {
    UsageSlot* slot = &slots[i];
    if (!is_live(*slot)) continue;
    if (!is_intact(*slot)) {
      s.erase(slot);  // Half-written: counted as used, now a tombstone.
      continue;
    }
    if ((marked[i / 64] >> (i % 64)) & 1) continue;
    s.erase(slot);
    dropped++;
  }
  // Mostly empty or mostly tombstones: rewrite at the size that fits.
  if ((h.slots > kUsageInitialSlots && h.used * 8 < h.slots) || h.tombstones * 4 > h.slots) {
    if (const uint64_t target = fitting_slots(h.used); target != 0) {
      if (Status st = s.rebuild(target); !st.ok()) last_error_ = std::move(st);
    }
  }
  return dropped;
}

void UsageStore::Session::clear() {
  Impl& s = *store_;
  Status st = s.rebuild_empty(kUsageInitialSlots);
  if (st.ok()) return;
  last_error_ = std::move(st);
  // No new file: delete in place, one slot at a time (each step leaves a
  // consistent table).
  UsageSlot* slots = s.map.slots();
  for (uint64_t i = 0; i < s.header().slots; i++) {
    if (is_live(slots[i])) s.erase(&slots[i]);
  }
}

size_t UsageStore::Session::size() const { return static_cast<size_t>(store_->header().used); }

size_t UsageStore::Session::slots() const { return static_cast<size_t>(store_->header().slots); }

}  // namespace ctoffload
