// nft_flowtable.h - the kernel provider: nftables flowtable offload of the
// connections it is given.
//
// What it does with a connection (docs/LAYOUT.md has the kernel objects):
//   conn_add      puts the connection into the selection set of its
//                 family, zone and flowtable - keyed on the header fields
//                 its packets carry at the forward hook, which two rules
//                 read, one per direction - after making sure the input
//                 devices of both directions are in a flowtable; a rule
//                 then `flow add`s it at its next packet.  A device new to
//                 the flowtables joins in a transaction of its own (two
//                 when the kernel refuses hardware offload and it falls
//                 back), the elements of a whole batch go in one more;
//                 each is sent again when its answer was lost, and a
//                 device that joined for nothing leaves in one more.  With
//                 known devices and answers that arrive: one transaction.
//   conn_del      removes the element and deletes the conntrack entry over
//                 ctnetlink, which ends the flowtable offload at once; the
//                 connection goes on on the slow path (conntrack recreates
//                 its entry from the next packet).
//   conn_update   last used, from the conntrack counters (which the
//                 flowtable's `counter` flag keeps advancing while the flow
//                 is offloaded): the time of the first reading that saw
//                 them move - a reading of this process, or of any process
//                 of this table through the usage store (usage_store.h) -,
//                 0 until then or when the entry has no counters.
//                 All connections' counters are read together, at most once per
//                 'refresh_ms', by one conntrack dump (or one get per
//                 connection when that is cheaper).
//   conn_established  the reply direction's input device (ctx.netdev_in)
//                 joins the flowtable if the route lookup at conn_add
//                 guessed another one.
//   flush         deletes and recreates the table in one transaction: every
//                 flow of ours is torn down, nothing stale stays.
//   batch_submit  the adds and deletes of a batch are one element
//                 transaction; each op gets its own result from the
//                 kernel's per-element acks.
//
// Devices: the first connection using a device adds it to a flowtable.
// With hw_offload "auto" a device that advertises hw-tc-offload goes to the
// hardware flowtable (`flags offload`), with "on" every device is tried
// there, with "off" none is; a device the kernel refuses (EOPNOTSUPP, e.g.
// veth) goes to the software flowtable.  A connection uses the hardware
// flowtable only when both of its devices are there.  devices() reports
// each device's mode.  A device that disappears is dropped from the
// flowtable by the kernel and re-added when it comes back (link events,
// checked at every operation).  nft_devices.h keeps the device table, and
// nft_conn_table.h the per-connection records.
//
// Ownership and tampering: everything lives in one table, with a comment
// naming the owner.  A new process adopts the connections in an existing
// table of ours (the element comments keep what the key does not): all of
// them at init (adopt=full), or each when an operation first names it
// (adopt=lazy).  A table of layout 1 is migrated.  If the table or an
// object in it goes away (`nft flush ruleset`), the next operation or
// counter read notices (table handle, object count, rule list, or ENOENT from
// the kernel) and rebuilds it with every connection it knows.
//
// Errors (0 or a positive errno, ct-offload.h):
//   init          EPERM without CAP_NET_ADMIN, ENOENT when the kernel has no
//                 flowtables, EEXIST when a table of that name exists and is
//                 not ours, or the kernel's error; each logged with a
//                 sentence saying so.
//   conn_add      EINVAL (invalid connection), EPROTONOSUPPORT (not TCP/UDP;
//                 can_offload says no to those, so the registry falls back),
//                 ENODEV (ctx.netdev_in names no device), ENOSPC (capacity
//                 reached), EEXIST (held already, or a connection with the
//                 same original tuple and zone is), or the kernel's error.
//                 A failed conn_add leaves nothing in the kernel or memory.
//   conn_del      nothing to return; in a batch the DEL op carries the
//                 kernel's errno when it refused (EPERM, ...), and the
//                 connection then stays held: its element is still there.
//
// Faults at the netlink seam: when a verdict is lost (ENOBUFS, no ack, the
// socket failed after the send), the kernel is read back and each op gets
// what the kernel did; a socket closed under us (nf_tables, ctnetlink or
// rtnetlink) is reopened and a request it never sent is sent again;
// ENOENT from a deleted table restores it.  docs/RELIABILITY.md ("Fault
// injection") lists each fault and its test.
//
// Memory: one 104-byte record per connection of capacity (allocated lazily:
// pages are committed as connections arrive) plus 8 to 16 bytes of index,
// 120 bytes at most (bytes_per_connection()); devices and sets are shared.
//
// Threads: every callback may be called from many threads; one mutex
// serializes them (they all talk to the kernel over the same sockets).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ctoffload/config.h"
#include "ctoffload/provider.h"
#include "ctoffload/result.h"
#include "netlink/link.h"
#include "option_range.h"
#include "providers/ft_mode.h"

namespace ctoffload {

namespace netlink {
class Transport;
class Ctnetlink;
}  // namespace netlink

// The hw_offload option.
enum class HwOffload : uint8_t {
  kAuto,  // Ask for hardware offload on devices advertising hw-tc-offload.
  kOn,    // Ask on every device; the kernel decides.
  kOff,   // Never ask.
};

// "auto", "on", "off"; EINVAL for anything else.
Result<HwOffload> parse_hw_offload(std::string_view text);
std::string_view hw_offload_name(HwOffload mode);

// The adopt option: what a process reads of an existing table at init.
enum class AdoptMode : uint8_t {
  kFull,  // Every connection (one dump of each set) before init returns:
          // size(), capacity and a restore after `nft flush ruleset` cover
          // the whole table from the start.  The kernel's set dump is
          // quadratic in the set's size: a million connections took 150 s
          // on the build host, 380 s under emulation (BENCHMARKS.md row 8).
  kLazy,  // The default.  None; each connection is read from the kernel
          // (one GET) the first time an operation names it, and everything
          // is read when an operation needs everything (entries(),
          // resync()).  init and one-shot commands cost the same on any
          // table; capacity and restores count the connections known.
};
// "full", "lazy"; EINVAL for anything else.
Result<AdoptMode> parse_adopt_mode(std::string_view text);
std::string_view adopt_mode_name(AdoptMode mode);

struct NftFlowtableOptions {
  // Defaults and limits, written once: the members below, create()'s
  // checks and the configuration table (builtins.cc, from which
  // docs/ARCHITECTURE.md's option table is checked) all read these.
  static constexpr std::string_view kDefaultTable = "ctoffload";
  static constexpr UintOption kCapacity{.key = "capacity", .def = 262144, .min = 1, .max = uint64_t{1} << 24};
  static constexpr UintOption kRefreshMs{.key = "refresh_ms", .def = 250, .min = 0, .max = 60000};
  static constexpr size_t kDefaultCapacity = kCapacity.def;
  static constexpr size_t kMaxCapacity = kCapacity.max;
  static constexpr uint32_t kDefaultRefreshMs = kRefreshMs.def;
  static constexpr uint32_t kMaxRefreshMs = kRefreshMs.max;
  static constexpr std::string_view kDefaultUsageDir = "/run/ctoffload";

  std::string table{kDefaultTable};
  HwOffload hw_offload = HwOffload::kAuto;
  size_t capacity = kDefaultCapacity;
  // How old cached counters may be before conn_update reads them again
  // (the key keeps its name; "refresh" is otherwise the kernel's word, for
  // a flow seen again on the software path).
  uint32_t refresh_ms = kDefaultRefreshMs;
  // How often (at most) an operation checks that the table is intact.
  uint32_t verify_ms = 1000;
  AdoptMode adopt = AdoptMode::kLazy;
  // Where readings of conntrack counters are shared with the other
  // processes of this table, so that a new process knows when a connection
  // was last used (usage_store.h); "" keeps them in this process only.
  std::string usage_dir{kDefaultUsageDir};
  // False: build everything but the flowtables and `flow add` (the rules end
  // in a counter).  Only for tests on kernels without flowtables.
  bool flowtables = true;
};

// What probe() found out.
struct NftProbe {
  bool flowtable = false;   // The kernel can create flowtables.
  bool privileges = false;  // nf_tables accepted a transaction from us.
  int err = 0;              // 0, EPERM, ENOENT, or another errno.
  std::string reason;       // One sentence for humans.
};

// One device the provider uses.
struct NftDeviceInfo {
  std::string name;
  int ifindex = 0;              // 0 while the device is absent.
  FtMode mode = FtMode::kNone;  // The flowtable it is in (none while absent).
  bool present = false;         // The device exists now.
  size_t connections = 0;       // Held connections using it (either direction).
  std::string note;             // Why it got this mode ("hardware refused: ...").
};

// One held connection, for the CLI's `show`.
struct NftConnInfo {
  Conn conn{};
  // What the kernel made of it, per connection: kHw when conntrack says
  // HW_OFFLOAD, kSw when OFFLOAD without it, kNone while it is not (yet)
  // offloaded.  A connection selected for the hardware flowtable whose
  // device refused the flow is kSw: the kernel decides, not the device.
  FtMode mode = FtMode::kNone;
  FtMode flowtable = FtMode::kNone;  // The flowtable its selection points to.
  std::string iif;                   // Input device of the original direction.
  std::string reply_iif;             // Input device of the reply direction ("" unknown).
  bool in_conntrack = false;         // The kernel has a conntrack entry for it.
  bool offloaded = false;            // Conntrack status OFFLOAD.
  bool hw_offloaded = false;         // Conntrack status HW_OFFLOAD.
  bool has_counters = false;         // The entry has accounting (else counts unknown).
  uint64_t packets = 0;              // Both directions.
  uint64_t bytes = 0;
  long long last_used_ms = 0;  // 0 = not seen used / unknown.
};

// What the provider talks to.  Production code opens the real ones in
// init(); unit tests hand in fakes.
class NftDeviceDirectory {
 public:
  virtual ~NftDeviceDirectory() = default;
  // The ifindex of device 'name'; ENODEV when there is none.
  virtual Result<int> ifindex(std::string_view name) = 0;
  // The name of device 'ifindex'; ENODEV when there is none.
  virtual Result<std::string> name(int ifindex) = 0;
  // Whether 'name' has hw-tc-offload switched on.
  virtual Result<bool> hw_tc_offload(std::string_view name) = 0;
  // The ifindex of the device a packet to 'addr' leaves through, which is
  // the device packets from 'addr' arrive on.  ENETUNREACH/EHOSTUNREACH
  // when there is no route; EADDRNOTAVAIL when 'addr' is local.
  virtual Result<int> route_oif(uint8_t family, const Addr& addr) = 0;
  // Reports devices that came or went since the last call.
  virtual void poll_events(const std::function<void(const netlink::LinkEvent&)>& on_event) = 0;
};

struct NftBackend {
  std::unique_ptr<netlink::Transport> nft;
  std::unique_ptr<netlink::Ctnetlink> ct;
  std::unique_ptr<NftDeviceDirectory> devices;
  // The conntrack accounting sysctl (tests point it elsewhere).
  std::string acct_path;
  // Milliseconds since the Unix epoch (tests use a fake clock).
  std::function<long long()> clock;
  // Conntrack entries in the namespace, or nullopt when unknown.
  std::function<std::optional<size_t>()> conntrack_count;
};

class NftFlowtableProvider final : public Provider {
 public:
  static constexpr const char* kName = "nft_flowtable";
  static constexpr size_t kDefaultCapacity = NftFlowtableOptions::kDefaultCapacity;
  static constexpr size_t kMaxCapacity = NftFlowtableOptions::kMaxCapacity;

  // Whether this kernel and these privileges allow flowtable offload,
  // without registering anything: creates a temporary table (flags owner)
  // holding a flowtable and deletes it in the same transaction, so nothing
  // is left behind whatever happens.
  static NftProbe probe();

  // From config options: table, hw_offload, capacity, refresh_ms.  EINVAL
  // names a bad option.  Nothing touches the kernel before init().
  static Result<std::shared_ptr<NftFlowtableProvider>> create(const ProviderOptions& options);
  static Result<std::shared_ptr<NftFlowtableProvider>> create(const NftFlowtableOptions& options);
  // With 'backend' instead of the real kernel (unit tests).  Unset members
  // of 'backend' are opened for real in init().
  static Result<std::shared_ptr<NftFlowtableProvider>> create(const NftFlowtableOptions& options, NftBackend backend);

  ~NftFlowtableProvider() override;
  NftFlowtableProvider(const NftFlowtableProvider&) = delete;
  NftFlowtableProvider& operator=(const NftFlowtableProvider&) = delete;

  // ---- Provider ----
  std::string name() const override { return kName; }
  int init() override;
  // Why init() failed, in one sentence ("this kernel has no nftables
  // flowtables (...)"); "" when it did not.
  std::string init_failure() const override;
  int conn_add(const Ctx& ctx) override;
  void conn_del(const Ctx& ctx) override;
  long long conn_update(const Ctx& ctx) override;
  bool has_conn_established() const override { return true; }
  void conn_established(const Ctx& ctx) override;
  // True for a valid TCP or UDP connection while there is room; false
  // before a successful init().
  bool can_offload(const Ctx& ctx) override;
  void flush() override;
  bool has_batch() const override { return true; }
  void batch_submit(std::span<Op> ops) override;
  // Provider "nft_flowtable", mode hw/sw, packets/bytes of both directions
  // (read from conntrack now), last used.
  bool conn_query(const Ctx& ctx, ConnStatus* status) override;

  // ---- For the CLI and tests ----

  // Devices in use and the mode each got.
  std::vector<NftDeviceInfo> devices();
  // Every held connection with fresh conntrack state (one dump).
  std::vector<NftConnInfo> entries();
  // One held connection with fresh conntrack state; nullopt when not held.
  std::optional<NftConnInfo> lookup(const Conn& conn);
  // Connections held.
  size_t size() const;
  const NftFlowtableOptions& options() const;
  // Checks the kernel's copy of the table now and rebuilds what is missing.
  Status resync();
  // Bookkeeping bytes per connection of capacity, at most (record plus
  // index), independent of how many connections are held.
  static size_t bytes_per_connection();

 private:
  struct Impl;
  explicit NftFlowtableProvider(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctoffload
