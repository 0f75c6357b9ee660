// conn_state.h - the registry's per-connection offload state (the RFC
// series' "offload mark", patch 07) and the previous answer of conn_update
// for each connection.
//
// A hash table sharded by connection: each shard is an open-addressing table
// (linear probing, deletion by backward shift, so no tombstones) behind a
// sequence lock of its own, on a cache line of its own.  Every operation
// hashes the connection once and is O(1) (amortised over the shard's
// growth).  Reads take no lock and write nothing shared: a query, an add of
// a connection already added, a delete of one the table does not know, an
// update that finds the connection idle.  A change holds one shard for a few
// dozen instructions - no callback, no allocation unless the shard grows.
// Two threads contend only when they change connections of the same shard,
// so dispatch of different connections does not serialise here.
//
// A connection is identified as conntrack identifies it: family, protocol,
// zone and original tuple.  The reply tuple, the mark and the context's
// netdev are not part of the identity.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "ctoffload/conn.h"

namespace ctoffload {

enum class OffloadState : uint8_t {
  kNone = 0,         // Not offloaded (never added, refused, deleted, flushed).
  kAdded = 1,        // A provider accepted conn_add (or holds it: EEXIST).
  kEstablished = 2,  // conn_established was delivered after that.
};

// The identity of a connection, as stored.
struct ConnKey {
  uint8_t family = 0;
  uint8_t proto = 0;
  uint16_t zone = 0;
  Tuple orig{};

  static ConnKey of(const Conn& c) { return ConnKey{c.family, c.proto, c.zone, c.orig}; }
  bool operator==(const ConnKey& o) const {
    return family == o.family && proto == o.proto && zone == o.zone && same_tuple(orig, o.orig);
  }
};

class ConnStateTable {
 public:
  // The hash is seeded per table: where a shard's slots lie differs from one
  // process to the next.
  ConnStateTable();
  ~ConnStateTable();
  ConnStateTable(const ConnStateTable&) = delete;
  ConnStateTable& operator=(const ConnStateTable&) = delete;

  // After an accepted conn_add: none -> added.  Added and established stay.
  void mark_added(const Conn& c);
  // Added -> established, in one step under the shard's lock; returns the
  // state found, so that exactly one of two racing callers sees kAdded.
  OffloadState establish(const Conn& c);
  OffloadState get(const Conn& c) const;
  // Forgets the connection (state and previous answer).
  void erase(const Conn& c);
  // Forgets every connection and gives the memory back.
  void clear();

  // "Used since the previous query": 'last_used' (a provider's answer, ms)
  // when it is later than the answer recorded at this connection's previous
  // query, which it then becomes; 0 when it is not (or is 0).  A connection
  // the table does not know yet is recorded (state none) when 'last_used' is
  // not 0, and forgotten by erase()/clear().
  long long report_if_advanced(const Conn& c, long long last_used);

  // Connections recorded, for tests and statistics (locks every shard).
  size_t size() const;

  static constexpr size_t kShards = 64;
  static constexpr size_t kShardBytes = 64;  // A shard: one cache line.

  struct Slot;
  struct Array;
  struct Shard;

 private:
  class WriteLock;
  // The state of the connection whose packed key is at 'key', read without
  // a lock.
  __attribute__((always_inline)) static OffloadState read_state(const Shard& s, uint64_t h, const void* key);
  // Inlined into each operation: an exported member function of a shared
  // library is otherwise called through the PLT, even from its own file.
  __attribute__((always_inline)) uint64_t hash(const Conn& c) const;
  __attribute__((always_inline)) Shard& shard_of(uint64_t h) const;
  __attribute__((always_inline)) Shard& shard(size_t k) const;

  std::array<uint64_t, 4> seed_{};
  // kShards Shard objects, constructed in place (their type is private to
  // conn_state.cc).
  alignas(kShardBytes) mutable std::byte shard_storage_[kShards * kShardBytes];
};

}  // namespace ctoffload
