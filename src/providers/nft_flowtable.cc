// nft_flowtable.cc - the kernel provider.
//
// The flow of one conn_add (follow the names):
//   conn_add -> process(ops) -> run_segment(): a loop over the rounds of
//   kSegmentSettle (netlink/settle.h), each a segment_round():
//     validate, Devices::resolve() for both directions (the route to the
//     peer when the context does not say), capacity
//     -> Devices::join(): new devices join a flowtable (hardware first when
//        asked for, software when refused) in their own transaction
//     -> one NftTxn: NEWSET/NEWRULE for a selection set not made yet, then
//        NEWSETELEM of the connection's original tuple (nft_layout.h)
//     -> per-element results; on success the record goes into 'conns';
//        a lost verdict is read back (read_back()) and what the kernel does
//        not have is handed to the next round
//     -> rollback_devices(): devices that joined for nothing leave again.
//
// Every site that commits (the probe, Devices::join(), segment_round(),
// established(), flush_all()) settles lost verdicts by one policy,
// netlink/settle.h; each site's round count is a named constant.
//
// Bookkeeping: the records of held connections (nft_conn_table.h), the
// devices they use (nft_devices.h, with the real device directory), and
// the selection sets (below).
#include "providers/nft_flowtable.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/set.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <system_error>
#include <unordered_set>

#include "conn_check.h"
#include "log.h"
#include "netlink/ctnetlink.h"
#include "netlink/nft_socket.h"
#include "netlink/nft_txn.h"
#include "netlink/nl_error.h"
#include "netlink/settle.h"
#include "providers/nft_conn_table.h"
#include "providers/nft_devices.h"
#include "providers/nft_layout.h"
#include "providers/usage_store.h"
#include "sync.h"

namespace ctoffload {

using nft::SelKey;

Result<HwOffload> parse_hw_offload(std::string_view text) {
  if (text == "auto") return HwOffload::kAuto;
  if (text == "on") return HwOffload::kOn;
  if (text == "off") return HwOffload::kOff;
  // Boolean spellings ("true", "no", "1", ...) mean on and off.
  if (auto b = parse_bool(text)) return *b ? HwOffload::kOn : HwOffload::kOff;
  return Status::error(EINVAL, "hw_offload must be auto, on or off, not '" + std::string(text) + "'");
}

std::string_view hw_offload_name(HwOffload mode) {
  switch (mode) {
    case HwOffload::kAuto:
      return "auto";
    case HwOffload::kOn:
      return "on";
    case HwOffload::kOff:
      return "off";
  }
  return "?";
}

std::string_view adopt_mode_name(AdoptMode mode) { return mode == AdoptMode::kLazy ? "lazy" : "full"; }

Result<AdoptMode> parse_adopt_mode(std::string_view text) {
  if (text == "full") return AdoptMode::kFull;
  if (text == "lazy") return AdoptMode::kLazy;
  return Status::error(EINVAL, "adopt must be full or lazy, not '" + std::string(text) + "'");
}

using nft::ConnTable;
using nft::Device;
using nft::kNoDevice;
using nft::kRecNoCounters;
using nft::kRecSeen;
using nft::Record;

namespace {

long long realtime_ms() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<long long>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::optional<size_t> read_conntrack_count() {
  std::ifstream f("/proc/sys/net/netfilter/nf_conntrack_count");
  size_t n = 0;
  if (f >> n) return n;
  return std::nullopt;
}

// Conntrack entries a batch of deletes failed to delete that are logged one
// by one; the rest are counted in one line.
constexpr size_t kMaxLoggedCtFailures = 8;

struct SetInfo {
  bool exists = false;  // Set and rule are in the kernel.
  size_t count = 0;     // Held connections in it.
};

// What a segment's ADD needs.
struct AddPlan {
  size_t op = 0;
  const Conn* conn = nullptr;
  uint16_t iif = kNoDevice;
  uint16_t riif = kNoDevice;
  SelKey key;
  bool failed = false;
};

// Identifies an element across sets: the set's name and the element key.
std::string elem_id(const SelKey& key, const Conn& c) {
  uint8_t buf[64];
  const size_t n = nft::build_key(c, buf);
  return nft::set_name(key) + '/' + std::string(reinterpret_cast<const char*>(buf), n);
}

struct DelPlan {
  size_t op = 0;
  Conn conn{};
  SelKey key;
  bool done = false;
};

}  // namespace

// ------------------------------------------------------------------------
// The provider
// ------------------------------------------------------------------------

struct NftFlowtableProvider::Impl {
  explicit Impl(NftFlowtableOptions o, NftBackend b)
      : opts(std::move(o)),
        backend(std::move(b)),
        devices(
            layout, opts.hw_offload, backend,
            [this] {
              mu.assert_held();  // Devices, guarded by mu, calls it from its methods.
              return now();
            },
            logger) {
    layout.table = opts.table;
    layout.flowtables = opts.flowtables;
  }

  NftFlowtableOptions opts;
  NftBackend backend CTO_GUARDED_BY(mu);
  nft::LayoutOptions layout;
  std::shared_ptr<spdlog::logger> logger = log::get("nft_flowtable");

  // Held by every public entry point for its whole run; every Impl
  // method below runs with it held.
  mutable Mutex mu;
  bool ready CTO_GUARDED_BY(mu) = false;
  // Mirrors of 'ready' and conns.size() for can_offload(), which the
  // registry calls for every op and which must not wait for a batch.
  std::atomic<bool> ready_seen{false};
  std::atomic<size_t> held{0};
  void publish() CTO_REQUIRES(mu) {
    ready_seen.store(ready, std::memory_order_relaxed);
    held.store(conns.size(), std::memory_order_relaxed);
  }
  ConnTable conns CTO_GUARDED_BY(mu);
  nft::Devices devices CTO_GUARDED_BY(mu);
  std::map<SelKey, SetInfo> sets CTO_GUARDED_BY(mu);
  // Readings shared with the other processes of this table (usage_store.h);
  // empty when opts.usage_dir is "" or the store could not be opened.
  std::optional<UsageStore> usage CTO_GUARDED_BY(mu);
  std::string usage_failure CTO_GUARDED_BY(mu);  // The last store error logged (logged once).
  uint64_t table_handle CTO_GUARDED_BY(mu) = 0;
  // Every connection of the table is in 'conns' (false after a lazy
  // adoption, until ensure_complete()).
  bool complete CTO_GUARDED_BY(mu) = true;
  long long last_verify CTO_GUARDED_BY(mu) = 0;
  long long last_stats CTO_GUARDED_BY(mu) = 0;  // When read_stats() last read the counters.
  bool verifying CTO_GUARDED_BY(mu) = false;

  // ---- Setup ----
  int init() CTO_EXCLUDES(mu);  // Takes it.
  // Why the last init() failed (init_failure()), "" after a success.
  std::string failure CTO_GUARDED_BY(mu);
  // Records and logs an init() failure: 'err' and a sentence saying why.
  int fail(int err, std::string why) CTO_REQUIRES(mu) {
    logger->warn("nft_flowtable unavailable: {}", why);
    failure = std::move(why);
    return err;
  }
  Status open_backend() CTO_REQUIRES(mu);
  Status setup_table() CTO_REQUIRES(mu);
  Status create_baseline() CTO_REQUIRES(mu);
  Status adopt(const nft::LayoutState& st) CTO_REQUIRES(mu);
  // Reads every element of every set (layout 1 sets with their keys).
  Status adopt_elements(const nft::LayoutState& st, const std::set<SelKey>& legacy) CTO_REQUIRES(mu);
  // A record for connection 'conn' found in set 'key' with comment 'note'.
  size_t insert_adopted(const SelKey& key, const Conn& conn, const nft::ElemNote& note) CTO_REQUIRES(mu);
  // Moves a layout 1 table (adopted whole) to layout 2.
  Status migrate(const std::set<SelKey>& legacy, const std::vector<uint64_t>& legacy_rules) CTO_REQUIRES(mu);
  // The record of 'c' if we hold it: in memory, or (lazy adoption) found in
  // the kernel now and adopted.  ConnTable::npos when not held.  The set
  // 'kernel_checks' (if any) is not looked up: an add to it with
  // NLM_F_EXCL gets the kernel's EEXIST when the element is there.
  size_t find_held(const Conn& c, const SelKey* kernel_checks = nullptr) CTO_REQUIRES(mu);
  // Reads every element (once) when the adoption was lazy.
  Status ensure_complete() CTO_REQUIRES(mu);
  // Drops the usage store's readings of connections not held (with the
  // whole table known).
  void prune_usage() CTO_REQUIRES(mu);
  void add_baseline_objects(netlink::NftTxn& txn) CTO_REQUIRES(mu);
  // Both selection rules of set 'key' (original and reply direction).
  void add_rules(netlink::NftTxn& txn, const SelKey& key) {
    for (nft::RuleDir dir : {nft::RuleDir::kOriginal, nft::RuleDir::kReply}) {
      txn.add_rule(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, nft::build_rule(layout, key, dir));
    }
  }

  // ---- Operations ----
  void process(std::span<Op> ops) CTO_REQUIRES(mu);
  // A segment (consecutive adds and deletes of distinct connections, ops
  // 'idx'): segment_round() once per round of kSegmentSettle, each on the
  // ops the one before gave back to send again.
  void run_segment(std::span<Op> ops, const std::vector<size_t>& idx) CTO_REQUIRES(mu);
  // One send of ops 'idx': plan (devices resolved, new ones joined), one
  // element transaction, each op's verdict settled, memory updated.
  // Returns the ops to send again in the next round (an ENOENT restore, or
  // what a read back found not applied); empty in the last round.
  std::vector<size_t> segment_round(std::span<Op> ops, const std::vector<size_t>& idx,
                                    const netlink::Settle::Round& round) CTO_REQUIRES(mu);
  // How many times the commit, read back, resend policy (settle.h) sends
  // the same ops at each site, and why the counts differ:
  //   segment      the first send, then a resend after an ENOENT restore or
  //                of elements a read back found missing, and one more of
  //                elements whose resend lost its verdict too ("at most
  //                twice", 8508627).
  //   devices      nft::Devices::kJoinSettle (nft_devices.h).
  //   established  the first send and one resend: a resend that moves the
  //                element to another set meets ENOENT from its delete,
  //                which is then checked against the kernel's copy.
  //   flush        one send: a refused or lost flush is read back (the
  //                table's handle) and reported, never sent again - the
  //                caller may flush again.
  static constexpr netlink::Settle kSegmentSettle{3};
  static constexpr netlink::Settle kEstablishedSettle{2};
  static constexpr netlink::Settle kFlushSettle{1};
  // The elements of selection sets 'keys' as the kernel has them: element
  // id (elem_id) -> the comment's note, normalised by format_note.
  Result<std::map<std::string, std::string>> read_back(const std::set<SelKey>& keys) CTO_REQUIRES(mu);
  void established(const Ctx& ctx) CTO_REQUIRES(mu);
  void flush_all() CTO_REQUIRES(mu);
  long long update(const Ctx& ctx) CTO_REQUIRES(mu);

  // ---- Devices (nft_devices.h) ----
  // Devices of 'added' that joined for ops the kernel then refused leave
  // again; when that fails, the table check reads what the kernel lists.
  void rollback_devices(const std::vector<uint16_t>& added) CTO_REQUIRES(mu);
  // Applies the link events queued since the last call; every operation
  // starts with it, so no direct lookup is ever older than an event.
  void sync_links() CTO_REQUIRES(mu) { devices.poll_events(); }

  // ---- Consistency ----
  void maybe_verify(bool force) CTO_REQUIRES(mu);
  Status verify_and_restore(bool deep) CTO_REQUIRES(mu);
  // Puts flowtable 'k''s flags right in 'txn' when the kernel's copy in
  // 'st' lost them; returns the repairs made (0 or 1).  Rules it has to
  // delete are taken out of 'have_rules' so they are added back.
  size_t repair_flowtable_flags(netlink::NftTxn& txn, const nft::LayoutState& st, FtMode k,
                                std::set<std::string>& have_rules) CTO_REQUIRES(mu);
  nft::ElemNote note_of(const Record& r) const CTO_REQUIRES(mu);
  nft::ElemNote note_of(const Conn& c, uint16_t iif, uint16_t riif) const CTO_REQUIRES(mu);

  // ---- Counters ----
  // Reads the held connections' conntrack counters (the kernel's word:
  // stats) when the last reading is older than refresh_ms, or 'force'.
  void read_stats(bool force) CTO_REQUIRES(mu);
  // Readings of held connections' counters are taken first (a conntrack
  // dump, or gets) and applied after, so that the usage store's lock is not
  // held while the kernel answers.
  struct Reading {
    size_t record = 0;      // Index into 'conns'.
    bool counters = false;  // The entry has accounting.
    uint32_t ct_id = 0;
    uint64_t packets = 0;  // Both directions.
  };
  static Reading reading_of(size_t record, const netlink::CtEntry& e) {
    Reading rd{record, e.has_counters(), e.id, 0};
    if (rd.counters) rd.packets = e.orig_counters->packets + e.reply_counters->packets;
    return rd;
  }
  // Applies 'readings' taken at 'now' (ms): a record's last used becomes
  // the time of the first reading that saw its counters move - a reading of
  // this process or, through the usage store, of any process of this table.
  void observe(std::span<const Reading> readings, long long now) CTO_REQUIRES(mu);
  void observe(Record& r, const Reading& rd, long long now, UsageStore::Session* s) CTO_REQUIRES(mu);
  // The usage store's lock for a series of readings; nullopt when there is
  // no store or its lock cannot be had (then readings stay in memory).
  std::optional<UsageStore::Session> usage_session() CTO_REQUIRES(mu);
  void open_usage_store() CTO_REQUIRES(mu);
  NftConnInfo info_of(const Record& r, const std::optional<netlink::CtEntry>& e) const CTO_REQUIRES(mu);

  long long now() const CTO_REQUIRES(mu) { return backend.clock ? backend.clock() : realtime_ms(); }
  SelKey key_of(const Conn& c, FtMode k) const { return SelKey{c.family, c.zone, k}; }
  SelKey key_of(const Record& r) const { return key_of(r.conn, r.ft); }
};

// ---- Probe ----

namespace {

// The probe's sends: the first with `flags owner`, the second without it,
// which a kernel before 5.12 refuses (EOPNOTSUPP).  A lost verdict is not
// read back or resent: the transaction deletes its table whatever happened,
// and the lost verdict is the probe's answer.
constexpr netlink::Settle kProbeSettle{2};

NftProbe probe_with(netlink::Transport& t, bool want_flowtable) {
  NftProbe p;
  nft::LayoutOptions lo;
  lo.table = "ctoffload_probe_" + std::to_string(getpid());
  lo.table_flags = NFT_TABLE_F_OWNER;
  lo.comment = "ctoffload probe; deleted at once";
  for (const netlink::Settle::Round& round : kProbeSettle) {
    netlink::NftTxn txn(t);
    const auto t_op = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE | NLM_F_EXCL, nft::build_table(lo));
    std::optional<netlink::OpId> f_op;
    if (want_flowtable) {
      f_op = txn.add_flowtable(NFT_MSG_NEWFLOWTABLE, NLM_F_CREATE, nft::build_flowtable(lo, FtMode::kSw, {}),
                               "add flowtable (probe)");
    }
    // Deleted in the same transaction: nothing is left whatever happens.
    const auto d_op = txn.add_table(NFT_MSG_DELTABLE, 0, nft::build_table_ref(lo));
    (void)txn.commit();
    const Status& ts = txn.status(t_op);
    if (ts.err() == EOPNOTSUPP && lo.table_flags != 0 && round.more()) {
      lo.table_flags = 0;  // A kernel before 5.12 has no `flags owner`.
      continue;
    }
    if (!ts) {
      p.err = ts.err();
      p.privileges = ts.err() != EPERM && ts.err() != EACCES;
      p.reason = p.privileges ? "nf_tables refused a table: " + ts.to_string()
                              : "no privileges for nf_tables (CAP_NET_ADMIN is needed): " + ts.to_string();
      break;
    }
    p.privileges = true;
    if (f_op) {
      const Status& fs = txn.status(*f_op);
      if (!fs) {
        p.err = fs.err();
        p.reason = fs.err() == ENOENT
                       ? "this kernel has no nftables flowtables (creating one failed: " + fs.to_string() + ")"
                       : "cannot create a flowtable: " + fs.to_string();
        break;
      }
    }
    p.flowtable = want_flowtable;
    if (!txn.status(d_op)) {
      p.reason = "probe table could not be deleted (it goes with the socket): " + txn.status(d_op).to_string();
    } else {
      p.reason = want_flowtable ? "flowtables available" : "nf_tables available";
    }
    break;
  }
  return p;
}

}  // namespace

NftProbe NftFlowtableProvider::probe() {
  auto sock = netlink::NftSocket::open();
  if (!sock) {
    NftProbe p;
    p.err = sock.err();
    p.privileges = p.err != EPERM && p.err != EACCES;
    p.reason = "cannot open an nf_tables socket: " + sock.status().to_string();
    return p;
  }
  return probe_with(*sock, true);
}

// ---- Creation ----

Result<std::shared_ptr<NftFlowtableProvider>> NftFlowtableProvider::create(const ProviderOptions& options) {
  // The registry's configuration holds every option (its defaults come from
  // NftFlowtableOptions, through builtins.cc); the fallbacks here are the
  // same defaults, for callers that build ProviderOptions by hand.
  const NftFlowtableOptions d;
  NftFlowtableOptions o;
  o.table = options.get("table", d.table);
  auto hw = parse_hw_offload(options.get("hw_offload", hw_offload_name(d.hw_offload)));
  if (!hw) return hw.status();
  o.hw_offload = *hw;
  auto cap = NftFlowtableOptions::kCapacity.read(kName, options);
  if (!cap) return cap.status();
  o.capacity = *cap;
  auto refresh = NftFlowtableOptions::kRefreshMs.read(kName, options);
  if (!refresh) return refresh.status();
  o.refresh_ms = static_cast<uint32_t>(*refresh);
  o.usage_dir = options.get("usage_dir", d.usage_dir);
  auto adopt = parse_adopt_mode(options.get("adopt", adopt_mode_name(d.adopt)));
  if (!adopt) return adopt.status();
  o.adopt = *adopt;
  return create(o);
}

Result<std::shared_ptr<NftFlowtableProvider>> NftFlowtableProvider::create(const NftFlowtableOptions& options) {
  return create(options, NftBackend{});
}

Result<std::shared_ptr<NftFlowtableProvider>> NftFlowtableProvider::create(const NftFlowtableOptions& options,
                                                                           NftBackend backend) {
  if (!nft::valid_table_name(options.table)) {
    return Status::error(EINVAL, "nft_flowtable.table: '" + options.table +
                                     "' is not a valid nft table name (a letter, then letters, digits, '_' or "
                                     "'-', at most 31)");
  }
  if (Status s = NftFlowtableOptions::kCapacity.check(kName, options.capacity); !s) return s;
  if (Status s = NftFlowtableOptions::kRefreshMs.check(kName, options.refresh_ms); !s) return s;
  auto impl = std::make_unique<Impl>(options, std::move(backend));
  {
    MutexLock lock(impl->mu);
    if (Status s = impl->conns.init(options.capacity); !s) return s;
  }
  return std::shared_ptr<NftFlowtableProvider>(new NftFlowtableProvider(std::move(impl)));
}

NftFlowtableProvider::NftFlowtableProvider(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NftFlowtableProvider::~NftFlowtableProvider() = default;

size_t NftFlowtableProvider::bytes_per_connection() {
  // A record, plus the index: a power of two of 4-byte slots, at least two
  // and fewer than four per connection of capacity.
  return sizeof(Record) + 4 * sizeof(uint32_t);
}

const NftFlowtableOptions& NftFlowtableProvider::options() const { return impl_->opts; }

size_t NftFlowtableProvider::size() const {
  MutexLock lock(impl_->mu);
  return impl_->conns.size();
}

// ---- init ----

std::string NftFlowtableProvider::init_failure() const {
  MutexLock lock(impl_->mu);
  return impl_->failure;
}

int NftFlowtableProvider::init() {
  const int err = impl_->init();
  MutexLock lock(impl_->mu);
  impl_->publish();
  return err;
}

Status NftFlowtableProvider::Impl::open_backend() {
  if (!backend.nft) {
    auto s = netlink::NftSocket::open();
    if (!s) return s.status().with_context("open nf_tables socket");
    backend.nft = std::make_unique<netlink::NftSocket>(std::move(*s));
  }
  if (!backend.ct) {
    auto c = netlink::Ctnetlink::open();
    if (!c) return c.status().with_context("open ctnetlink socket");
    backend.ct = std::make_unique<netlink::Ctnetlink>(std::move(*c));
  }
  if (!backend.devices) {
    auto d = nft::open_device_directory();
    if (!d) return d.status().with_context("open rtnetlink sockets");
    backend.devices = std::move(*d);
  }
  if (backend.acct_path.empty()) backend.acct_path = std::string(netlink::kConntrackAcctPath);
  if (!backend.conntrack_count) backend.conntrack_count = read_conntrack_count;
  return {};
}

int NftFlowtableProvider::Impl::init() {
  MutexLock lock(mu);
  if (ready) return 0;
  const bool injected = backend.nft != nullptr;

  // Probe first, on a socket of its own when we open the real one: the
  // probe's `flags owner` table then goes with that socket at the latest.
  NftProbe p;
  if (injected) {
    p = probe_with(*backend.nft, opts.flowtables);
  } else {
    auto sock = netlink::NftSocket::open();
    if (!sock) {
      return fail(sock.err(), "cannot open an nf_tables socket: " + sock.status().to_string());
    }
    p = probe_with(*sock, opts.flowtables);
  }
  if (!p.privileges) {
    return fail(p.err ? p.err : EPERM, p.reason);
  }
  if (p.err != 0) {
    return fail(p.err, p.reason);
  }

  if (Status s = open_backend(); !s) return fail(s.err(), s.to_string());

  // Counters only exist for connections created while accounting is on.
  if (Status s = netlink::set_conntrack_accounting(true, backend.acct_path); !s) {
    auto on = netlink::conntrack_accounting(backend.acct_path);
    if (on && *on) {
      logger->debug("conntrack accounting is on (could not write it: {})", s.to_string());
    } else {
      logger->warn("conntrack accounting is off and cannot be switched on ({}); last used will be unknown",
                   s.to_string());
    }
  }

  if (Status s = setup_table(); !s) return fail(s.err(), s.to_string());
  open_usage_store();
  if (complete) prune_usage();
  failure.clear();
  ready = true;
  logger->info("nft_flowtable ready: table inet {} ({} connections adopted), hw_offload {}, capacity {}{}", opts.table,
               conns.size(), hw_offload_name(opts.hw_offload), opts.capacity,
               opts.flowtables ? "" : ", WITHOUT flowtables (test layout)");
  return 0;
}

// The selection sets every table has from the start: zone 0, software
// flowtable, one per family.
constexpr SelKey kBaselineSets[] = {{AF_INET, 0, FtMode::kSw}, {AF_INET6, 0, FtMode::kSw}};

void NftFlowtableProvider::Impl::add_baseline_objects(netlink::NftTxn& txn) {
  txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, nft::build_table(layout));
  txn.add_chain(NFT_MSG_NEWCHAIN, NLM_F_CREATE, nft::build_chain(layout));
  if (layout.flowtables) {
    txn.add_flowtable(NFT_MSG_NEWFLOWTABLE, NLM_F_CREATE, nft::build_flowtable(layout, FtMode::kSw, {}));
  }
  for (const SelKey& key : kBaselineSets) {
    txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE, nft::build_set(layout, key));
    add_rules(txn, key);
  }
}

Status NftFlowtableProvider::Impl::create_baseline() {
  netlink::NftTxn txn(*backend.nft);
  add_baseline_objects(txn);
  (void)txn.commit();
  Status failed;
  for (size_t i = 0; i < txn.size(); ++i) {
    if (!txn.status(i)) {
      failed = txn.status(i);
      break;
    }
  }
  if (!failed) {
    // Leave nothing half-built behind.
    netlink::NftTxn undo(*backend.nft);
    undo.add_table(NFT_MSG_DELTABLE, 0, nft::build_table_ref(layout));
    (void)undo.commit();
    return failed.with_context("create table inet " + opts.table);
  }
  sets.clear();
  for (const SelKey& key : kBaselineSets) sets[key].exists = true;
  auto t = nft::read_table(*backend.nft, opts.table);
  table_handle = t && t->exists ? t->handle : 0;
  last_verify = now();
  return {};
}

Status NftFlowtableProvider::Impl::setup_table() {
  auto st = nft::read_layout(*backend.nft, layout);
  if (!st) return st.status().with_context("read table inet " + opts.table);
  if (!st->table.exists) return create_baseline();
  if (!nft::is_ours(*st)) {
    return Status::error(EEXIST, "table inet " + opts.table +
                                     " exists and is not managed by ctoffload (its comment is '" + st->table.comment +
                                     "'); choose another nft_flowtable.table");
  }
  if (st->table.comment != nft::kTableComment) {
    logger->warn(
        "table inet {} has lost its comment (nft 1.0.6's JSON drops it: restored with `nft -j -f`?); adopting it "
        "because everything in it is ctoffload's",
        opts.table);
  }
  return adopt(*st);
}

Status NftFlowtableProvider::Impl::adopt(const nft::LayoutState& st) {
  table_handle = st.table.handle;
  // Devices, from the flowtables.
  for (const auto& ft : st.flowtables) {
    FtMode m;
    if (ft.name == nft::flowtable_name(FtMode::kSw)) {
      m = FtMode::kSw;
    } else if (ft.name == nft::flowtable_name(FtMode::kHw)) {
      m = FtMode::kHw;
    } else {
      continue;
    }
    for (const auto& name : ft.devices) devices.adopt(name, m, ft.name);
  }
  // Sets, and which layout their rules have.  A set with a layout 1 rule
  // (`ct original` tuple, comment = the set's name) holds layout 1 keys.
  std::set<SelKey> legacy;
  std::vector<uint64_t> legacy_rules;
  for (const auto& r : st.rules) {
    if (r.id && r.id->selector == nft::Selector::kLegacyCtOriginal) {
      legacy.insert(r.id->key);
      legacy_rules.push_back(r.handle);
    }
  }
  for (const auto& name : st.sets) {
    auto key = nft::parse_set_name(name);
    if (!key) continue;
    SetInfo& si = sets[*key];
    si.exists = std::any_of(st.rules.begin(), st.rules.end(), [&](const nft::RuleState& r) {
      return r.id && r.id->key == *key && r.id->selector == nft::Selector::kPacket;
    });
  }
  for (const SelKey& key : kBaselineSets) sets[key];  // Part of the baseline.
  // Connections: all of them now (full), or each when first asked about
  // (lazy: a one-shot command must not read a table of a million
  // connections to add one).  A layout 1 table is read whole, to migrate.
  complete = opts.adopt == AdoptMode::kFull || !legacy.empty();
  if (complete) {
    if (Status s = adopt_elements(st, legacy); !s) return s;
  }
  // Devices of adopted connections that are no longer in a flowtable, and
  // anything else missing, are put back now.
  for (size_t i = 0; i < devices.size(); ++i) devices.recheck(static_cast<uint16_t>(i));
  if (!legacy.empty()) {
    if (Status s = migrate(legacy, legacy_rules); !s) return s;
  }
  Status s = verify_and_restore(false);
  if (!s) return s;
  if (complete) {
    logger->info("adopted {} connections and {} devices from table inet {}", conns.size(), devices.size(), opts.table);
  } else {
    logger->info("adopted table inet {} ({} devices); connections are read as they are asked about", opts.table,
                 devices.size());
  }
  return {};
}

Status NftFlowtableProvider::Impl::adopt_elements(const nft::LayoutState& st, const std::set<SelKey>& legacy) {
  size_t bad = 0, beyond = 0;
  for (const auto& name : st.sets) {
    auto key = nft::parse_set_name(name);
    if (!key) continue;
    const nft::Selector sel = legacy.count(*key) ? nft::Selector::kLegacyCtOriginal : nft::Selector::kPacket;
    Status s = nft::read_elements(*backend.nft, layout, *key, [&](nftnl_set_elem* e) {
      mu.assert_held();  // Called back from within read_elements().
      auto d = nft::decode_element(*key, e, sel);
      if (!d) {
        ++bad;
        return;
      }
      if (conns.find(d->conn) != ConnTable::npos) return;
      if (conns.size() >= conns.capacity()) {
        ++beyond;
        return;
      }
      insert_adopted(*key, d->conn, d->note);
    });
    if (!s) return s.with_context("adopt connections of set " + name);
  }
  if (bad) logger->warn("ignored {} elements of table inet {} that do not decode", bad, opts.table);
  if (beyond != 0) {
    // Never trimmed: the connections are another process's as much as
    // ours (a daemon with a larger capacity, say), and a listing must not
    // delete what it lists.
    return Status::error(ENOSPC, "table inet " + opts.table + " holds " + std::to_string(conns.size() + beyond) +
                                     " connections, more than nft_flowtable.capacity " + std::to_string(opts.capacity) +
                                     "; raise it (nothing was removed)");
  }
  return {};
}

size_t NftFlowtableProvider::Impl::insert_adopted(const SelKey& key, const Conn& conn, const nft::ElemNote& note) {
  Record r{};
  r.conn = conn;
  r.iif = note.iif.empty() ? kNoDevice : devices.slot(note.iif);
  r.riif = note.reply_iif.empty() ? kNoDevice : devices.slot(note.reply_iif);
  r.ft = key.kind;
  const size_t i = conns.insert(r);
  devices.ref(r.iif, +1);
  devices.ref(r.riif, +1);
  ++sets[key].count;
  return i;
}

Status NftFlowtableProvider::Impl::migrate(const std::set<SelKey>& legacy, const std::vector<uint64_t>& legacy_rules) {
  // One transaction, so that a failure leaves layout 1 as it was: layout 1's
  // rules out, both layout 2 rules of each of its sets in, and the element
  // of every connection whose key changes (NAT: layout 1 keyed the original
  // destination, layout 2 keys the DNAT target) re-keyed.  The flowtables
  // are not touched, so offloaded flows stay offloaded; the old rule and the
  // new ones match the same packets, and the swap is atomic.
  netlink::NftTxn txn(*backend.nft);
  for (uint64_t h : legacy_rules) txn.add_rule(NFT_MSG_DELRULE, 0, nft::build_rule_ref(layout, h));
  for (const SelKey& key : legacy) add_rules(txn, key);
  size_t rekeyed = 0;
  std::map<SelKey, std::pair<netlink::SetPtr, netlink::SetPtr>> by_set;
  for (size_t i = 0; i < conns.size(); ++i) {
    const Record& r = conns.at(i);
    const SelKey key = key_of(r);
    if (legacy.count(key) == 0) continue;
    uint8_t a[44], b[44];
    const size_t n = nft::build_key(r.conn, a);
    (void)nft::build_legacy_key(r.conn, b);
    if (std::memcmp(a, b, n) == 0) continue;  // Without NAT the keys are the same bytes.
    auto& [del, add] = by_set[key];
    if (!del) del = nft::build_set_ref(layout, key);
    if (!add) add = nft::build_set_ref(layout, key);
    nftnl_set_elem_add(del.get(), nft::build_element(r.conn, {}, false, nft::Selector::kLegacyCtOriginal).release());
    nftnl_set_elem_add(add.get(), nft::build_element(r.conn, note_of(r)).release());
    ++rekeyed;
  }
  for (auto& [key, pair] : by_set) {
    txn.add_elements(NFT_MSG_DELSETELEM, 0, std::move(pair.first));
    txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, std::move(pair.second));
  }
  if (Status s = txn.commit(); !s) {
    return s.with_context("migrate table inet " + opts.table + " from layout 1 (ct original tuple) to layout 2");
  }
  for (const SelKey& key : legacy) sets[key].exists = true;
  logger->warn(
      "migrated table inet {} from layout 1 (ct original tuple, which nft cannot read back) to layout 2 (packet "
      "header fields): {} sets, {} NAT connections re-keyed, offloads kept",
      opts.table, legacy.size(), rekeyed);
  return {};
}

size_t NftFlowtableProvider::Impl::find_held(const Conn& c, const SelKey* kernel_checks) {
  const size_t i = conns.find(c);
  if (i != ConnTable::npos || complete || conns.size() >= conns.capacity()) return i;
  // Not known yet: ask the kernel, in each set the connection could be in
  // (its family and zone; software or hardware flowtable).
  for (FtMode kind : {FtMode::kSw, FtMode::kHw}) {
    const SelKey key = key_of(c, kind);
    if (kernel_checks != nullptr && key == *kernel_checks) continue;
    auto it = sets.find(key);
    if (it == sets.end() || !it->second.exists) continue;
    std::optional<nft::DecodedElem> found;
    Status s = nft::read_element(*backend.nft, layout, key, c, [&](nftnl_set_elem* e) {
      auto d = nft::decode_element(key, e);
      if (d) found = std::move(*d);
    });
    if (!s) {
      if (s.err() != ENOENT)
        logger->warn("looking up {} in set {}: {}", format_conn(c), nft::set_name(key), s.to_string());
      continue;
    }
    // The key matches; the connection is ours only if the comment agrees
    // on what NAT did (another connection can share the key).
    if (found && same_conn(found->conn, c)) return insert_adopted(key, found->conn, found->note);
  }
  return ConnTable::npos;
}

Status NftFlowtableProvider::Impl::ensure_complete() {
  if (complete) return {};
  auto st = nft::read_layout(*backend.nft, layout);
  if (!st) return st.status().with_context("read table inet " + opts.table);
  if (!st->table.exists) {
    complete = true;  // Nothing to read: the table is restored from memory.
    return {};
  }
  if (Status s = adopt_elements(*st, {}); !s) return s;
  complete = true;
  logger->info("read the whole table inet {}: {} connections", opts.table, conns.size());
  prune_usage();
  return {};
}

void NftFlowtableProvider::Impl::prune_usage() {
  auto session = usage_session();
  // Readings of connections that left the table without a conn_del of
  // ours (an admin's nft commands, a flush ruleset) are dropped once the
  // whole table is known; the store never grows past what is held.
  if (!session || session->size() <= conns.size()) return;
  std::vector<Conn> ours;
  ours.reserve(conns.size());
  for (size_t i = 0; i < conns.size(); ++i) ours.push_back(conns.at(i).conn);
  if (const size_t dropped = session->retain(ours); dropped != 0) {
    logger->debug("usage store: dropped the readings of {} connections no longer held", dropped);
  }
}

// ---- Devices ----

void NftFlowtableProvider::Impl::rollback_devices(const std::vector<uint16_t>& added) {
  if (Status s = devices.leave_unused(added); !s) {
    logger->warn("removing unused devices: {}", s.to_string());
    // Which devices the flowtables list now is the kernel's to say.
    (void)verify_and_restore(false);
  }
}

nft::ElemNote NftFlowtableProvider::Impl::note_of(const Conn& c, uint16_t iif, uint16_t riif) const {
  nft::ElemNote n;
  n.iif = devices.name_of(iif);
  n.reply_iif = devices.name_of(riif);
  (void)c;  // What NAT changed is written from the connection itself (format_note).
  return n;
}

nft::ElemNote NftFlowtableProvider::Impl::note_of(const Record& r) const { return note_of(r.conn, r.iif, r.riif); }

// ---- Consistency ----

void NftFlowtableProvider::Impl::maybe_verify(bool force) {
  if (verifying) return;
  const long long t = now();
  if (!force && t - last_verify < static_cast<long long>(opts.verify_ms)) return;
  last_verify = t;
  sync_links();  // Device state first: the check re-adds devices that came back.
  if (Status s = verify_and_restore(false); !s) logger->warn("checking table inet {}: {}", opts.table, s.to_string());
}

Status NftFlowtableProvider::Impl::verify_and_restore(bool deep) {
  verifying = true;
  struct Reset {
    bool& flag;
    ~Reset() { flag = false; }
  } reset{verifying};

  auto st = nft::read_layout(*backend.nft, layout);
  if (!st) return st.status();
  bool rebuilt = false;
  if (!st->table.exists || (table_handle != 0 && st->table.handle != table_handle)) {
    if (st->table.exists && !nft::is_ours(*st)) {
      return Status::error(EEXIST, "table inet " + opts.table + " was replaced by one not managed by ctoffload");
    }
    logger->warn("table inet {} {}; restoring it with {} connections", opts.table,
                 st->table.exists ? "was replaced" : "was deleted (nft flush ruleset?)", conns.size());
    rebuilt = true;
  }
  std::set<std::string> have_sets(st->sets.begin(), st->sets.end());
  std::set<std::string> have_rules;
  for (const auto& r : st->rules) have_rules.insert(r.comment);
  std::map<std::string, std::set<std::string>> ft_devs;  // Flowtable -> the devices it lists.
  for (const auto& f : st->flowtables) ft_devs[f.name] = std::set<std::string>(f.devices.begin(), f.devices.end());

  netlink::NftTxn txn(*backend.nft);
  size_t repairs = 0;
  if (!st->table.exists) {
    txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, nft::build_table(layout));
    ++repairs;
  }
  if (!st->chain) {
    txn.add_chain(NFT_MSG_NEWCHAIN, NLM_F_CREATE, nft::build_chain(layout));
    ++repairs;
  }
  // Flowtables and their devices.
  std::vector<std::pair<uint16_t, netlink::OpId>> dev_ops;
  if (layout.flowtables) {
    const bool need_hw = devices.any_hw();
    for (FtMode k : {FtMode::kSw, FtMode::kHw}) {
      auto listed = ft_devs.find(std::string(nft::flowtable_name(k)));
      const bool exists = listed != ft_devs.end();
      if (!exists && (k == FtMode::kSw || need_hw)) {
        txn.add_flowtable(NFT_MSG_NEWFLOWTABLE, NLM_F_CREATE, nft::build_flowtable(layout, k, {}));
        ++repairs;
      }
      if (exists) repairs += repair_flowtable_flags(txn, *st, k, have_rules);
      auto ops = devices.restore(txn, k, exists ? &listed->second : nullptr);
      repairs += ops.size();
      dev_ops.insert(dev_ops.end(), ops.begin(), ops.end());
    }
  }
  // Sets, rules, and the elements of sets that had to be made again.
  std::vector<std::pair<SelKey, netlink::OpId>> elem_ops;
  std::map<SelKey, netlink::OpId> set_ops;
  std::set<SelKey> refill;
  bool deep_refill = false;
  for (auto& [key, si] : sets) {
    const std::string name = nft::set_name(key);
    const bool set_there = have_sets.count(name) != 0;
    if (!set_there) {
      set_ops[key] = txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE, nft::build_set(layout, key));
      if (si.count > 0) refill.insert(key);
      ++repairs;
    } else if (deep && si.count > 0) {
      refill.insert(key);  // Re-add every element; present ones are kept.
      deep_refill = true;
    }
    for (nft::RuleDir dir : {nft::RuleDir::kOriginal, nft::RuleDir::kReply}) {
      if (have_rules.count(nft::rule_comment(key, dir)) != 0) continue;
      txn.add_rule(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, nft::build_rule(layout, key, dir));
      ++repairs;
    }
    si.exists = true;
  }
  if (!refill.empty()) {
    std::map<SelKey, netlink::SetPtr> by_set;
    for (size_t i = 0; i < conns.size(); ++i) {
      const Record& r = conns.at(i);
      const SelKey key = key_of(r);
      if (refill.count(key) == 0) continue;
      auto& s = by_set[key];
      if (!s) s = nft::build_set_ref(layout, key);
      nftnl_set_elem_add(s.get(), nft::build_element(r.conn, note_of(r)).release());
    }
    for (auto& [key, s] : by_set)
      elem_ops.emplace_back(key, txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, std::move(s)));
  }
  if (txn.size() == 0) return {};
  if (!rebuilt && repairs > 0) {
    logger->warn("table inet {}: {} objects were missing; restoring them", opts.table, repairs);
  }
  if (deep_refill) logger->info("resync: re-adding the elements of {} connections", conns.size());
  Status result = txn.commit();
  devices.restored(txn, dev_ops);
  for (const auto& [key, op] : set_ops) {
    if (!txn.status(op)) sets[key].exists = false;
  }
  if (!result) logger->warn("restoring table inet {}: {}", opts.table, result.to_string());
  auto t = nft::read_table(*backend.nft, opts.table);
  if (t && t->exists) table_handle = t->handle;
  return result;
}

size_t NftFlowtableProvider::Impl::repair_flowtable_flags(netlink::NftTxn& txn, const nft::LayoutState& st, FtMode k,
                                                          std::set<std::string>& have_rules) {
  const std::string fname(nft::flowtable_name(k));
  auto ft = std::find_if(st.flowtables.begin(), st.flowtables.end(),
                         [&](const nft::FlowtableState& f) { return f.name == fname; });
  if (ft == st.flowtables.end()) return 0;
  const uint32_t want = nft::flowtable_flags(k);
  if (ft->flags == want) return 0;
  // nft 1.0.6's JSON output has no flowtable flags, so `nft -j list ruleset`
  // restored with `nft -j -f` (or loaded over the table) leaves ft_sw
  // without `counter` - last used would stop moving while offloaded - and
  // ft_hw without `offload`.
  if ((ft->flags & NFT_FLOWTABLE_HW_OFFLOAD) == (want & NFT_FLOWTABLE_HW_OFFLOAD)) {
    // The kernel lets every flag but offload change: one update.
    logger->warn("flowtable {} lost its flags (has {:#x}, wants {:#x}: restored by `nft -j -f`?); setting them again",
                 fname, ft->flags, want);
    txn.add_flowtable(NFT_MSG_NEWFLOWTABLE, NLM_F_CREATE, nft::build_flowtable(layout, k, {}));
    return 1;
  }
  // The offload flag cannot change: the flowtable is made again, which
  // tears down its flows (they come back at their next packet).  Its rules
  // hold it, so they go first and come back after (the rule check below
  // re-adds what 'have_rules' lacks).
  logger->warn("flowtable {} lost its offload flag (restored by `nft -j -f`?); making it again with its devices",
               fname);
  for (const auto& r : st.rules) {
    if (!r.id || r.id->key.kind != k) continue;
    txn.add_rule(NFT_MSG_DELRULE, 0, nft::build_rule_ref(layout, r.handle));
    have_rules.erase(r.comment);
  }
  txn.add_flowtable(NFT_MSG_DELFLOWTABLE, 0, nft::build_flowtable_ref(layout, k));
  txn.add_flowtable(NFT_MSG_NEWFLOWTABLE, NLM_F_CREATE, nft::build_flowtable(layout, k, ft->devices));
  return 1;
}

// ---- Counters ----

void NftFlowtableProvider::Impl::observe(std::span<const Reading> readings, long long t) {
  if (readings.empty()) return;
  auto session = usage_session();
  for (const Reading& rd : readings) observe(conns.at(rd.record), rd, t, session ? &*session : nullptr);
}

void NftFlowtableProvider::Impl::observe(Record& r, const Reading& rd, long long t, UsageStore::Session* s) {
  if (!rd.counters) {
    r.flags |= kRecNoCounters;
    return;
  }
  r.flags &= static_cast<uint8_t>(~kRecNoCounters);
  if (s != nullptr) {
    // The store holds the previous reading, whoever took it; it answers as
    // below (0 for a first reading or a new conntrack entry).
    r.last_used = s->observe(r.conn, rd.ct_id, rd.packets, t);
    r.flags |= kRecSeen;
    r.packets = rd.packets;
    return;
  }
  if (!(r.flags & kRecSeen)) {
    // The first observation is the baseline: what came before it is not
    // a time we measured.
    r.flags |= kRecSeen;
    r.packets = rd.packets;
    return;
  }
  if (rd.packets != r.packets) {
    r.packets = rd.packets;
    r.last_used = t;
  }
}

void NftFlowtableProvider::Impl::open_usage_store() {
  if (opts.usage_dir.empty()) return;
  UsageStoreOptions uo;
  uo.dir = opts.usage_dir;
  uo.table = opts.table;
  auto st = UsageStore::open(uo);
  if (!st) {
    logger->warn("last used is kept in this process only: {}", st.status().to_string());
    return;
  }
  usage.emplace(std::move(*st));
  logger->debug("last-used readings shared through {}", usage->path());
}

std::optional<UsageStore::Session> NftFlowtableProvider::Impl::usage_session() {
  if (!usage) return std::nullopt;
  auto s = usage->lock();
  if (!s) {
    if (s.message() != usage_failure) {
      usage_failure = s.message();
      logger->warn("usage store: {}; this reading stays in this process", s.status().to_string());
    }
    return std::nullopt;
  }
  return std::move(*s);
}

void NftFlowtableProvider::Impl::read_stats(bool force) {
  const long long t = now();
  if (!force && last_stats != 0 && t - last_stats < static_cast<long long>(opts.refresh_ms)) return;
  last_stats = t;
  const size_t n = conns.size();
  if (n == 0) return;
  const std::optional<size_t> total = backend.conntrack_count ? backend.conntrack_count() : std::nullopt;
  // A get costs about what a dump spends on a few dozen entries: per-entry
  // gets win only when ours are few among many.
  std::vector<Reading> readings;
  if (total && n * 32 < *total) {
    for (size_t i = 0; i < conns.size(); ++i) {
      auto e = backend.ct->get(conns.at(i).conn);
      if (e) readings.push_back(reading_of(i, *e));
    }
    observe(readings, t);
    return;
  }
  netlink::CtFilter filter;
  uint8_t family = conns.at(0).conn.family;
  std::optional<uint16_t> zone = conns.at(0).conn.zone;
  for (size_t i = 1; i < n && (family || zone); ++i) {
    const Conn& c = conns.at(i).conn;
    if (c.family != family) family = 0;
    if (zone && c.zone != *zone) zone.reset();
  }
  filter.family = family;
  filter.zone = zone;
  auto r = backend.ct->dump(
      filter,
      [&](const netlink::CtEntry& e) {
        mu.assert_held();  // Called back from within dump().
        const size_t i = conns.find(e.conn.family, e.conn.proto, e.conn.zone, e.conn.orig);
        if (i != ConnTable::npos) readings.push_back(reading_of(i, e));
      },
      [&]() { readings.clear(); });  // The dump started over.
  if (!r) logger->warn("conntrack dump for counters: {}", r.status().to_string());
  observe(readings, t);
}

NftConnInfo NftFlowtableProvider::Impl::info_of(const Record& r, const std::optional<netlink::CtEntry>& e) const {
  NftConnInfo info;
  info.conn = r.conn;
  info.flowtable = r.ft;
  info.iif = devices.name_of(r.iif);
  info.reply_iif = devices.name_of(r.riif);
  info.last_used_ms = (r.flags & kRecNoCounters) ? 0 : r.last_used;
  if (e) {
    info.in_conntrack = true;
    info.offloaded = (e->status & netlink::ct_status::kOffload) != 0;
    info.hw_offloaded = (e->status & netlink::ct_status::kHwOffload) != 0;
    info.mode = info.hw_offloaded ? FtMode::kHw : info.offloaded ? FtMode::kSw : FtMode::kNone;
    info.has_counters = e->has_counters();
    if (info.has_counters) {
      info.packets = e->orig_counters->packets + e->reply_counters->packets;
      info.bytes = e->orig_counters->bytes + e->reply_counters->bytes;
    }
  }
  return info;
}

// ---- Operations ----

void NftFlowtableProvider::Impl::process(std::span<Op> ops) {
  sync_links();
  maybe_verify(false);
  devices.rejoin_present();

  size_t i = 0;
  while (i < ops.size()) {
    Op& op = ops[i];
    if (op.type == CT_OFFLOAD_OP_ADD || op.type == CT_OFFLOAD_OP_DEL) {
      // A segment: consecutive adds and deletes of distinct connections,
      // which can share one transaction without ordering questions.
      std::vector<size_t> seg;
      std::unordered_set<uint64_t> keys;
      while (i < ops.size() && (ops[i].type == CT_OFFLOAD_OP_ADD || ops[i].type == CT_OFFLOAD_OP_DEL)) {
        const Conn* c = ops[i].ctx.conn;
        const uint64_t h = c ? hash_tuple(c->family, c->proto, c->zone, c->orig) : 0;
        if (c && !keys.insert(h).second) break;
        seg.push_back(i);
        ++i;
      }
      run_segment(ops, seg);
      continue;
    }
    op.error = 0;
    switch (op.type) {
      case CT_OFFLOAD_OP_UPD:
        op.last_used = op.ctx.conn ? update(op.ctx) : 0;
        break;
      case CT_OFFLOAD_OP_EST:
        if (op.ctx.conn) established(op.ctx);
        break;
      case CT_OFFLOAD_OP_FLUSH:
        flush_all();
        break;
      case CT_OFFLOAD_OP_POLICY:
        break;
      default:
        op.error = EINVAL;
        break;
    }
    ++i;
  }
}

void NftFlowtableProvider::Impl::run_segment(std::span<Op> ops, const std::vector<size_t>& idx) {
  std::vector<size_t> pending = idx;
  for (const netlink::Settle::Round& round : kSegmentSettle) {
    std::vector<size_t> again = segment_round(ops, pending, round);
    if (again.empty()) break;
    std::sort(again.begin(), again.end());
    for (size_t k : again) ops[k].error = 0;
    pending = std::move(again);
  }
}

std::vector<size_t> NftFlowtableProvider::Impl::segment_round(std::span<Op> ops, const std::vector<size_t>& idx,
                                                              const netlink::Settle::Round& round) {
  std::vector<AddPlan> adds;
  std::vector<DelPlan> dels;
  size_t pending = 0;
  for (size_t k : idx) {
    Op& op = ops[k];
    op.error = 0;
    const Conn* c = op.ctx.conn;
    if (op.type == CT_OFFLOAD_OP_DEL) {
      if (c == nullptr) continue;
      const size_t r = find_held(*c);
      if (r == ConnTable::npos || !same_conn(conns.at(r).conn, *c)) continue;  // Not ours: ignored.
      DelPlan d;
      d.op = k;
      d.conn = conns.at(r).conn;
      d.key = key_of(conns.at(r));
      dels.push_back(d);
      continue;
    }
    if (c == nullptr) {
      op.error = EINVAL;
      continue;
    }
    if (Status s = validate(*c); !s) {
      logger->debug("conn_add refused: {}", s.to_string());
      op.error = s.err();
      continue;
    }
    // Held in memory.  A lazily adopted table is asked below, once the
    // set the connection goes to is known.
    if (conns.find(*c) != ConnTable::npos) {
      op.error = EEXIST;
      continue;
    }
    if (conns.size() + pending >= conns.capacity()) {
      op.error = ENOSPC;
      continue;
    }
    AddPlan a;
    a.op = k;
    a.conn = c;
    auto iif = devices.resolve(op.ctx.netdev_in, c->family, &c->orig.src, true);
    if (!iif) {
      logger->debug("conn_add {}: {}", format_conn(*c), iif.status().to_string());
      op.error = iif.err();
      continue;
    }
    a.iif = *iif;
    auto riif = devices.resolve(nullptr, c->family, &c->reply.src, false);
    a.riif = riif ? *riif : kNoDevice;
    ++pending;
    adds.push_back(a);
  }

  // Devices that must join a flowtable first.
  std::vector<uint16_t> need;
  for (const auto& a : adds) {
    for (uint16_t d : {a.iif, a.riif}) {
      if (d != kNoDevice && !devices.at(d).in_kernel && std::find(need.begin(), need.end(), d) == need.end()) {
        need.push_back(d);
      }
    }
  }
  std::vector<uint16_t> added;
  if (!need.empty()) {
    auto res = devices.join(need);
    for (auto& a : adds) {
      for (uint16_t* d : {&a.iif, &a.riif}) {
        if (*d == kNoDevice) continue;
        auto it = res.find(*d);
        if (it == res.end()) continue;
        if (it->second.ok()) continue;
        if (d == &a.riif) {
          *d = kNoDevice;  // The reply device is a guess; go on without it.
          continue;
        }
        ops[a.op].error = it->second.err() == ENOENT ? ENODEV : it->second.err();
        a.failed = true;
      }
    }
    for (const auto& [d, s] : res) {
      if (s.ok()) added.push_back(d);
    }
  }
  for (auto& a : adds) a.key = key_of(*a.conn, devices.mode_for(a.iif, a.riif));
  // A lazily adopted table may hold a connection this process has not
  // seen.  The set it goes to needs no lookup: the add carries
  // NLM_F_EXCL, and the kernel's EEXIST for it is read back below.  Only
  // the other flowtable's set (when it exists) is asked, so that adding a
  // new connection to a table of a million costs no round trip more than
  // to an empty one.
  if (!complete) {
    for (auto& a : adds) {
      if (a.failed || find_held(*a.conn, &a.key) == ConnTable::npos) continue;
      ops[a.op].error = EEXIST;
      a.failed = true;
    }
  }

  // One transaction: missing sets and rules, then the elements in op order
  // (consecutive ops on the same set and of the same kind share a message).
  netlink::NftTxn txn(*backend.nft);
  std::map<SelKey, netlink::OpId> set_ops;
  for (const auto& a : adds) {
    if (a.failed || sets[a.key].exists || set_ops.count(a.key)) continue;
    set_ops[a.key] = txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE, nft::build_set(layout, a.key));
    add_rules(txn, a.key);
  }
  struct ElemGroup {
    netlink::OpId op = 0;
    bool add = false;
    std::vector<size_t> plans;  // indexes into adds or dels
  };
  std::vector<ElemGroup> groups;
  {
    netlink::SetPtr cur;
    SelKey cur_key{};
    bool cur_add = false;
    std::vector<uint64_t> ids;
    std::vector<size_t> plans;
    auto close = [&]() {
      if (!cur) return;
      ElemGroup g;
      g.add = cur_add;
      g.plans = plans;
      g.op = txn.add_elements(cur_add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM,
                              cur_add ? NLM_F_CREATE | NLM_F_EXCL : 0, std::move(cur), ids);
      groups.push_back(std::move(g));
      cur.reset();
      ids.clear();
      plans.clear();
    };
    // Walk the segment in op order.
    size_t ai = 0, di = 0;
    for (size_t k : idx) {
      if (ops[k].type == CT_OFFLOAD_OP_ADD) {
        while (ai < adds.size() && adds[ai].op < k) ++ai;
        if (ai >= adds.size() || adds[ai].op != k || adds[ai].failed) continue;
        const AddPlan& a = adds[ai];
        if (!cur || !cur_add || !(cur_key == a.key)) {
          close();
          cur = nft::build_set_ref(layout, a.key);
          cur_key = a.key;
          cur_add = true;
        }
        nftnl_set_elem_add(cur.get(), nft::build_element(*a.conn, note_of(*a.conn, a.iif, a.riif)).release());
        ids.push_back(ids.size());
        plans.push_back(ai);
      } else {
        while (di < dels.size() && dels[di].op < k) ++di;
        if (di >= dels.size() || dels[di].op != k) continue;
        const DelPlan& d = dels[di];
        if (!cur || cur_add || !(cur_key == d.key)) {
          close();
          cur = nft::build_set_ref(layout, d.key);
          cur_key = d.key;
          cur_add = false;
        }
        nftnl_set_elem_add(cur.get(), nft::build_element(d.conn, {}, false).release());
        ids.push_back(ids.size());
        plans.push_back(di);
      }
    }
    close();
  }

  if (txn.size() > 0) (void)txn.commit();
  for (const auto& [key, op] : set_ops) sets[key].exists = txn.status(op).ok();

  // Per-element verdicts.  An element whose verdict was lost (the kernel
  // may or may not have applied it) is settled by reading the kernel back
  // below, never guessed.
  bool saw_enoent = false;   // an add met a missing set or table
  bool del_enoent = false;   // a delete met a missing element, set or table
  bool need_verify = false;  // a set or rule op's outcome is unknown
  std::vector<size_t> retry_ops;
  std::vector<size_t> unknown_adds;      // indexes into adds
  std::vector<size_t> unknown_dels;      // indexes into dels
  std::map<size_t, Status> unknown_why;  // op index -> the lost verdict
  for (const auto& [key, op] : set_ops) {
    if (txn.outcome_unknown(op)) need_verify = true;
  }
  for (const auto& g : groups) {
    std::vector<int> err(g.plans.size(), 0);
    std::vector<char> unknown(g.plans.size(), 0);
    const Status& gs = txn.status(g.op);
    if (!gs && txn.element_failures(g.op).empty()) {
      std::fill(err.begin(), err.end(), gs.err());  // Failed as a whole (never sent).
    }
    for (const auto& f : txn.element_failures(g.op)) {
      if (f.id < err.size()) {
        err[f.id] = f.status.err();
        unknown[f.id] = f.outcome_unknown ? 1 : 0;
        if (f.outcome_unknown) unknown_why[g.add ? adds[g.plans[f.id]].op : dels[g.plans[f.id]].op] = f.status;
      }
    }
    for (size_t n = 0; n < g.plans.size(); ++n) {
      if (g.add) {
        AddPlan& a = adds[g.plans[n]];
        if (err[n] == 0) continue;
        a.failed = true;
        if (unknown[n]) {
          unknown_adds.push_back(g.plans[n]);
          continue;
        }
        if (err[n] == ENOENT && round.first()) {
          // The set or table is gone (tampering): restore, then try again.
          saw_enoent = true;
          retry_ops.push_back(a.op);
          continue;
        }
        // EEXIST on a lazily adopted table: an element this process had not
        // read; adopted now when it is this connection's.
        if (err[n] == EEXIST && !complete) (void)find_held(*a.conn);
        ops[a.op].error = err[n];
      } else {
        DelPlan& d = dels[g.plans[n]];
        if (err[n] == 0) {
          d.done = true;
        } else if (err[n] == ENOENT) {
          // Gone already - the element, or its set or table (tampering,
          // which the check below repairs): as good as deleted.
          d.done = true;
          del_enoent = true;
        } else if (unknown[n]) {
          unknown_dels.push_back(g.plans[n]);
        } else {
          // The kernel refused (EPERM, ...): the element is still there, so
          // the connection stays held and the op says why.
          logger->warn("conn_del {}: {}", format_conn(d.conn), std::generic_category().message(err[n]));
          ops[d.op].error = err[n];
        }
      }
    }
  }

  // Lost verdicts: the sets and rules first (a NEWRULE is not idempotent,
  // so only what the kernel lacks is made again), then each element is
  // looked up in the kernel's copy of its set.
  if (need_verify || !unknown_adds.empty() || !unknown_dels.empty()) {
    logger->warn("nf_tables: {} additions and {} deletions have an unknown outcome; reading the kernel back",
                 unknown_adds.size(), unknown_dels.size());
    (void)verify_and_restore(false);
  }
  if (!unknown_adds.empty() || !unknown_dels.empty()) {
    std::set<SelKey> keys;
    for (size_t ai : unknown_adds) keys.insert(adds[ai].key);
    for (size_t di : unknown_dels) keys.insert(dels[di].key);
    auto back = read_back(keys);
    for (size_t ai : unknown_adds) {
      AddPlan& a = adds[ai];
      if (!back) {
        ops[a.op].error = unknown_why[a.op].err();
        logger->warn("conn_add {}: {}; reading the kernel back failed too: {}", format_conn(*a.conn),
                     unknown_why[a.op].to_string(), back.status().to_string());
        continue;
      }
      auto it = back->find(elem_id(a.key, *a.conn));
      if (it != back->end() && it->second != nft::format_note(*a.conn, note_of(*a.conn, a.iif, a.riif))) {
        ops[a.op].error = EEXIST;  // An element for this connection that we did not make.
        continue;
      }
      switch (round.lost(it == back->end() ? netlink::ReadBack::kNotApplied : netlink::ReadBack::kApplied)) {
        case netlink::Fate::kApplied:
          a.failed = false;  // Applied: the element is ours.
          break;
        case netlink::Fate::kResend:  // Not applied: made again, with its own verdict.
          retry_ops.push_back(a.op);
          break;
        case netlink::Fate::kFailed:
          ops[a.op].error = unknown_why[a.op].err();
          break;
      }
    }
    for (size_t di : unknown_dels) {
      DelPlan& d = dels[di];
      const auto seen = !back                                      ? netlink::ReadBack::kFailed
                        : back->count(elem_id(d.key, d.conn)) == 0 ? netlink::ReadBack::kApplied
                                                                   : netlink::ReadBack::kNotApplied;
      switch (round.lost(seen)) {
        case netlink::Fate::kApplied:
          d.done = true;
          break;
        case netlink::Fate::kResend:  // Still there: deleted again.
          retry_ops.push_back(d.op);
          break;
        case netlink::Fate::kFailed:
          ops[d.op].error = unknown_why[d.op].err();
          break;
      }
    }
  }

  // Memory follows the kernel.
  for (const auto& a : adds) {
    if (a.failed) continue;
    Record r{};
    r.conn = *a.conn;
    r.iif = a.iif;
    r.riif = a.riif;
    r.ft = a.key.kind;
    conns.insert(r);
    devices.ref(a.iif, +1);
    devices.ref(a.riif, +1);
    ++sets[a.key].count;
  }
  std::vector<Conn> ended;
  for (const auto& d : dels) {
    if (!d.done) continue;
    const size_t r = conns.find(d.conn);
    if (r == ConnTable::npos) continue;
    const Record rec = conns.at(r);
    devices.ref(rec.iif, -1);
    devices.ref(rec.riif, -1);
    --sets[d.key].count;
    conns.erase(r);
    ended.push_back(d.conn);
  }
  // Ends the flowtable offload of the deleted connections now (deleting the
  // element does not) by deleting their conntrack entries, a window of
  // them per datagram.  An entry already gone is what we wanted.
  if (!ended.empty()) {
    if (auto session = usage_session()) {
      for (const Conn& c : ended) session->forget(c);
    }
    const std::vector<Status> rs = backend.ct->remove_many(ended);
    size_t failed = 0;
    for (size_t i = 0; i < rs.size(); ++i) {
      if (rs[i] || rs[i].err() == ENOENT) continue;
      if (++failed <= kMaxLoggedCtFailures) {
        logger->warn("conn_del {}: conntrack entry: {}", format_conn(ended[i]), rs[i].to_string());
      }
    }
    if (failed > kMaxLoggedCtFailures) {
      logger->warn("conn_del: {} more conntrack entries could not be deleted", failed - kMaxLoggedCtFailures);
    }
  }
  rollback_devices(added);

  if (saw_enoent || del_enoent) {
    if (saw_enoent) {
      logger->warn("table inet {} lost objects under us; restoring and retrying {} additions", opts.table,
                   retry_ops.size());
    }
    (void)verify_and_restore(false);
  }
  return retry_ops;
}

Result<std::map<std::string, std::string>> NftFlowtableProvider::Impl::read_back(const std::set<SelKey>& keys) {
  std::map<std::string, std::string> out;
  for (const SelKey& key : keys) {
    size_t bad = 0;
    Status s = nft::read_elements(*backend.nft, layout, key, [&](nftnl_set_elem* e) {
      auto d = nft::decode_element(key, e);
      if (!d) {
        ++bad;
        return;
      }
      out[elem_id(key, d->conn)] = d->has_note ? nft::format_note(d->conn, d->note) : std::string();
    });
    // A set that is not there holds nothing.
    if (!s && s.err() != ENOENT) return s.with_context("read back set " + nft::set_name(key));
    if (bad) logger->warn("read back set {}: {} elements do not decode", nft::set_name(key), bad);
  }
  return out;
}

void NftFlowtableProvider::Impl::established(const Ctx& ctx) {
  const size_t i = find_held(*ctx.conn);
  if (i == ConnTable::npos || !same_conn(conns.at(i).conn, *ctx.conn)) return;
  if (ctx.netdev_in == nullptr) return;
  auto dev = devices.resolve(ctx.netdev_in, ctx.conn->family, nullptr, true);
  if (!dev) {
    logger->debug("conn_established {}: {}", format_conn(*ctx.conn), dev.status().to_string());
    return;
  }
  Record r = conns.at(i);
  if (r.riif == *dev) return;
  std::vector<uint16_t> added;
  if (!devices.at(*dev).in_kernel) {
    auto res = devices.join({*dev});
    if (!res[*dev]) {
      logger->warn("conn_established {}: reply device {}: {}", format_conn(r.conn), devices.at(*dev).name,
                   res[*dev].to_string());
      return;
    }
    added.push_back(*dev);
  }
  const SelKey old_key = key_of(r);
  const SelKey new_key = key_of(r.conn, devices.mode_for(r.iif, *dev));
  // Delete and add in one transaction: the element carries the new reply
  // device in its comment (and may move to the other flowtable's set).
  // When the verdict is lost, the same transaction is sent once more: in
  // the same set it is idempotent, and when it moves to another set a
  // first commit makes the delete fail with ENOENT, which is then checked
  // against the kernel's copy.
  bool applied = false;
  for (const netlink::Settle::Round& round : kEstablishedSettle) {
    netlink::NftTxn txn(*backend.nft);
    std::optional<netlink::OpId> set_op;
    if (!sets[new_key].exists) {
      set_op = txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE, nft::build_set(layout, new_key));
      add_rules(txn, new_key);
    }
    netlink::SetPtr del = nft::build_set_ref(layout, old_key);
    nftnl_set_elem_add(del.get(), nft::build_element(r.conn, {}, false).release());
    const auto del_op = txn.add_elements(NFT_MSG_DELSETELEM, 0, std::move(del));
    netlink::SetPtr add = nft::build_set_ref(layout, new_key);
    nftnl_set_elem_add(add.get(), nft::build_element(r.conn, note_of(r.conn, r.iif, *dev)).release());
    const auto add_op = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, std::move(add));
    (void)txn.commit();
    if (set_op) sets[new_key].exists = txn.status(*set_op).ok();
    if (txn.status(add_op)) {
      applied = true;
      break;
    }
    const bool lost = txn.outcome_unknown(add_op) || (!round.first() && txn.status(del_op).err() == ENOENT);
    if (!lost) {
      logger->warn("conn_established {}: {}", format_conn(r.conn), txn.status(add_op).to_string());
      break;
    }
    if (set_op && txn.outcome_unknown(*set_op)) (void)verify_and_restore(false);
    // Read back: the element in the new set with the new note, and gone
    // from the old one.  When the kernel cannot be read, the transaction
    // is sent again as it is (see above: safe whatever happened).
    auto seen = netlink::ReadBack::kIdempotent;
    if (auto back = read_back({old_key, new_key})) {
      auto it = back->find(elem_id(new_key, r.conn));
      const std::string want = nft::format_note(r.conn, note_of(r.conn, r.iif, *dev));
      const bool there =
          it != back->end() && it->second == want && (old_key == new_key || !back->count(elem_id(old_key, r.conn)));
      seen = there ? netlink::ReadBack::kApplied : netlink::ReadBack::kNotApplied;
    }
    const netlink::Fate fate = round.lost(seen);
    applied = fate == netlink::Fate::kApplied;
    if (fate == netlink::Fate::kResend) {
      logger->warn("conn_established {}: {}; sending it again", format_conn(r.conn), txn.status(add_op).to_string());
    } else if (fate == netlink::Fate::kFailed) {
      logger->warn("conn_established {}: {}; not applied", format_conn(r.conn), txn.status(add_op).to_string());
    }
    if (fate != netlink::Fate::kResend) break;
  }
  if (!applied) {
    rollback_devices(added);
    return;
  }
  Record& rec = conns.at(i);
  devices.ref(rec.riif, -1);
  devices.ref(*dev, +1);
  --sets[old_key].count;
  ++sets[new_key].count;
  rec.riif = *dev;
  rec.ft = new_key.kind;
  logger->debug("conn_established {}: reply device {}", format_conn(rec.conn), devices.at(*dev).name);
}

void NftFlowtableProvider::Impl::flush_all() {
  // Deleting the table tears down every flow of its flowtables at once;
  // the baseline comes back in the same transaction.
  bool flushed = false;
  for (const netlink::Settle::Round& round : kFlushSettle) {
    netlink::NftTxn txn(*backend.nft);
    txn.add_table(NFT_MSG_DELTABLE, 0, nft::build_table_ref(layout));
    add_baseline_objects(txn);
    Status s = txn.commit();
    if (s) {
      flushed = true;
      break;
    }
    // Refused, or the verdict was lost: the table's handle tells whether
    // the old table is still there.  Memory follows the kernel.
    auto t = nft::read_table(*backend.nft, opts.table);
    const auto seen = !t                                         ? netlink::ReadBack::kFailed
                      : (t->exists && t->handle == table_handle) ? netlink::ReadBack::kNotApplied
                                                                 : netlink::ReadBack::kApplied;
    flushed = round.lost(seen) == netlink::Fate::kApplied;
    if (!flushed) {
      logger->error("flush: {}; the connections stay offloaded{}", s.to_string(),
                    t ? "" : " (reading the table back failed too: " + t.status().to_string() + ")");
      break;
    }
    logger->warn("flush: {}; the old table is gone, so it was flushed", s.to_string());
    break;
  }
  if (!flushed) return;
  conns.clear();
  complete = true;  // The table is empty: nothing is left to read.
  if (auto session = usage_session()) session->clear();
  devices.clear();
  sets.clear();
  for (const SelKey& key : kBaselineSets) sets[key];
  // Puts back whatever of the baseline is missing (all of it when the
  // flush committed but a later op did not) and learns the new handle.
  table_handle = 0;
  if (Status s = verify_and_restore(false); !s) logger->warn("flush: {}", s.to_string());
  logger->info("flushed: table inet {} rebuilt empty", opts.table);
}

long long NftFlowtableProvider::Impl::update(const Ctx& ctx) {
  const size_t i = find_held(*ctx.conn);
  if (i == ConnTable::npos || !same_conn(conns.at(i).conn, *ctx.conn)) return 0;
  read_stats(false);
  const size_t j = conns.find(*ctx.conn);  // Still the same index; read_stats() does not move records.
  const Record& r = conns.at(j);
  return (r.flags & kRecNoCounters) ? 0 : r.last_used;
}

// ---- Provider callbacks ----

int NftFlowtableProvider::conn_add(const Ctx& ctx) {
  Op op{};
  op.type = CT_OFFLOAD_OP_ADD;
  op.ctx = ctx;
  MutexLock lock(impl_->mu);
  if (!impl_->ready) return ENOTCONN;
  impl_->process(std::span<Op>(&op, 1));
  impl_->publish();
  return op.error;
}

void NftFlowtableProvider::conn_del(const Ctx& ctx) {
  Op op{};
  op.type = CT_OFFLOAD_OP_DEL;
  op.ctx = ctx;
  MutexLock lock(impl_->mu);
  if (!impl_->ready) return;
  impl_->process(std::span<Op>(&op, 1));
  impl_->publish();
}

long long NftFlowtableProvider::conn_update(const Ctx& ctx) {
  MutexLock lock(impl_->mu);
  if (!impl_->ready || ctx.conn == nullptr) return 0;
  impl_->maybe_verify(false);
  return impl_->update(ctx);
}

void NftFlowtableProvider::conn_established(const Ctx& ctx) {
  MutexLock lock(impl_->mu);
  if (!impl_->ready || ctx.conn == nullptr) return;
  impl_->sync_links();
  impl_->established(ctx);
}

bool NftFlowtableProvider::can_offload(const Ctx& ctx) {
  // This class is a boundary of its own (used without a registry by tools
  // and tests), so it checks its input; a yes or no needs no message.
  if (ctx.conn == nullptr || !check::conn_valid(*ctx.conn)) return false;
  // Lock-free: a batch in progress on another thread does not hold this up.
  return impl_->ready_seen.load(std::memory_order_relaxed) &&
         impl_->held.load(std::memory_order_relaxed) < impl_->opts.capacity;
}

void NftFlowtableProvider::flush() {
  MutexLock lock(impl_->mu);
  if (!impl_->ready) return;
  impl_->flush_all();
  impl_->publish();
}

void NftFlowtableProvider::batch_submit(std::span<Op> ops) {
  MutexLock lock(impl_->mu);
  if (!impl_->ready) {
    for (auto& op : ops) op.error = op.type == CT_OFFLOAD_OP_ADD ? ENOTCONN : 0;
    return;
  }
  impl_->process(ops);
  impl_->publish();
}

bool NftFlowtableProvider::conn_query(const Ctx& ctx, ConnStatus* status) {
  if (ctx.conn == nullptr) return false;
  MutexLock lock(impl_->mu);
  if (!impl_->ready) return false;
  const size_t i = impl_->find_held(*ctx.conn);
  if (i == ConnTable::npos || !same_conn(impl_->conns.at(i).conn, *ctx.conn)) return false;
  Record& r = impl_->conns.at(i);
  auto e = impl_->backend.ct->get(r.conn);
  if (e) {
    const Impl::Reading rd = Impl::reading_of(i, *e);
    impl_->observe(std::span<const Impl::Reading>(&rd, 1), impl_->now());
  }
  const NftConnInfo info = impl_->info_of(r, e ? std::optional<netlink::CtEntry>(*e) : std::nullopt);
  if (status != nullptr) {
    *status = ConnStatus{};
    (void)std::snprintf(status->provider, sizeof(status->provider), "%s", kName);
    // Hardware only when the kernel says this connection is in hardware;
    // held otherwise (in the software flowtable, or until its next packet).
    status->mode = to_c(info.mode == FtMode::kHw ? FtMode::kHw : FtMode::kSw);
    status->packets = info.packets;
    status->bytes = info.bytes;
    status->last_used = info.last_used_ms;
  }
  return true;
}

std::vector<NftDeviceInfo> NftFlowtableProvider::devices() {
  MutexLock lock(impl_->mu);
  if (impl_->ready) impl_->sync_links();
  std::vector<NftDeviceInfo> out;
  for (const Device& d : impl_->devices.all()) {
    NftDeviceInfo i;
    i.name = d.name;
    i.ifindex = d.present ? d.ifindex : 0;
    i.present = d.present;
    i.mode = d.in_kernel ? d.mode : FtMode::kNone;
    i.connections = d.refs;
    i.note = d.note;
    out.push_back(std::move(i));
  }
  return out;
}

std::vector<NftConnInfo> NftFlowtableProvider::entries() {
  MutexLock lock(impl_->mu);
  std::vector<NftConnInfo> out;
  if (!impl_->ready) return out;
  // A reader is often the only long-lived caller (watch): it is the one that
  // notices an admin's `nft flush ruleset` and puts the table back.
  impl_->maybe_verify(false);
  if (Status s = impl_->ensure_complete(); !s) {
    // An error, not a warning: the listing that follows is incomplete.
    impl_->logger->error("listing connections: {}; the list below is incomplete", s.to_string());
  }
  auto& conns = impl_->conns;
  std::vector<std::optional<netlink::CtEntry>> found(conns.size());
  const long long t = impl_->now();
  std::vector<Impl::Reading> readings;
  auto r = impl_->backend.ct->dump(
      netlink::CtFilter{},
      [&](const netlink::CtEntry& e) {
        impl_->mu.assert_held();  // Called back from within dump().
        const size_t i = conns.find(e.conn.family, e.conn.proto, e.conn.zone, e.conn.orig);
        if (i == ConnTable::npos) return;
        readings.push_back(Impl::reading_of(i, e));
        found[i] = e;
      },
      [&]() {
        std::fill(found.begin(), found.end(), std::nullopt);
        readings.clear();
      });
  if (!r) impl_->logger->warn("conntrack dump: {}", r.status().to_string());
  impl_->observe(readings, t);
  out.reserve(conns.size());
  for (size_t i = 0; i < conns.size(); ++i) out.push_back(impl_->info_of(conns.at(i), found[i]));
  return out;
}

std::optional<NftConnInfo> NftFlowtableProvider::lookup(const Conn& conn) {
  MutexLock lock(impl_->mu);
  if (!impl_->ready) return std::nullopt;
  const size_t i = impl_->find_held(conn);
  if (i == ConnTable::npos || !same_conn(impl_->conns.at(i).conn, conn)) return std::nullopt;
  Record& r = impl_->conns.at(i);
  auto e = impl_->backend.ct->get(r.conn);
  if (e) {
    const Impl::Reading rd = Impl::reading_of(i, *e);
    impl_->observe(std::span<const Impl::Reading>(&rd, 1), impl_->now());
  }
  return impl_->info_of(r, e ? std::optional<netlink::CtEntry>(*e) : std::nullopt);
}

Status NftFlowtableProvider::resync() {
  MutexLock lock(impl_->mu);
  if (!impl_->ready) return Status::error(ENOTCONN, "nft_flowtable is not initialised");
  impl_->sync_links();
  if (Status s = impl_->ensure_complete(); !s) return s;
  impl_->last_verify = impl_->now();
  return impl_->verify_and_restore(true);
}

}  // namespace ctoffload
