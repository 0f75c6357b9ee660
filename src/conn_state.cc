// conn_state.cc - the sharded per-connection state table (conn_state.h).
//
// Each shard is a sequence lock: 'seq' is odd while a writer holds the
// shard.  A writer takes it with one compare-exchange, changes slots, and
// gives it back with a plain store.  A reader takes nothing: it reads 'seq',
// probes, and reads 'seq' again; when a writer came between, it retries.
// Every field a reader may look at is an atomic, stored with release and
// loaded with acquire (plain moves on x86; no fences, which ThreadSanitizer
// cannot follow): a reader that loads any store of a writer then loads that
// writer's odd 'seq' and retries, and a torn view is never undefined
// behaviour, only a retry.  Slot arrays outgrown by a shard are kept until
// the table is destroyed, since a reader may still be probing one: at most
// as much again as the largest array, by doubling.
#include "conn_state.h"

#include <netinet/in.h>

#include <chrono>
#include <cstring>
#include <new>
#include <random>
#include <thread>
#include <vector>

#include "log.h"

namespace ctoffload {
namespace {

constexpr size_t kInitialSlots = 8;
constexpr unsigned kShardBits = 6;
static_assert((size_t{1} << kShardBits) == ConnStateTable::kShards);

uint64_t random_seed() {
  try {
    std::random_device rd;
    return (uint64_t{rd()} << 32) ^ rd();
  } catch (...) {  // No entropy source: a seed that still differs per run.
    return static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) * 0x9e3779b97f4a7c15ull;
  }
}

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("registry");
  return l;
}

inline void cpu_relax(unsigned& spins) {
  if (spins++ < 128) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  } else {
    std::this_thread::yield();  // The holder may be off its CPU.
  }
}

// The folded 128-bit product of two words (wyhash's "mum"): one multiply
// that mixes every input bit into both halves of the result.  (A word equal
// to its seed makes a factor 0 and cancels the other: with random seeds only
// chance gets there.)
__extension__ typedef unsigned __int128 u128;
inline uint64_t mum(uint64_t a, uint64_t b) {
  const u128 p = static_cast<u128>(a) * b;
  return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
}

// A connection's identity as slot words: family, protocol and zone in one,
// the original tuple (36 bytes, zero-padded) in five.  The tuple words are
// read from the connection itself when compared, not copied first: a copy
// on the stack read back in other widths defeats store-to-load forwarding,
// which cost more than the rest of the lookup.
struct PackedKey {
  uint64_t meta = 0;
  const unsigned char* tuple = nullptr;  // The connection's original tuple.

  uint64_t word(size_t w) const {
    if (w < 4) {
      uint64_t v;
      std::memcpy(&v, tuple + 8 * w, 8);
      return v;
    }
    uint32_t ports;
    std::memcpy(&ports, tuple + 32, 4);
    return ports;
  }
};
static_assert(sizeof(Tuple) == 36);

inline PackedKey pack(const Conn& c) {
  return PackedKey{uint64_t{c.family} | (uint64_t{c.proto} << 8) | (uint64_t{c.zone} << 16),
                   reinterpret_cast<const unsigned char*>(&c.orig)};
}

constexpr unsigned kStateShift = 32;
constexpr uint64_t kKeyMetaMask = 0xffffffffull;

}  // namespace

// One connection: 64 bytes, one cache line.
struct ConnStateTable::Slot {
  std::atomic<uint64_t> hash{0};  // 0: the slot is empty (hash() never returns 0).
  std::atomic<uint64_t> meta{0};  // PackedKey::meta | state << kStateShift.
  std::atomic<uint64_t> tuple[5] = {};
  std::atomic<long long> reported{0};  // The answer of the previous query, ms.

  bool holds(uint64_t h, const PackedKey& k) const {
    if (hash.load(std::memory_order_acquire) != h) return false;
    if ((meta.load(std::memory_order_acquire) & kKeyMetaMask) != k.meta) return false;
    // The five words written out: as a loop, gcc -O2 kept the loop and its
    // test of which word is the ports' on every word of every probe.
    return same_word(0, k) && same_word(1, k) && same_word(2, k) && same_word(3, k) && same_word(4, k);
  }
  bool same_word(size_t w, const PackedKey& k) const { return tuple[w].load(std::memory_order_acquire) == k.word(w); }
  OffloadState state() const { return static_cast<OffloadState>(meta.load(std::memory_order_acquire) >> kStateShift); }
  // Writers only (the shard is held).
  void set_state(OffloadState s) {
    const uint64_t m = meta.load(std::memory_order_acquire);
    meta.store((m & kKeyMetaMask) | (uint64_t{static_cast<uint8_t>(s)} << kStateShift), std::memory_order_release);
  }
  void copy_from(const Slot& o) {
    hash.store(o.hash.load(std::memory_order_acquire), std::memory_order_release);
    meta.store(o.meta.load(std::memory_order_acquire), std::memory_order_release);
    for (size_t w = 0; w < 5; ++w)
      tuple[w].store(o.tuple[w].load(std::memory_order_acquire), std::memory_order_release);
    reported.store(o.reported.load(std::memory_order_acquire), std::memory_order_release);
  }
};
static_assert(sizeof(std::atomic<uint64_t>) == 8 && std::atomic<uint64_t>::is_always_lock_free);

// A shard's slots: a power of two of them.
struct ConnStateTable::Array {
  explicit Array(size_t n, Slot* s) : mask(n - 1), slots(s) {}
  ~Array() { delete[] slots; }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;

  static Array* make(size_t n) {
    Slot* s = new (std::nothrow) Slot[n];
    if (s == nullptr) return nullptr;
    Array* a = new (std::nothrow) Array(n, s);
    if (a == nullptr) delete[] s;
    return a;
  }

  static constexpr size_t npos = ~size_t{0};

  // The slot holding 'k', or npos.  At most one pass over the array: a
  // reader's torn view may have no empty slot to stop at.
  size_t find(uint64_t h, const PackedKey& k) const {
    for (size_t n = 0, i = h & mask; n <= mask; ++n, i = (i + 1) & mask) {
      const Slot& s = slots[i];
      if (s.hash.load(std::memory_order_acquire) == 0) return npos;
      if (s.holds(h, k)) return i;
    }
    return npos;
  }

  const size_t mask;
  Slot* const slots;
};

struct alignas(64) ConnStateTable::Shard {
  // ---- Readers: no lock, retried when a writer came between ----

  // f(current array or null) under the sequence lock's read protocol.
  template <typename F>
  __attribute__((always_inline)) auto read(F f) const {
    for (unsigned spins = 0;;) {
      const uint32_t s1 = seq.load(std::memory_order_acquire);
      if (s1 & 1) {
        cpu_relax(spins);
        continue;
      }
      auto r = f(array.load(std::memory_order_acquire));
      // The slot loads in f() are acquires: this load cannot move before
      // them, and having read a writer's store it sees the writer's 'seq'.
      if (seq.load(std::memory_order_acquire) == s1) return r;
    }
  }

  // ---- Writers: one at a time per shard ----

  void lock() {
    uint32_t s = seq.load(std::memory_order_relaxed);
    for (unsigned spins = 0;;) {
      if (!(s & 1) && seq.compare_exchange_weak(s, s + 1, std::memory_order_acquire, std::memory_order_relaxed)) break;
      cpu_relax(spins);
      s = seq.load(std::memory_order_relaxed);
    }
    // Slot stores that follow are releases: a reader that sees one of them
    // sees the odd 'seq' too (and retries).
  }
  void unlock() { seq.store(seq.load(std::memory_order_relaxed) + 1, std::memory_order_release); }

  // The slot holding 'k', made (state none) when absent; npos only when the
  // shard is full and cannot grow (out of memory).  The shard is held.
  size_t find_or_insert(uint64_t h, const PackedKey& k) {
    Array* a = array.load(std::memory_order_acquire);
    if (a != nullptr) {
      if (size_t i = a->find(h, k); i != Array::npos) return i;
    }
    return insert(h, k);
  }

  __attribute__((noinline)) size_t insert(uint64_t h, const PackedKey& k) {
    Array* a = array.load(std::memory_order_acquire);
    const size_t cap = a ? a->mask + 1 : 0;
    // Grow at 3/4 full: linear probing stays short.
    if ((used + 1) * 4 > cap * 3) a = grow(a);
    if (a == nullptr || used == a->mask + 1) return Array::npos;
    size_t i = h & a->mask;
    while (a->slots[i].hash.load(std::memory_order_acquire) != 0) i = (i + 1) & a->mask;
    Slot& s = a->slots[i];
    s.meta.store(k.meta, std::memory_order_release);  // State none.
    for (size_t w = 0; w < 5; ++w) s.tuple[w].store(k.word(w), std::memory_order_release);
    s.reported.store(0, std::memory_order_release);
    s.hash.store(h, std::memory_order_release);
    ++used;
    return i;
  }

  // A twice larger array with every slot of 'old', published; or 'old' when
  // memory runs out.
  Array* grow(Array* old) {
    const size_t cap = old ? old->mask + 1 : 0;
    const size_t next = cap ? cap * 2 : kInitialSlots;
    Array* a = Array::make(next);
    bool kept = a != nullptr;
    if (kept) {
      try {
        arrays.emplace_back(a);
      } catch (const std::bad_alloc&) {
        delete a;
        kept = false;
      }
    }
    if (!kept) {
      logger()->error("connection state table: out of memory growing a shard to {} slots", next);
      return old;
    }
    for (size_t k = 0; k < cap; ++k) {
      const Slot& s = old->slots[k];
      const uint64_t h = s.hash.load(std::memory_order_acquire);
      if (h == 0) continue;
      size_t i = h & a->mask;
      while (a->slots[i].hash.load(std::memory_order_acquire) != 0) i = (i + 1) & a->mask;
      a->slots[i].copy_from(s);
    }
    array.store(a, std::memory_order_release);
    return a;
  }

  // Removes slot 'i', shifting the rest of its probe run back so that no
  // tombstone is left.  The shard is held.
  void erase_at(size_t i) {
    Array* a = array.load(std::memory_order_acquire);
    for (size_t j = (i + 1) & a->mask; a->slots[j].hash.load(std::memory_order_acquire) != 0; j = (j + 1) & a->mask) {
      const size_t home = a->slots[j].hash.load(std::memory_order_acquire) & a->mask;
      // Slot j may move to i when its home is not cyclically in (i, j].
      const bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
      if (!stays) {
        a->slots[i].copy_from(a->slots[j]);
        i = j;
      }
    }
    a->slots[i].hash.store(0, std::memory_order_release);
    --used;
  }

  void clear() {
    if (Array* a = array.load(std::memory_order_acquire)) {
      for (size_t i = 0; i <= a->mask; ++i) a->slots[i].hash.store(0, std::memory_order_release);
    }
    used = 0;
  }

  std::atomic<uint32_t> seq{0};  // Odd while a writer holds the shard.
  std::atomic<Array*> array{nullptr};
  size_t used = 0;                             // Writers only.
  std::vector<std::unique_ptr<Array>> arrays;  // Every array made; the current one last.
};

// Holds a shard for writing.
class ConnStateTable::WriteLock {
 public:
  explicit WriteLock(Shard& s) : s_(s) { s_.lock(); }
  ~WriteLock() { s_.unlock(); }
  WriteLock(const WriteLock&) = delete;
  WriteLock& operator=(const WriteLock&) = delete;

 private:
  Shard& s_;
};

// The shards live inside the table object (no pointer to follow on the
// way to a connection's shard).
static_assert(sizeof(ConnStateTable::Shard) <= ConnStateTable::kShardBytes);
static_assert(alignof(ConnStateTable::Shard) <= ConnStateTable::kShardBytes);

ConnStateTable::ConnStateTable() {
  for (auto& s : seed_) s = random_seed();
  for (size_t k = 0; k < kShards; ++k) new (shard_storage_ + k * kShardBytes) Shard();
}

ConnStateTable::~ConnStateTable() {
  for (size_t k = 0; k < kShards; ++k) shard(k).~Shard();
}

inline ConnStateTable::Shard& ConnStateTable::shard(size_t k) const {
  return *std::launder(reinterpret_cast<Shard*>(shard_storage_ + k * kShardBytes));
}

inline uint64_t ConnStateTable::hash(const Conn& k) const {
  const Tuple& t = k.orig;
  // Ports, zone, protocol and family in one word.
  const uint64_t meta = uint64_t{t.src_port} | (uint64_t{t.dst_port} << 16) | (uint64_t{k.zone} << 32) |
                        (uint64_t{k.proto} << 48) | (uint64_t{k.family} << 56);
  uint64_t h;
  if (k.family == AF_INET) {
    // IPv4, the common case: one multiply.
    h = mum((uint64_t{t.src.words[0]} | (uint64_t{t.dst.words[0]} << 32)) ^ seed_[0], meta ^ seed_[1]);
  } else {
    uint64_t w[4];
    std::memcpy(w, t.src.bytes, 16);
    std::memcpy(w + 2, t.dst.bytes, 16);
    h = mum(w[0] ^ seed_[0], w[1] ^ seed_[1]);
    h = mum(h ^ w[2] ^ seed_[2], w[3] ^ seed_[3]);
    h = mum(h ^ meta ^ seed_[0], seed_[2]);
  }
  return h != 0 ? h : 1;
}

inline ConnStateTable::Shard& ConnStateTable::shard_of(uint64_t h) const { return shard(h >> (64 - kShardBits)); }

inline OffloadState ConnStateTable::read_state(const Shard& s, uint64_t h, const void* key) {
  const PackedKey& k = *static_cast<const PackedKey*>(key);
  return s.read([&](const Array* a) {
    if (a == nullptr) return OffloadState::kNone;
    const size_t i = a->find(h, k);
    return i == Array::npos ? OffloadState::kNone : a->slots[i].state();
  });
}

void ConnStateTable::mark_added(const Conn& c) {
  const uint64_t h = hash(c);
  Shard& s = shard_of(h);
  const PackedKey k = pack(c);
  // A repeated add finds it added without writing anything.
  if (read_state(s, h, &k) != OffloadState::kNone) return;
  WriteLock lock(s);
  if (size_t i = s.find_or_insert(h, k); i != Array::npos) {
    Slot& slot = s.array.load(std::memory_order_acquire)->slots[i];
    if (slot.state() == OffloadState::kNone) slot.set_state(OffloadState::kAdded);
  }
}

OffloadState ConnStateTable::establish(const Conn& c) {
  const uint64_t h = hash(c);
  Shard& s = shard_of(h);
  const PackedKey k = pack(c);
  // Only "added" changes: anything else is answered without writing.
  if (OffloadState seen = read_state(s, h, &k); seen != OffloadState::kAdded) return seen;
  WriteLock lock(s);
  Array* a = s.array.load(std::memory_order_acquire);
  const size_t i = a != nullptr ? a->find(h, k) : Array::npos;
  if (i == Array::npos) return OffloadState::kNone;
  const OffloadState was = a->slots[i].state();
  if (was == OffloadState::kAdded) a->slots[i].set_state(OffloadState::kEstablished);
  return was;
}

OffloadState ConnStateTable::get(const Conn& c) const {
  const uint64_t h = hash(c);
  const PackedKey k = pack(c);
  return read_state(shard_of(h), h, &k);
}

void ConnStateTable::erase(const Conn& c) {
  const uint64_t h = hash(c);
  Shard& s = shard_of(h);
  const PackedKey k = pack(c);
  // Deleting a connection the table does not know (conntrack deletes every
  // connection, offloaded or not) writes nothing.
  const bool known = s.read([&](const Array* a) { return a != nullptr && a->find(h, k) != Array::npos; });
  if (!known) return;
  WriteLock lock(s);
  Array* a = s.array.load(std::memory_order_acquire);
  if (size_t i = a != nullptr ? a->find(h, k) : Array::npos; i != Array::npos) s.erase_at(i);
}

void ConnStateTable::clear() {
  for (size_t k = 0; k < kShards; ++k) {
    WriteLock lock(shard(k));
    shard(k).clear();
  }
}

long long ConnStateTable::report_if_advanced(const Conn& c, long long last_used) {
  if (last_used == 0) return 0;
  const uint64_t h = hash(c);
  Shard& s = shard_of(h);
  const PackedKey k = pack(c);
  // Idle since the previous query: answered without writing.
  const bool idle = s.read([&](const Array* a) {
    if (a == nullptr) return false;
    const size_t i = a->find(h, k);
    return i != Array::npos && last_used <= a->slots[i].reported.load(std::memory_order_acquire);
  });
  if (idle) return 0;
  WriteLock lock(s);
  const size_t i = s.find_or_insert(h, k);
  if (i == Array::npos) return last_used;  // Out of memory: answer as last_used would.
  Slot& slot = s.array.load(std::memory_order_acquire)->slots[i];
  if (last_used <= slot.reported.load(std::memory_order_acquire)) return 0;
  slot.reported.store(last_used, std::memory_order_release);
  return last_used;
}

size_t ConnStateTable::size() const {
  size_t n = 0;
  for (size_t k = 0; k < kShards; ++k) {
    WriteLock lock(shard(k));
    n += shard(k).used;
  }
  return n;
}

}  // namespace ctoffload
