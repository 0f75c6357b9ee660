// nft_conn_table.h - the kernel provider's record of each connection it
// holds (private to src/providers/nft_*.cc).
//
// ConnTable is an open-addressing index over dense records (at most 104
// bytes each: the connection and what the kernel provider keeps about it),
// allocated once at the provider's capacity; pages are committed as
// records are used.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "ctoffload/conn.h"
#include "ctoffload/result.h"
#include "providers/ft_mode.h"
#include "providers/nft_devices.h"

namespace ctoffload::nft {

// Record flags.
constexpr uint8_t kRecSeen = 0x2;        // Counters observed at least once.
constexpr uint8_t kRecNoCounters = 0x4;  // The conntrack entry has no accounting.

struct Record {
  Conn conn;          // 80 bytes: identity (family, proto, zone, both tuples).
  uint64_t packets;   // Both directions, at the last observation.
  int64_t last_used;  // ms since the epoch when 'packets' last changed; 0 = not yet.
  uint16_t iif;       // Device of the original direction (index into devices).
  uint16_t riif;      // Device of the reply direction, kNoDevice if unknown.
  uint8_t flags;
  FtMode ft;  // The flowtable its selection set's rule adds it to: kSw or kHw.
};
static_assert(sizeof(Conn) == 80, "Conn layout changed");
static_assert(sizeof(Record) <= 104, "keep per-connection bookkeeping compact");

inline bool same_key(const Conn& a, uint8_t family, uint8_t proto, uint16_t zone, const Tuple& orig) {
  return a.family == family && a.proto == proto && a.zone == zone && same_tuple(a.orig, orig);
}

// Dense records plus a linear-probing index on (family, proto, zone,
// original tuple).  Erasing moves the last record into the hole, so the
// records in use are always the first size() of the array and the memory
// touched follows the number held, not the capacity.
class ConnTable {
 public:
  static constexpr size_t npos = SIZE_MAX;

  Status init(size_t capacity) {
    capacity_ = capacity;
    // calloc: pages are committed as records are used.
    records_.reset(static_cast<Record*>(std::calloc(capacity, sizeof(Record))));
    size_t slots = 16;
    while (slots < capacity * 2) slots <<= 1;
    slots_.reset(static_cast<uint32_t*>(std::calloc(slots, sizeof(uint32_t))));
    if (!records_ || !slots_) return Status::error(ENOMEM, "cannot allocate the connection table");
    mask_ = slots - 1;
    size_ = 0;
    return {};
  }

  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  Record& at(size_t i) { return records_.get()[i]; }
  const Record& at(size_t i) const { return records_.get()[i]; }

  size_t find(uint8_t family, uint8_t proto, uint16_t zone, const Tuple& orig) const {
    if (!slots_) return npos;
    size_t s = hash_tuple(family, proto, zone, orig) & mask_;
    for (;;) {
      const uint32_t v = slots_.get()[s];
      if (v == 0) return npos;
      if (same_key(at(v - 1).conn, family, proto, zone, orig)) return v - 1;
      s = (s + 1) & mask_;
    }
  }
  size_t find(const Conn& c) const { return find(c.family, c.proto, c.zone, c.orig); }

  // Adds 'r' (the caller checked room and absence); returns its index.
  size_t insert(const Record& r) {
    const size_t i = size_++;
    at(i) = r;
    size_t s = slot_of(r.conn);
    while (slots_.get()[s] != 0) s = (s + 1) & mask_;
    slots_.get()[s] = static_cast<uint32_t>(i + 1);
    return i;
  }

  // Removes record 'i'; the last record takes its index.
  void erase(size_t i) {
    remove_slot(i);
    const size_t last = size_ - 1;
    if (i != last) {
      // Re-point the last record's slot at its new index.
      size_t s = slot_of(at(last).conn);
      while (slots_.get()[s] != last + 1) s = (s + 1) & mask_;
      slots_.get()[s] = static_cast<uint32_t>(i + 1);
      at(i) = at(last);
    }
    std::memset(&at(last), 0, sizeof(Record));
    --size_;
  }

  void clear() {
    if (slots_) std::memset(slots_.get(), 0, (mask_ + 1) * sizeof(uint32_t));
    if (records_) std::memset(records_.get(), 0, size_ * sizeof(Record));
    size_ = 0;
  }

 private:
  struct Free {
    void operator()(void* p) const noexcept { std::free(p); }
  };

  size_t slot_of(const Conn& c) const { return hash_tuple(c.family, c.proto, c.zone, c.orig) & mask_; }

  // Backward-shift deletion: no tombstones, probe sequences stay short.
  void remove_slot(size_t i) {
    size_t s = slot_of(at(i).conn);
    while (slots_.get()[s] != i + 1) s = (s + 1) & mask_;
    size_t hole = s;
    size_t j = s;
    for (;;) {
      j = (j + 1) & mask_;
      const uint32_t v = slots_.get()[j];
      if (v == 0) break;
      const size_t home = slot_of(at(v - 1).conn);
      // Move v into the hole unless its home lies cyclically in (hole, j].
      const bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
      if (!stays) {
        slots_.get()[hole] = v;
        hole = j;
      }
    }
    slots_.get()[hole] = 0;
  }

  std::unique_ptr<Record, Free> records_;
  std::unique_ptr<uint32_t, Free> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
  size_t capacity_ = 0;
};

}  // namespace ctoffload::nft
