// software.h - the software fallback provider: a userspace exact-match flow
// cache.
//
// It takes every connection the kernel provider cannot.  conn_add installs
// both directions of a connection (original and reply tuple, in its zone);
// lookup() is the datapath's fast-path call: a hit counts packets and bytes
// and stamps last used, from either direction; conn_update() returns last
// used in ms since the Unix epoch (0 when never hit).
//
// Identity: a connection is its family, protocol, zone and both tuples
// (same_conn() in conn.h); conn_del, conn_update and conn_query act only on
// a connection held with exactly that identity.  A packet is matched on
// family, protocol, zone and its own 5-tuple: the original tuple gives
// Direction::kOriginal, the reply tuple Direction::kReply.  Under NAT the
// reply tuple is not the mirror of the original, and a packet carrying the
// mirror of the original does not match.
//
// Bounded: at most 'capacity' connections, fixed at creation; when full,
// conn_add fails with ENOSPC and nothing is evicted.  Memory is
// bytes_per_connection() * capacity plus a constant: one 104-byte record
// per connection (both tuples, zone, counters; a hit in either direction
// reads 72 bytes of it, at most two cache lines) and four 4-byte hash slots
// per connection (two directions at a load factor of at most one half),
// 120 bytes in all.  It is allocated at creation (zero pages, committed as
// the table fills).
//
// Threads: lookup(), lookup_batch(), conn_update(), conn_query(),
// can_offload() and size() are lock-free and may run on any number of
// threads while conn_add, conn_del and flush (serialized by a mutex) go on.
// A lookup never returns a hit for a connection whose conn_del (or flush)
// returned before the lookup started, finds a connection held for its
// whole duration (a miss that overlapped deletes moving slots is retried, up
// to 64 times), and counts a hit on the connection it matched, never
// on a connection that later reuses that connection's memory.  The provider
// must outlive every lookup() call.  Limits: 2^52 packets per connection
// (the top 12 bits of the packet counter track lookups in flight, at most
// 4095 at once on one connection).
// docs/SOFTWARE_PROVIDER.md explains the table and the concurrency model.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "ctoffload/config.h"
#include "ctoffload/provider.h"
#include "ctoffload/result.h"
#include "option_range.h"

namespace ctoffload {

struct SoftwareOptions {
  // Defaults and limits, written once (see NftFlowtableOptions).
  static constexpr UintOption kCapacity{.key = "capacity", .def = 65536, .min = 1, .max = uint64_t{1} << 24};
  static constexpr size_t kDefaultCapacity = kCapacity.def;
  static constexpr size_t kMaxCapacity = kCapacity.max;
  size_t capacity = kDefaultCapacity;  // Connections; 1 .. kMaxCapacity.
};

// What lookup() found.
enum class Direction : uint8_t { kMiss = 0, kOriginal = 1, kReply = 2 };

// One packet for SoftwareProvider::lookup_batch(): what lookup() takes.
struct SoftwarePacket {
  uint8_t family = 0;  // AF_INET or AF_INET6.
  uint8_t proto = 0;   // IPPROTO_TCP or IPPROTO_UDP.
  uint16_t zone = 0;
  uint32_t bytes = 0;  // Counted on a hit.
  Tuple tuple{};       // As seen on the wire, in the packet's direction.
};

class SoftwareProvider final : public Provider {
 public:
  static constexpr const char* kName = "software";
  static constexpr size_t kDefaultCapacity = SoftwareOptions::kDefaultCapacity;
  static constexpr size_t kMaxCapacity = SoftwareOptions::kMaxCapacity;

  // EINVAL for a capacity of 0 or above kMaxCapacity; ENOMEM if the table
  // cannot be allocated.
  static Result<std::shared_ptr<SoftwareProvider>> create(const SoftwareOptions& options);
  // From config options: "capacity" (default kDefaultCapacity).  EINVAL
  // names the option when its value does not parse or is out of range.
  static Result<std::shared_ptr<SoftwareProvider>> create(const ProviderOptions& options);

  ~SoftwareProvider() override;
  SoftwareProvider(const SoftwareProvider&) = delete;
  SoftwareProvider& operator=(const SoftwareProvider&) = delete;

  // Fast path: the packet's tuple (as seen on the wire, in its own
  // direction), family, protocol and zone.  On a hit, counts one packet of
  // 'bytes' and stamps last used.  For IPv4 only the first four bytes of
  // each address are read.  Lock-free; never blocks on a writer.
  Direction lookup(uint8_t family, uint8_t proto, uint16_t zone, const Tuple& pkt, uint32_t bytes);

  // The same for a burst of packets: out[i] is what lookup() would return
  // for packets[i], with the same counting.  It overlaps the memory
  // accesses of successive packets (in chunks of 32: every slot of the
  // chunk is prefetched first, then each record 8 packets ahead of its
  // check), which is what keeps a table much larger than the CPU caches
  // fast; bursts of 32 get the most from it.  Only
  // min(packets.size(), out.size()) packets are looked up.
  void lookup_batch(std::span<const SoftwarePacket> packets, std::span<Direction> out);

  // For tests: lookup() and lookup_batch(), the same code, calling
  // 'after_slot' after every hash slot they read (with true when the slot
  // was empty), so that a test can change the table at the worst moment for
  // a lock-free reader (a delete shifting slots back between two of its
  // reads) and see that the reader probed again: a hit can only follow an
  // empty slot when a probe that ended in a miss was retried.  A datapath
  // has no use for these.
  using SlotHook = std::function<void(bool empty)>;
  Direction lookup_with_slot_hook(uint8_t family, uint8_t proto, uint16_t zone, const Tuple& pkt, uint32_t bytes,
                                  const SlotHook& after_slot);
  void lookup_batch_with_slot_hook(std::span<const SoftwarePacket> packets, std::span<Direction> out,
                                   const SlotHook& after_slot);

  // Connections held now.
  size_t size() const;
  // Connections the table can hold (fixed at creation).
  size_t capacity() const;
  // Bytes of memory the table uses per connection it can hold (120).
  static size_t bytes_per_connection();

  // Provider.  conn_add and can_offload take a connection validate()
  // accepts (the registry refuses the others before calling them).
  // conn_add: 0, EINVAL (original and reply tuples identical), EEXIST (the
  // connection is held, or one of its tuples is another held connection's
  // tuple in the same zone), ENOSPC (full; nothing is evicted).
  std::string name() const override { return kName; }
  bool is_fallback() const override { return true; }
  int conn_add(const Ctx& ctx) override;
  // Removes ctx.conn; an unknown connection is ignored.
  void conn_del(const Ctx& ctx) override;
  // Last hit of ctx.conn in ms since the Unix epoch (coarse clock, a few ms
  // of granularity); 0 when never hit or not held.
  long long conn_update(const Ctx& ctx) override;
  // True while the table has room and the two tuples differ.
  bool can_offload(const Ctx& ctx) override;
  // Removes every connection.
  void flush() override;
  // Fills 'status' (provider "software", CT_OFFLOAD_MODE_SW, packets and
  // bytes of both directions, last used) and returns true when ctx.conn is
  // held; returns false and leaves 'status' untouched otherwise.
  bool conn_query(const Ctx& ctx, ConnStatus* status) override;

 private:
  struct Impl;
  explicit SoftwareProvider(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctoffload
