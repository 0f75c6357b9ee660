// software.cc - the software fallback provider: a preallocated
// open-addressing flow cache with lock-free lookups.
//
// Layout (docs/SOFTWARE_PROVIDER.md has the long form):
//   - 'records': one Record per connection the table can hold.  A record
//     holds the connection (family, protocol, zone, both tuples) and its
//     counters.  Records are never freed while the provider lives; a
//     deleted record is marked dead and reused later.
//   - 'slots': 4 * capacity 32-bit slots, linear probing.  Each held
//     connection has two slots, one per direction, keyed by (family, proto,
//     zone, tuple of that direction); a slot holds a 7-bit tag from the hash,
//     the direction and the record index.  At most half the slots are ever
//     used, so probe sequences stay short and always end at an empty slot.
//
// Concurrency:
//   - Writers (conn_add, conn_del, flush) are serialized by 'mutex'.
//   - Every shared word is accessed through std::atomic_ref, so a reader
//     racing a writer reads a stale or new value, never undefined bits, and
//     ThreadSanitizer sees no plain data race.
//   - Each record has a seqlock ('seq', odd while a writer changes it).  A
//     reader matches the packet's key against a consistent snapshot, then
//     registers itself in the record ('packets' high bits count readers in
//     flight) and checks 'seq' again; only then does it count the hit.  A
//     writer reusing a record waits until no reader is in flight before it
//     zeroes the counters, so a late reader never counts into the next
//     connection that uses the record.
//   - Inserting a slot never moves another.  Deleting one shifts later
//     entries of its cluster back (no tombstones); such moves bump the
//     table-wide seqlock 'moves', and a lookup that ends in a miss retries
//     when it overlapped a move, so a held connection is never missed
//     because a neighbour was deleted.
#include "providers/software.h"

#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>

#include "log.h"
#include "sync.h"

namespace ctoffload {
namespace {

// ---- Shared-word access ----
//
// The tables are plain arrays (zero pages, so a large table costs nothing
// until it fills); every access that can race goes through atomic_ref.
// Loads default to acquire and stores to release: the seqlocks below rely
// on that ordering instead of standalone fences, which ThreadSanitizer
// does not model (GCC refuses them under -fsanitize=thread).  On x86 both
// are plain moves.

template <typename T>
T load(T& word, std::memory_order order = std::memory_order_acquire) {
  return std::atomic_ref<T>(word).load(order);
}

template <typename T>
void store(T& word, T value, std::memory_order order = std::memory_order_release) {
  std::atomic_ref<T>(word).store(value, order);
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// ---- Table memory ----
//
// Both arrays come from anonymous mappings: zero pages that are committed as
// the table fills, like calloc'd memory, but with transparent huge pages
// asked for (MADV_HUGEPAGE: the kernel's default "madvise" mode gives them
// only to those who ask).  A lookup touches a random slot and a random
// record; with 4 KiB pages a table of a million connections (120 MB) misses
// the TLB on nearly every one of them, with 2 MiB pages it rarely does.

constexpr size_t kHugePage = size_t{2} << 20;

// 'bytes' of zeroed memory, or nullptr.  Freed with unmap_table(p, bytes).
void* map_table(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  // Not an error when refused (no THP in this kernel): pages stay small.
  if (bytes >= kHugePage) (void)madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

void unmap_table(void* p, size_t bytes) {
  if (p != nullptr) munmap(p, bytes);
}

// ---- Keys and hashing ----

// One direction of a connection as the table matches it.  IPv4 addresses
// occupy the low word of each pair, the high word is zero, so both families
// compare the same way.
struct Key {
  uint64_t addr[4];  // Source low/high, destination low/high.
  uint32_t ports;    // Source port << 16 | destination port.
  uint32_t meta;     // Family << 24 | protocol << 16 | zone; never 0.

  bool operator==(const Key&) const = default;
};

constexpr uint32_t make_meta(uint8_t family, uint8_t proto, uint16_t zone) {
  return uint32_t{family} << 24 | uint32_t{proto} << 16 | zone;
}

// Writes the key of 'tuple' into 'k', every word whole: a key built in
// pieces on the stack and then copied makes the copy's wide loads wait for
// the narrow stores (a store-forwarding stall per key, the largest cost of
// a batch lookup that stays in cache).  'family' must be AF_INET or AF_INET6.
inline void fill_key(Key& k, uint8_t family, uint8_t proto, uint16_t zone, const Tuple& tuple) {
  uint64_t a[4];
  if (family == AF_INET) {
    a[0] = tuple.src.words[0];
    a[1] = 0;
    a[2] = tuple.dst.words[0];
    a[3] = 0;
  } else {
    std::memcpy(&a[0], tuple.src.bytes, 16);
    std::memcpy(&a[2], tuple.dst.bytes, 16);
  }
  for (int w = 0; w < 4; ++w) k.addr[w] = a[w];
  k.ports = uint32_t{tuple.src_port} << 16 | tuple.dst_port;
  k.meta = make_meta(family, proto, zone);
}

inline Key make_key(uint8_t family, uint8_t proto, uint16_t zone, const Tuple& tuple) {
  Key k;
  fill_key(k, family, proto, zone, tuple);
  return k;
}

__extension__ using Uint128 = unsigned __int128;

// Multiply and fold: the 64x64->128 mixing step of wyhash-style hashes.
inline uint64_t mum(uint64_t a, uint64_t b) {
  const Uint128 m = static_cast<Uint128>(a) * b;
  return static_cast<uint64_t>(m) ^ static_cast<uint64_t>(m >> 64);
}

// ---- Records and slots ----

constexpr uint32_t kIndexBits = 24;
constexpr uint32_t kIndexMask = (1u << kIndexBits) - 1;
constexpr uint32_t kDirReply = 1u << kIndexBits;
constexpr uint32_t kTagShift = kIndexBits + 1;  // 7 tag bits: 25..31.
constexpr uint32_t kEmpty = 0;                  // Tags are never 0.
constexpr uint32_t kNoRecord = UINT32_MAX;
constexpr size_t kSlotsPerConnection = 4;
static_assert(SoftwareProvider::kMaxCapacity - 1 <= kIndexMask);

// 'packets' holds the packet count in its low 52 bits and, in its high 12,
// how many lookups are between counting a hit and finishing it.
constexpr unsigned kCountBits = 52;
constexpr uint64_t kCountMask = (uint64_t{1} << kCountBits) - 1;
constexpr uint64_t kInflightOne = uint64_t{1} << kCountBits;

// One connection (or a free record).  104 bytes, laid out so that a hit in
// either direction reads one 72-byte window: the original direction bytes
// 0-71, the reply direction bytes 32-103.  Records are 8-byte aligned, so a
// window spans at most two cache lines, where the whole record often spans
// three; lookup_batch() prefetches exactly those two.
struct Record {
  uint64_t orig_addr[4];   // Key::addr of the original direction.
  uint32_t seq;            // Seqlock: odd while a writer changes the record.
  uint32_t meta;           // Key::meta of both directions; 0 when free.
  uint64_t ports;          // Original Key::ports | reply Key::ports << 32;
                           // while free: the next free record (free list).
  uint64_t packets;        // Hits, both directions; readers in flight above.
  uint64_t bytes;          // Bytes of those hits.
  int64_t last_used;       // ms since the Unix epoch of the last hit; 0 never.
  uint64_t reply_addr[4];  // Key::addr of the reply direction.
};
static_assert(sizeof(Record) == 104, "the memory figure in software.h assumes 104-byte records");
// The window a hit reads, per direction: from 'seq' back to the original
// address, or from it on to the reply address.
constexpr size_t kHitWindow = 72;
static_assert(offsetof(Record, last_used) + 8 == kHitWindow && offsetof(Record, reply_addr) + 32 == sizeof(Record) &&
              offsetof(Record, seq) == sizeof(Record) - kHitWindow);

inline uint64_t* addr_of(Record& r, int d) { return d != 0 ? r.reply_addr : r.orig_addr; }

// Wall-clock ms since the Unix epoch, from the coarse clock (no syscall, a
// few ms of granularity).
int64_t coarse_now_ms() {
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// A consistent copy of a held record, for conn_update and conn_query.
struct Snapshot {
  uint64_t packets = 0;
  uint64_t bytes = 0;
  int64_t last_used = 0;
};

// At most one "table full" warning per this many ms.
constexpr int64_t kFullWarnIntervalMs = 10000;

// Retries of a lookup that missed while the table layout changed under it.
constexpr int kMaxMissRetries = 64;

// The readers' hook for the datapath: nothing.
struct NoHook {
  void operator()(bool /*empty*/) const {}
};

}  // namespace

struct SoftwareProvider::Impl {
  Impl(size_t cap, Record* recs, uint32_t* slot_array)
      : capacity(cap), n_slots(cap * kSlotsPerConnection), records(recs), slots(slot_array) {
    std::random_device rd;
    for (auto& s : seed) s = (uint64_t{rd()} << 32) | rd();
  }
  ~Impl() {
    unmap_table(records, capacity * sizeof(Record));
    unmap_table(slots, n_slots * sizeof(uint32_t));
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // ---- Hashing ----

  uint64_t hash(const Key& k) const {
    const uint64_t h = mum(k.addr[0] ^ seed[0], k.addr[1] ^ seed[1]) ^ mum(k.addr[2] ^ seed[2], k.addr[3] ^ seed[3]);
    return mum(h ^ seed[4], (uint64_t{k.ports} << 32 | k.meta) ^ seed[5]);
  }
  // The first slot of 'h''s probe sequence (the high half, scaled).
  size_t home_of(uint64_t h) const { return static_cast<size_t>(((h >> 32) * n_slots) >> 32); }
  // The tag stored in the slot (7 bits of the low half, never 0).
  static uint32_t tag_of(uint64_t h) {
    const uint32_t t = static_cast<uint32_t>(h >> kTagShift) & 0x7f;
    return t != 0 ? t : 1;
  }
  static uint32_t slot_value(uint64_t h, bool reply, uint32_t index) {
    return tag_of(h) << kTagShift | (reply ? kDirReply : 0) | index;
  }
  size_t next(size_t i) const { return i + 1 == n_slots ? 0 : i + 1; }

  // ---- Readers (lock-free) ----

  // Looks 'k' (hash 'h') up and counts a hit of 'nbytes'.  '*now' is the
  // clock, read on the first hit when still 0 (a batch reads it once).
  // 'after_slot(empty)' runs after every slot read: NoHook (nothing,
  // compiled away) for the datapath, a test's callback for the
  // *_with_slot_hook calls.
  template <typename Hook>
  Direction lookup(const Key& k, uint64_t h, uint32_t nbytes, int64_t* now, const Hook& after_slot);
  template <typename Hook>
  void lookup_batch(const SoftwarePacket* packets, size_t n, Direction* out, const Hook& after_slot);
  // lookup() of one packet as SoftwareProvider::lookup() takes it.
  template <typename Hook>
  Direction lookup_packet(uint8_t family, uint8_t proto, uint16_t zone, const Tuple& pkt, uint32_t bytes,
                          const Hook& after_slot) {
    if (family != AF_INET && family != AF_INET6) return Direction::kMiss;
    const Key k = make_key(family, proto, zone, pkt);
    int64_t now = 0;
    return lookup(k, hash(k), bytes, &now, after_slot);
  }
  // Counts a hit on record 'index' if its direction 'reply' matches 'k';
  // false when it does not match or changed under the reader.
  inline bool try_hit(uint32_t index, bool reply, const Key& k, uint32_t nbytes, int64_t* now);
  // Finds 'conn' (whole identity) and copies its counters.
  bool snapshot(const Conn& conn, Snapshot* out);

  // ---- Writers (hold 'mutex') ----

  // The slot position holding 'k', or n_slots.
  size_t find(const Key& k, uint64_t h) const;
  // The record behind slot value 's'.
  Record& record_of(uint32_t s) const { return records[s & kIndexMask]; }
  Key key_of(Record& r, bool reply) const;
  Conn conn_of(Record& r) const;
  void insert_slot(uint64_t h, uint32_t value) CTO_REQUIRES(mutex);
  void remove_slot(uint64_t h, uint32_t value) CTO_REQUIRES(mutex);
  uint32_t alloc_record() CTO_REQUIRES(mutex);
  void free_record(uint32_t index) CTO_REQUIRES(mutex);
  void write_record(uint32_t index, const Key& orig, const Key& reply) CTO_REQUIRES(mutex);
  void mark_free(uint32_t index) CTO_REQUIRES(mutex);
  int add(const Conn& c) CTO_EXCLUDES(mutex);
  void del(const Conn& c) CTO_EXCLUDES(mutex);
  void flush() CTO_EXCLUDES(mutex);

  const size_t capacity;
  const size_t n_slots;
  Record* const records;
  uint32_t* const slots;
  uint64_t seed[6];
  std::shared_ptr<spdlog::logger> log = log::get("software");

  // Table-layout seqlock: odd while conn_del shifts slots.  Read by every
  // lookup (again at the end of a miss), written only when a delete moves
  // entries.
  alignas(64) std::atomic<uint64_t> moves{0};
  alignas(64) std::atomic<size_t> count{0};

  Mutex mutex;  // Serializes writers; guards what follows.
  // Records [next_unused, capacity) never used.
  uint32_t next_unused CTO_GUARDED_BY(mutex) = 0;
  // FIFO of freed records, linked through Record::ports.
  uint32_t free_head CTO_GUARDED_BY(mutex) = kNoRecord;
  uint32_t free_tail CTO_GUARDED_BY(mutex) = kNoRecord;
  int64_t full_warned_ms CTO_GUARDED_BY(mutex) = 0;  // When "table full" was last logged.
  uint64_t full_refused CTO_GUARDED_BY(mutex) = 0;   // ENOSPC answers since then.
};

// ---- Readers ----

__attribute__((always_inline)) inline bool SoftwareProvider::Impl::try_hit(uint32_t index, bool reply, const Key& k,
                                                                           uint32_t nbytes, int64_t* now) {
  Record& r = records[index];
  const uint32_t s1 = load(r.seq);
  if (s1 & 1) return false;  // Being added or deleted: linearize before it.
  const int d = reply ? 1 : 0;
  const bool match = load(r.meta) == k.meta && static_cast<uint32_t>(load(r.ports) >> (32 * d)) == k.ports &&
                     load(addr_of(r, d)[0]) == k.addr[0] && load(addr_of(r, d)[1]) == k.addr[1] &&
                     load(addr_of(r, d)[2]) == k.addr[2] && load(addr_of(r, d)[3]) == k.addr[3];
  // The key reads are acquire loads: a value stored after the writer made
  // 'seq' odd makes that odd 'seq' visible to the re-read below (seqlock).
  if (!match) return false;

  // Register as in flight, then make sure the record is still the one we
  // matched.  A writer that reuses the record zeroes its counters only once
  // nobody is in flight, and it changes 'seq' before it looks, so either we
  // see its change here and back off, or it waits for us.
  std::atomic_ref<uint64_t> packets(r.packets);
  packets.fetch_add(kInflightOne, std::memory_order_acq_rel);
  if (load(r.seq) != s1) {
    packets.fetch_sub(kInflightOne, std::memory_order_release);
    return false;
  }
  std::atomic_ref<uint64_t>(r.bytes).fetch_add(nbytes, std::memory_order_relaxed);
  if (*now == 0) *now = coarse_now_ms();
  // A plain store, not a compare-and-swap loop for the maximum: hits on
  // one connection from two threads at once can then leave the earlier of
  // two clock readings, a few ms back, which the coarse clock's granularity
  // already allows.  Skipped when it would not change anything.
  if (load(r.last_used, std::memory_order_relaxed) < *now) store(r.last_used, *now, std::memory_order_relaxed);
  // Leave: one more packet, one fewer reader in flight.
  packets.fetch_add(1 - kInflightOne, std::memory_order_release);
  return true;
}

template <typename Hook>
Direction SoftwareProvider::Impl::lookup(const Key& k, uint64_t h, uint32_t nbytes, int64_t* now,
                                         const Hook& after_slot) {
  const uint32_t tag = tag_of(h);
  const size_t home = home_of(h);
  for (int attempt = 0;; ++attempt) {
    const uint64_t v1 = moves.load(std::memory_order_acquire);
    size_t i = home;
    for (size_t probes = 0; probes < n_slots; ++probes, i = next(i)) {
      const uint32_t s = load(slots[i], std::memory_order_acquire);
      after_slot(s == kEmpty);
      if (s == kEmpty) break;
      if ((s >> kTagShift) != tag) continue;
      const bool reply = (s & kDirReply) != 0;
      if (try_hit(s & kIndexMask, reply, k, nbytes, now)) return reply ? Direction::kReply : Direction::kOriginal;
    }
    // A miss is only trusted if no delete moved entries while we probed
    // (the slot loads are acquire, so a moved entry seen makes the odd
    // 'moves' before it visible here).
    if (((v1 & 1) == 0 && moves.load(std::memory_order_acquire) == v1) || attempt == kMaxMissRetries) {
      return Direction::kMiss;
    }
    cpu_relax();
  }
}

template <typename Hook>
void SoftwareProvider::Impl::lookup_batch(const SoftwarePacket* packets, size_t n, Direction* out,
                                          const Hook& after_slot) {
  // Packets go in chunks of kChunk, each in three stages:
  //   1. every packet of the chunk is hashed and its home slot prefetched,
  //      with the line of the slot 3 further on when that is the next line
  //      (a probe that runs past its home line would otherwise wait for
  //      the next one in stage 2);
  //   2. a packet's probe sequence is read (its line has had the rest of
  //      stage 1 to arrive) and either ends at an empty slot, a miss, or
  //      names the first record whose tag matches, whose hit window is
  //      prefetched (two cache lines, see Record).  Up to kProbes slots:
  //      a probe longer than that is left to lookup() in stage 3, where its
  //      record was not prefetched and stalls the pipeline;
  //   3. kAhead packets behind stage 2, the candidate is checked against
  //      the packet and the hit counted, its window now mostly in cache.
  // All slot lines of a chunk are asked for first because the record's
  // address depends on the slot: stage 2 can only start when they arrive.
  // Side by side at 1M connections this beat both a single pipeline over
  // all three stages (hits and misses) and three whole passes (hits).
  constexpr size_t kChunk = 32;
  constexpr size_t kAhead = 8;
  static_assert(kAhead < kChunk);
  // The clock is read at the first hit and again after every kClockEvery
  // packets, so a long batch does not stamp one old time on all its hits.
  constexpr size_t kClockEvery = 64;
  // What the second stage found: the slot value of the first tag match (a
  // candidate, checked against its record in the third stage), or:
  constexpr uint32_t kNoMatch = kEmpty;  // An empty slot first: a miss.
  constexpr uint32_t kUndecided = 1;     // A long probe: lookup() decides.
  static_assert(kUndecided >> kTagShift == 0, "tags are never 0, so no slot holds kUndecided");
  // Slots the second stage reads.  At 4, lookup() took 12% of the time of
  // batch hits on a full table of 1M (perf), at 16 (with stage 1's second
  // prefetch) 1%: hits 1.07x, misses 1.16x (software_bench, medians of 8).
  constexpr int kProbes = 16;
  Key keys[kChunk];
  uint64_t hashes[kChunk];
  uint32_t found[kChunk];
  int64_t now = 0;
  // A miss decided in the second stage is trusted as lookup() trusts one:
  // only if no delete moved slots since before the probe.  One reading for
  // the batch; if it changed, the misses are looked up again at the end.
  const uint64_t v1 = moves.load(std::memory_order_acquire);
  auto stage1 = [&](size_t i) {
    const SoftwarePacket& p = packets[i];
    const size_t r = i % kChunk;
    Key& k = keys[r];
    if (p.family != AF_INET && p.family != AF_INET6) {
      k.meta = 0;  // Matches nothing.
    } else {
      fill_key(k, p.family, p.proto, p.zone, p.tuple);
      hashes[r] = hash(k);
      const size_t home = home_of(hashes[r]);
      __builtin_prefetch(&slots[home]);
      __builtin_prefetch(&slots[std::min(home + 3, n_slots - 1)]);  // Mostly the same line: no cost.
    }
  };
  auto stage2 = [&](size_t i) {
    const size_t r = i % kChunk;
    found[r] = kNoMatch;
    if (keys[r].meta == 0) return;
    found[r] = kUndecided;
    const uint32_t tag = tag_of(hashes[r]);
    size_t j = home_of(hashes[r]);
    for (int probe = 0; probe < kProbes; ++probe, j = next(j)) {
      const uint32_t sv = load(slots[j], std::memory_order_acquire);
      after_slot(sv == kEmpty);
      if (sv == kEmpty) {
        found[r] = kNoMatch;
        break;
      }
      if ((sv >> kTagShift) != tag) continue;
      // The two lines of the window this direction's hit reads.
      const char* window = reinterpret_cast<const char*>(&records[sv & kIndexMask]) +
                           ((sv & kDirReply) != 0 ? sizeof(Record) - kHitWindow : 0);
      __builtin_prefetch(window, 1);
      __builtin_prefetch(window + kHitWindow - 1, 1);
      found[r] = sv;
      break;
    }
  };
  auto stage3 = [&](size_t at) {
    const size_t r = at % kChunk;
    if (at % kClockEvery == 0) now = 0;
    Direction d = Direction::kMiss;
    if (found[r] == kUndecided) {
      d = lookup(keys[r], hashes[r], packets[at].bytes, &now, after_slot);
    } else if (found[r] != kNoMatch) {
      // The candidate, if its record is this packet's connection: try_hit()
      // checks that against the record itself, as lookup() does, so the
      // slot need not be read again.  Anything else (another connection
      // with the same tag, a record changed since) is left to the whole
      // probe.
      const uint32_t sv = found[r];
      const bool reply = (sv & kDirReply) != 0;
      if (try_hit(sv & kIndexMask, reply, keys[r], packets[at].bytes, &now)) {
        d = reply ? Direction::kReply : Direction::kOriginal;
      } else {
        d = lookup(keys[r], hashes[r], packets[at].bytes, &now, after_slot);
      }
    }
    out[at] = d;
  };
  for (size_t base = 0; base < n; base += kChunk) {
    const size_t end = std::min(n, base + kChunk);
    for (size_t i = base; i < end; ++i) stage1(i);
    for (size_t i = base; i < end + kAhead; ++i) {
      if (i < end) stage2(i);
      if (i >= base + kAhead) stage3(i - kAhead);
    }
  }
  if ((v1 & 1) == 0 && moves.load(std::memory_order_acquire) == v1) return;
  // A delete moved slots during the batch: a miss may have been read past a
  // moved entry.  lookup() probes again, retrying as it does alone.
  for (size_t i = 0; i < n; ++i) {
    if (out[i] != Direction::kMiss || (packets[i].family != AF_INET && packets[i].family != AF_INET6)) continue;
    Key k;
    fill_key(k, packets[i].family, packets[i].proto, packets[i].zone, packets[i].tuple);
    now = 0;
    out[i] = lookup(k, hash(k), packets[i].bytes, &now, after_slot);
  }
}

bool SoftwareProvider::Impl::snapshot(const Conn& c, Snapshot* out) {
  if (c.family != AF_INET && c.family != AF_INET6) return false;
  const Key orig = make_key(c.family, c.proto, c.zone, c.orig);
  const Key reply = make_key(c.family, c.proto, c.zone, c.reply);
  const uint64_t h = hash(orig);
  const uint32_t want = tag_of(h) << kTagShift;  // Tag, original direction.
  for (int attempt = 0;; ++attempt) {
    const uint64_t v1 = moves.load(std::memory_order_acquire);
    size_t i = home_of(h);
    for (size_t probes = 0; probes < n_slots; ++probes, i = next(i)) {
      const uint32_t s = load(slots[i], std::memory_order_acquire);
      if (s == kEmpty) break;
      if ((s & ~kIndexMask) != want) continue;
      Record& r = record_of(s);
      const uint32_t s1 = load(r.seq);
      if (s1 & 1) continue;  // Being added or deleted: not held yet / any more.
      Key ro{}, rr{};
      ro.meta = rr.meta = load(r.meta);
      const uint64_t ports = load(r.ports);
      ro.ports = static_cast<uint32_t>(ports);
      rr.ports = static_cast<uint32_t>(ports >> 32);
      for (int w = 0; w < 4; ++w) {
        ro.addr[w] = load(r.orig_addr[w]);
        rr.addr[w] = load(r.reply_addr[w]);
      }
      Snapshot snap;
      snap.packets = load(r.packets) & kCountMask;
      snap.bytes = load(r.bytes);
      snap.last_used = load(r.last_used);
      if (load(r.seq) != s1 || ro != orig) continue;
      // The original tuple is held; it is this connection only if the
      // reply tuple is the same too.
      if (rr != reply) return false;
      *out = snap;
      return true;
    }
    if (((v1 & 1) == 0 && moves.load(std::memory_order_acquire) == v1) || attempt == kMaxMissRetries) return false;
    cpu_relax();
  }
}

// ---- Writers ----

Key SoftwareProvider::Impl::key_of(Record& m, bool reply) const {
  Key k{};
  const int d = reply ? 1 : 0;
  for (int w = 0; w < 4; ++w) k.addr[w] = load(addr_of(m, d)[w]);
  k.ports = static_cast<uint32_t>(load(m.ports) >> (32 * d));
  k.meta = load(m.meta);
  return k;
}

Conn SoftwareProvider::Impl::conn_of(Record& r) const {
  const Key o = key_of(r, false);
  const Key rp = key_of(r, true);
  Conn c{};
  c.family = static_cast<uint8_t>(o.meta >> 24);
  c.proto = static_cast<uint8_t>(o.meta >> 16);
  c.zone = static_cast<uint16_t>(o.meta);
  auto fill = [&](Tuple& t, const Key& k) {
    if (c.family == AF_INET) {
      t.src.words[0] = static_cast<uint32_t>(k.addr[0]);
      t.dst.words[0] = static_cast<uint32_t>(k.addr[2]);
    } else {
      std::memcpy(t.src.bytes, &k.addr[0], 16);
      std::memcpy(t.dst.bytes, &k.addr[2], 16);
    }
    t.src_port = static_cast<uint16_t>(k.ports >> 16);
    t.dst_port = static_cast<uint16_t>(k.ports);
  };
  fill(c.orig, o);
  fill(c.reply, rp);
  return c;
}

size_t SoftwareProvider::Impl::find(const Key& k, uint64_t h) const {
  const uint32_t tag = tag_of(h);
  for (size_t i = home_of(h), probes = 0; probes < n_slots; ++probes, i = next(i)) {
    const uint32_t s = load(slots[i]);
    if (s == kEmpty) break;
    if ((s >> kTagShift) == tag && key_of(record_of(s), (s & kDirReply) != 0) == k) return i;
  }
  return n_slots;
}

void SoftwareProvider::Impl::insert_slot(uint64_t h, uint32_t value) {
  // The load factor stays at or under one half, so an empty slot exists.
  // Filling an empty slot moves nothing: readers need no retry for it.
  size_t i = home_of(h);
  while (load(slots[i]) != kEmpty) i = next(i);
  store(slots[i], value, std::memory_order_release);
}

void SoftwareProvider::Impl::remove_slot(uint64_t h, uint32_t value) {
  size_t hole = home_of(h);
  while (load(slots[hole]) != value) hole = next(hole);
  // Backward-shift deletion: walk the rest of the cluster and move back
  // every entry whose probe sequence passes the hole, so no lookup ever
  // needs to look past an empty slot.  Entries keep their relative order.
  bool moved = false;
  for (size_t j = next(hole);; j = next(j)) {
    const uint32_t s = load(slots[j]);
    if (s == kEmpty) break;
    const size_t want = home_of(hash(key_of(record_of(s), (s & kDirReply) != 0)));
    // Does the probe sequence from 'want' to 'j' pass 'hole'?  (Cyclic.)
    const bool passes = hole <= j ? (want <= hole || want > j) : (want <= hole && want > j);
    if (!passes) continue;
    if (!moved) {
      // Readers that miss while this is odd, or across it, retry.
      // The slot stores that follow are release stores (see load()).
      moves.store(moves.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      moved = true;
    }
    store(slots[hole], s, std::memory_order_release);
    hole = j;
  }
  store(slots[hole], kEmpty, std::memory_order_release);
  if (moved) moves.store(moves.load(std::memory_order_relaxed) + 1, std::memory_order_release);
}

uint32_t SoftwareProvider::Impl::alloc_record() {
  // Unused records first, then the oldest freed one: a freed record is
  // reused as late as possible, which keeps the in-flight wait in
  // write_record() short.
  if (next_unused < capacity) return next_unused++;
  const uint32_t index = free_head;
  free_head = static_cast<uint32_t>(load(records[index].ports));
  if (free_head == kNoRecord) free_tail = kNoRecord;
  return index;
}

void SoftwareProvider::Impl::free_record(uint32_t index) {
  store(records[index].ports, uint64_t{kNoRecord});
  if (free_tail == kNoRecord) {
    free_head = index;
  } else {
    store(records[free_tail].ports, uint64_t{index});
  }
  free_tail = index;
}

void SoftwareProvider::Impl::write_record(uint32_t index, const Key& orig, const Key& reply) {
  Record& r = records[index];
  const uint32_t s = load(r.seq, std::memory_order_relaxed);
  // Every store below is a release store, so a reader that sees any of
  // them also sees this odd 'seq' (seqlock writer).
  store(r.seq, s + 1, std::memory_order_relaxed);

  // Zero the counters once no reader of the previous connection is in
  // flight.  A reader that registers after this exchange sees the odd 'seq'
  // (it synchronizes with the release here) and backs off without counting.
  std::atomic_ref<uint64_t> packets(r.packets);
  uint64_t p = packets.load(std::memory_order_acquire);
  for (unsigned spins = 0;;) {
    if ((p & ~kCountMask) != 0) {
      if (++spins % 64 == 0) {
        std::this_thread::yield();
      } else {
        cpu_relax();
      }
      p = packets.load(std::memory_order_acquire);
      continue;
    }
    if (packets.compare_exchange_weak(p, 0, std::memory_order_acq_rel, std::memory_order_acquire)) break;
  }
  store(r.bytes, uint64_t{0});
  store(r.last_used, int64_t{0});
  for (int w = 0; w < 4; ++w) {
    store(r.orig_addr[w], orig.addr[w]);
    store(r.reply_addr[w], reply.addr[w]);
  }
  store(r.ports, uint64_t{reply.ports} << 32 | orig.ports);
  store(r.meta, orig.meta);
  store(r.seq, s + 2, std::memory_order_release);
}

void SoftwareProvider::Impl::mark_free(uint32_t index) {
  Record& r = records[index];
  const uint32_t s = load(r.seq, std::memory_order_relaxed);
  store(r.seq, s + 1, std::memory_order_relaxed);
  store(r.meta, uint32_t{0});  // Release: a reader seeing it sees the odd 'seq'.
  store(r.seq, s + 2, std::memory_order_release);
}

int SoftwareProvider::Impl::add(const Conn& c) {
  // 'c' passed validate() at the registry.
  const Key orig = make_key(c.family, c.proto, c.zone, c.orig);
  const Key reply = make_key(c.family, c.proto, c.zone, c.reply);
  if (orig == reply) {
    log->debug("conn_add refused: {}: original and reply tuples are identical", format_conn(c));
    return EINVAL;
  }
  const uint64_t ho = hash(orig);
  const uint64_t hr = hash(reply);

  MutexLock lock(mutex);
  for (const auto& [key, h] : {std::pair{orig, ho}, std::pair{reply, hr}}) {
    const size_t pos = find(key, h);
    if (pos == n_slots) continue;
    if (log->should_log(spdlog::level::debug)) {
      const Conn held = conn_of(record_of(load(slots[pos])));
      if (same_conn(held, c)) {
        log->debug("conn_add refused: {}: already held", format_conn(c));
      } else {
        log->debug("conn_add refused: {}: a tuple collides with held connection {}", format_conn(c), format_conn(held));
      }
    }
    return EEXIST;
  }
  const size_t n = count.load(std::memory_order_relaxed);
  if (n == capacity) {
    // A table that stays at the brim refuses at every add: say so at most
    // once per kFullWarnInterval, with the count.
    ++full_refused;
    const int64_t now = coarse_now_ms();
    if (full_warned_ms == 0 || now - full_warned_ms >= kFullWarnIntervalMs) {
      log->warn("table full ({} connections): refused {} new connection(s) since the last warning", capacity,
                full_refused);
      full_warned_ms = now;
      full_refused = 0;
    }
    return ENOSPC;
  }
  const uint32_t index = alloc_record();
  write_record(index, orig, reply);
  // The record is complete before a slot points to it.
  insert_slot(ho, slot_value(ho, false, index));
  insert_slot(hr, slot_value(hr, true, index));
  count.store(n + 1, std::memory_order_release);
  if (log->should_log(spdlog::level::debug)) log->debug("added {} (record {})", format_conn(c), index);
  return 0;
}

void SoftwareProvider::Impl::del(const Conn& c) {
  if (c.family != AF_INET && c.family != AF_INET6) return;
  const Key orig = make_key(c.family, c.proto, c.zone, c.orig);
  const Key reply = make_key(c.family, c.proto, c.zone, c.reply);
  const uint64_t ho = hash(orig);
  const uint64_t hr = hash(reply);

  MutexLock lock(mutex);
  const size_t pos = find(orig, ho);
  const uint32_t s = pos == n_slots ? kEmpty : load(slots[pos]);
  if (s == kEmpty || (s & kDirReply) != 0 || key_of(record_of(s), true) != reply) {
    if (log->should_log(spdlog::level::debug)) log->debug("conn_del: {} is not held", format_conn(c));
    return;
  }
  const uint32_t index = s & kIndexMask;
  // Slots first, while the record still says where they live (the shift
  // rehashes entries from their records); then the record, which is what
  // stops concurrent lookups from counting hits.
  remove_slot(ho, slot_value(ho, false, index));
  remove_slot(hr, slot_value(hr, true, index));
  mark_free(index);
  free_record(index);
  count.store(count.load(std::memory_order_relaxed) - 1, std::memory_order_release);
  if (log->should_log(spdlog::level::debug)) log->debug("deleted {} (record {})", format_conn(c), index);
}

void SoftwareProvider::Impl::flush() {
  MutexLock lock(mutex);
  const size_t n = count.load(std::memory_order_relaxed);
  // Records first: once a record is free no lookup counts on it; then the
  // slots, all at once (nothing held remains, so no lookup can be misled).
  for (uint32_t i = 0; i < next_unused; ++i) {
    if (load(records[i].meta) != 0) mark_free(i);
  }
  for (size_t i = 0; i < n_slots; ++i) {
    if (load(slots[i]) != kEmpty) store(slots[i], kEmpty, std::memory_order_release);
  }
  next_unused = 0;
  free_head = free_tail = kNoRecord;
  count.store(0, std::memory_order_release);
  log->debug("flushed {} connections", n);
}

// ---- SoftwareProvider ----

Result<std::shared_ptr<SoftwareProvider>> SoftwareProvider::create(const SoftwareOptions& options) {
  auto log = log::get("software");
  if (Status s = SoftwareOptions::kCapacity.check(kName, options.capacity); !s) return s;
  const size_t cap = options.capacity;
  auto* recs = static_cast<Record*>(map_table(cap * sizeof(Record)));
  auto* slot_array = static_cast<uint32_t*>(map_table(cap * kSlotsPerConnection * sizeof(uint32_t)));
  if (recs == nullptr || slot_array == nullptr) {
    unmap_table(recs, cap * sizeof(Record));
    unmap_table(slot_array, cap * kSlotsPerConnection * sizeof(uint32_t));
    log->error("cannot allocate a table of {} connections ({} bytes)", cap, cap * bytes_per_connection());
    return Status::error(ENOMEM, "software provider: cannot allocate a table of " + std::to_string(cap) +
                                     " connections (" + std::to_string(cap * bytes_per_connection()) + " bytes)");
  }
  auto impl = std::make_unique<Impl>(cap, recs, slot_array);
  log->info("flow cache of {} connections ({} bytes, {} per connection)", cap, cap * bytes_per_connection(),
            bytes_per_connection());
  return std::shared_ptr<SoftwareProvider>(new SoftwareProvider(std::move(impl)));
}

Result<std::shared_ptr<SoftwareProvider>> SoftwareProvider::create(const ProviderOptions& options) {
  auto cap = SoftwareOptions::kCapacity.read(kName, options);
  if (!cap) return cap.status();
  static_assert(sizeof(size_t) >= sizeof(uint64_t), "a capacity option is carried whole");
  return create(SoftwareOptions{.capacity = static_cast<size_t>(*cap)});
}

SoftwareProvider::SoftwareProvider(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
SoftwareProvider::~SoftwareProvider() = default;

Direction SoftwareProvider::lookup(uint8_t family, uint8_t proto, uint16_t zone, const Tuple& pkt, uint32_t bytes) {
  return impl_->lookup_packet(family, proto, zone, pkt, bytes, NoHook{});
}

void SoftwareProvider::lookup_batch(std::span<const SoftwarePacket> packets, std::span<Direction> out) {
  impl_->lookup_batch(packets.data(), std::min(packets.size(), out.size()), out.data(), NoHook{});
}

Direction SoftwareProvider::lookup_with_slot_hook(uint8_t family, uint8_t proto, uint16_t zone, const Tuple& pkt,
                                                  uint32_t bytes, const SlotHook& after_slot) {
  return impl_->lookup_packet(family, proto, zone, pkt, bytes, after_slot);
}

void SoftwareProvider::lookup_batch_with_slot_hook(std::span<const SoftwarePacket> packets, std::span<Direction> out,
                                                   const SlotHook& after_slot) {
  impl_->lookup_batch(packets.data(), std::min(packets.size(), out.size()), out.data(), after_slot);
}

size_t SoftwareProvider::size() const { return impl_->count.load(std::memory_order_acquire); }
size_t SoftwareProvider::capacity() const { return impl_->capacity; }
size_t SoftwareProvider::bytes_per_connection() { return sizeof(Record) + kSlotsPerConnection * sizeof(uint32_t); }

int SoftwareProvider::conn_add(const Ctx& ctx) { return impl_->add(*ctx.conn); }
void SoftwareProvider::conn_del(const Ctx& ctx) { impl_->del(*ctx.conn); }

long long SoftwareProvider::conn_update(const Ctx& ctx) {
  Snapshot snap;
  return impl_->snapshot(*ctx.conn, &snap) ? snap.last_used : 0;
}

bool SoftwareProvider::can_offload(const Ctx& ctx) {
  const Conn& c = *ctx.conn;
  if (size() >= impl_->capacity) return false;
  // conn_add refuses a connection whose two tuples are the same key.
  return make_key(c.family, c.proto, c.zone, c.orig) != make_key(c.family, c.proto, c.zone, c.reply);
}

void SoftwareProvider::flush() { impl_->flush(); }

bool SoftwareProvider::conn_query(const Ctx& ctx, ConnStatus* status) {
  Snapshot snap;
  if (!impl_->snapshot(*ctx.conn, &snap)) return false;
  if (status != nullptr) {
    *status = ConnStatus{};
    static_assert(sizeof(status->provider) > std::char_traits<char>::length(kName));
    std::memcpy(status->provider, kName, std::char_traits<char>::length(kName) + 1);
    status->mode = CT_OFFLOAD_MODE_SW;
    status->packets = snap.packets;
    status->bytes = snap.bytes;
    status->last_used = snap.last_used;
  }
  return true;
}

}  // namespace ctoffload
