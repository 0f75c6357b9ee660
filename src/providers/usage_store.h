// usage_store.h - a store of connection readings shared by every process that
// works on the same nftables table in the same network namespace.
//
// What it is for: the kernel provider learns when a connection was last used
// by comparing its conntrack packet counters between two readings; when they
// moved, the connection was used at the time of the reading that saw the
// move.  Kept in one process's memory, the previous reading dies with the
// process, and a one-shot `ctoffloadctl show` always says "unknown".  This
// store keeps, per connection, the last reading and the last-used time in a
// file, so that every process sees the readings of the others.
//
// The store is a cache of readings: deleting its files loses only last-used
// history (connections read for the first time again say unknown).  It never
// decides whether a connection exists; conntrack and the nftables table do.
//
// Files: one pair per (network namespace, table) in 'dir' (default
// /run/ctoffload, created 0755 when missing; its parent must exist):
//   <dir>/<table>.net<INODE>.usage   the data file (0600),
//   <dir>/<table>.net<INODE>.lock    the lock file (0600, always empty),
// where INODE is the inode number of /proc/self/ns/net, so two namespaces
// never share a store.  Growth writes <dir>/<table>.net<INODE>.usage.tmp and
// renames it over the data file.
//
// Data file (host byte order; format version 2): a 64-byte header
// (UsageFileHeader below: magic "CTOFFUS1" - the same for every format
// version -, format version 2, slot size 32, slot count - a power of two
// from 256 to 2^26 -, slots in use, tombstones, a 128-bit seed) followed by
// the slot array, an open-addressing hash table with linear probing, read
// and written through a shared mapping.
//
// Slots hold a fingerprint of the key, not the key.  A connection's key is
// 40 bytes: family, protocol, zone, then the original tuple's source and
// destination addresses (16 bytes each; for AF_INET the 4 address bytes and
// 12 zero bytes) and ports, the zone and ports in the byte order of Conn.
// Its fingerprint is SipHash-2-4 of those bytes keyed by the file's seed
// (usage_fingerprint()), and its first slot is the fingerprint modulo the
// slot count (usage_first_slot()).  The seed is drawn from getrandom(2)
// whenever a new empty data file is made (the first lock(), a data file
// found missing or unreadable, clear()) and copied into the new file by
// every growth or shrink.  A slot (UsageSlot below) is 32 bytes: a 32-bit
// tag, the conntrack id, the fingerprint, the packets of both directions
// and the last-used time.  The tag is the slot's state and checksum in one
// word: 0 = empty, 1 = deleted (a tombstone), anything else = live, and then
// it must equal usage_slot_check() of the other 28 bytes.
//
// The trade of storing fingerprints: two connections whose fingerprints are
// equal share one slot.  For one pair of connections that happens with
// probability 2^-64 (about 3e-8 that any two of 1,000,000 connections held
// at once collide), and the tuples' chooser (whoever picks source ports and
// addresses) cannot aim at it: without the seed, which never leaves the
// file, neither a collision nor a long probe chain can be built other than
// by chance.  The conntrack id is a second check: a reading with another id
// starts the slot over.  What a collision costs is the last-used history of
// the two connections: while both live, each one's reading starts the
// other's over (both say unknown); only if their conntrack ids are equal as
// well can one connection's last-used time be taken from the other's
// counters.  forget() and retain() of one of them act on the shared slot.
// Nothing else depends on the store.
//
// Load: when slots in use plus tombstones would exceed 3/4 of the slots, the
// table is rehashed into a new file at the smallest size that leaves it at
// most half full (twice the size when it is full of live entries, then 3/8
// full; the same size when it is mostly tombstones), and the new file is
// renamed over the old one (atomic).  A lookup then reads 2.5 slots on
// average at the fullest (8.5 when the key is absent), two slots per cache
// line.  Disk space for a file is reserved with posix_fallocate() before it
// is mapped, so a full /run is an ENOSPC error, never a SIGBUS.  Memory: 32
// bytes times 4/3 to 8/3 slots per connection, 43 to 85 bytes per
// connection (1,000,000 connections take 2^21 slots: 64 MB of /run, which
// is RAM).
//
// Locking: every session takes flock(LOCK_EX) on the lock file - a separate
// file, because the data file is replaced when it grows - opened afresh for
// each session, so that sessions of one process, of forked children and of
// other processes exclude each other alike (as iptables' /run/xtables.lock).
// It waits up to 'lock_timeout_ms', polling every few ms, then fails with
// ETIMEDOUT naming the lock file.  Under the lock, a session compares the data
// file's inode with the one it has mapped and maps the new file when another
// process replaced it.  Every read and write of the data file happens under
// the lock.  Within one process, sessions on one UsageStore also take a
// mutex, so a UsageStore may be shared between threads.
//
// A writer that dies mid-write (killed, crashed) leaves at most one slot
// half-written and the header's counters off by one:
//  - a new entry is written body first, tag last, so a half-written new
//    entry is still an empty slot (or still a tombstone);
//  - a half-written update of a live slot fails its checksum and counts as a
//    tombstone: it never matches a lookup, probes continue past it, the slot
//    is reused when its own fingerprint is recorded again and dropped by the
//    next rehash or retain() (the connection is then read for the first time
//    again: unknown);
//  - deletion is one aligned 4-byte store of the tag, which cannot be torn;
//  - counters are raised before and lowered after the slot write they
//    account for, so they err high: growth comes a little early, size() may
//    count a lost slot until the next rehash recounts.
// A data file whose header is not a version 2 header with a consistent
// geometry and file size (garbage, a version 1 file, another format version)
// is replaced by an empty store with a new seed.
//
// Cost: observe(), peek() and forget() hash 40 bytes (SipHash-2-4, 16
// SipRounds) and read the header and the few slots of one probe
// sequence, typically one or two cache lines, whatever the store holds; a
// growth or a clear() is O(slots) and amortized O(1) per insertion.
// retain() looks up every held connection, then sweeps the slots: O(held +
// slots) time and slots/8 bytes of memory.  Opening a session is an open(),
// a flock(), an fstat() and two stat()s (plus an mmap() when another process
// replaced the data file).
//
// Errors: 0 or a positive errno, as everywhere in ctoffload (result.h); the
// message names the file or directory.  Nothing here logs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "ctoffload/conn.h"
#include "ctoffload/result.h"

namespace ctoffload {

struct UsageStoreOptions {
  // Directory of the files; created (0755) when missing, its parent must exist.
  std::string dir = "/run/ctoffload";
  // The nftables table: 1 to 128 characters of letters, digits, '_', '-'
  // and '.', not starting with '.'.
  std::string table;
  // How long lock() waits for the lock: 0 tries once, < 0 waits forever.
  int lock_timeout_ms = 2000;
};

class UsageStore {
  struct Impl;  // The mapped store (usage_store.cc).

 public:
  // Opens the store of 'opts.table' in this process's network namespace:
  // checks the table name (EINVAL), creates the directory when missing and
  // the lock file (ENOTDIR, EACCES, ENOENT, ... naming the path), reads the
  // namespace inode (errno naming /proc/self/ns/net).  It does not take the
  // lock and never waits: the data file is created or mapped by the first
  // lock().
  static Result<UsageStore> open(const UsageStoreOptions& opts);

  UsageStore(UsageStore&&) noexcept;
  UsageStore& operator=(UsageStore&&) noexcept;
  UsageStore(const UsageStore&) = delete;
  UsageStore& operator=(const UsageStore&) = delete;
  ~UsageStore();

  // The data file's path (for logs, docs, tests).
  [[nodiscard]] const std::string& path() const;
  // The lock file's path.
  [[nodiscard]] const std::string& lock_path() const;

  // Holds the lock for a series of operations; released on destruction.  A
  // session must not outlive its store (moving the store is fine) and must
  // not be carried across fork(); a moved-from session must not be used.
  // Its operations never fail: when the store cannot record something
  // (growth failed: ENOSPC on /run, EFBIG, ...), the answer of the call is
  // still correct, the reading is not recorded (the connection is read for
  // the first time again later) and last_error() says why.
  class Session {
   public:
    Session(Session&&) noexcept;
    Session& operator=(Session&&) noexcept;
    Session(const Session&) = delete;
    Session& operator=(const Session&) = delete;
    ~Session();

    // One reading of connection 'conn' (family, proto, zone and orig are the
    // key; for AF_INET only the first 4 bytes of each address count; the
    // rest of 'conn' is ignored): conntrack entry id 'ct_id' and counters
    // 'packets' (both directions) taken at 'now_ms' (ms since the Unix
    // epoch).  Returns the connection's last-used time in ms (0 = unknown)
    // and records the reading:
    //  - no slot, or a slot with another ct_id (a new conntrack entry):
    //    records {ct_id, packets, last used 0} and returns 0 (first
    //    reading: unknown);
    //  - the same ct_id and other packets: records {packets, last used =
    //    'now_ms'} and returns 'now_ms';
    //  - the same ct_id and packets: returns the recorded last used
    //    (unchanged; 0 stays unknown).
    long long observe(const Conn& conn, uint32_t ct_id, uint64_t packets, long long now_ms);

    // The recorded last-used time of 'conn' without recording anything (0
    // when absent or unknown).
    [[nodiscard]] long long peek(const Conn& conn) const;

    // Drops the slot of 'conn' (conn_del).  No-op when absent.
    void forget(const Conn& conn);

    // Drops every entry but those of the connections in 'held' (called
    // after a process read the whole table, with every connection it holds,
    // to prune connections that are gone).  A held connection matches its
    // entry by key, as in observe() (reply and mark are ignored); held
    // connections without an entry and repeats are ignored.  Returns the
    // number of entries dropped; half-written slots are dropped too, without
    // being counted.  Shrinks the file when it is mostly empty afterwards.
    size_t retain(std::span<const Conn> held);

    // Drops everything (flush): replaces the data file by an empty one of
    // the initial size with a new seed (if that fails, marks every slot
    // deleted instead).
    void clear();

    // Entries held (errs high by one per writer that died mid-write, until
    // the next rehash).
    [[nodiscard]] size_t size() const;

    // The slot count of the data file (for tests and status).
    [[nodiscard]] size_t slots() const;

    // Why the last operation of this session that could not grow, record,
    // shrink or clear the store failed (an observe() past the growth
    // threshold still records while the table is at most 7/8 full); ok when
    // every operation did all it says.  The store is consistent either way,
    // and the answers are right.
    [[nodiscard]] const Status& last_error() const { return last_error_; }

   private:
    friend class UsageStore;
    Session(Impl* store, int lock_fd, std::unique_lock<std::mutex> thread_lock);
    void release();

    Impl* store_ = nullptr;
    int lock_fd_ = -1;
    std::unique_lock<std::mutex> thread_lock_;
    Status last_error_;
  };

  // Takes the lock (waiting up to 'lock_timeout_ms': ETIMEDOUT naming the
  // lock file), then maps the current data file, creating it when missing
  // and replacing it when its header is not understood (errno naming the
  // file: ENOSPC, EACCES, ...; errno of getrandom(2) when no seed can be
  // drawn for a new file).
  Result<Session> lock();

 private:
  explicit UsageStore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// ---- The file format (for tests and tools that read the file) ----

inline constexpr char kUsageMagic[8] = {'C', 'T', 'O', 'F', 'F', 'U', 'S', '1'};
inline constexpr uint32_t kUsageVersion = 2;
inline constexpr uint64_t kUsageInitialSlots = 256;
inline constexpr uint64_t kUsageMaxSlots = uint64_t{1} << 26;
inline constexpr uint32_t kUsageTagEmpty = 0;
inline constexpr uint32_t kUsageTagDeleted = 1;

// The SipHash key of a data file: k0 and k1 as the SipHash paper names the
// two little-endian halves of its 128-bit key.
struct UsageSeed {
  uint64_t k0;
  uint64_t k1;
  friend bool operator==(const UsageSeed&, const UsageSeed&) = default;
};

struct UsageFileHeader {
  char magic[8];        // kUsageMagic.
  uint32_t version;     // kUsageVersion.
  uint32_t slot_size;   // sizeof(UsageSlot), 32.
  uint64_t slots;       // Power of two, kUsageInitialSlots .. kUsageMaxSlots.
  uint64_t used;        // Live slots (errs high after a writer died).
  uint64_t tombstones;  // Deleted slots.
  UsageSeed seed;       // Keys the fingerprints; random per new file.
  uint64_t reserved;
};
static_assert(sizeof(UsageFileHeader) == 64);

struct UsageSlot {
  uint32_t tag;          // kUsageTagEmpty, kUsageTagDeleted or usage_slot_check().
  uint32_t ct_id;        // Conntrack entry id of the reading.
  uint64_t fingerprint;  // usage_fingerprint() of the connection.
  uint64_t packets;      // Both directions, at the last reading.
  int64_t last_used_ms;  // ms since the Unix epoch; 0 = not known.
};
static_assert(sizeof(UsageSlot) == 32);

// SipHash-2-4 (Aumasson and Bernstein, 2012) of the 'len' bytes at 'data'
// keyed by 'key'.
uint64_t usage_siphash24(const UsageSeed& key, const void* data, size_t len);
// The fingerprint of the key of 'conn' (see above) under 'seed'.
uint64_t usage_fingerprint(const UsageSeed& seed, const Conn& conn);
// The first slot of 'fingerprint''s probe sequence in a table of 'slots'
// slots (a power of two).
inline uint64_t usage_first_slot(uint64_t fingerprint, uint64_t slots) { return fingerprint & (slots - 1); }
// The tag of a live slot: FNV-1a 32 of bytes 4 .. 31, plus 2 when below 2.
uint32_t usage_slot_check(const UsageSlot& slot);

}  // namespace ctoffload
