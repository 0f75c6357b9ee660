// nft_devices.h - the devices the kernel provider uses (private to
// src/providers/nft_*.cc).
//
// A connection is forwarded by a flowtable only when both of its input
// devices are listed in that flowtable (`devices = { ... }` in `nft list
// ruleset`).  Devices tracks, for each device a held connection uses:
//   - its ifindex and whether it is present (link events, lookups);
//   - the flowtable it joined (ft_sw, or ft_hw when the device takes
//     hardware offload), decided at its first use and kept;
//   - whether the kernel lists it there now (a device that goes away is
//     dropped by the kernel, and joins again when it comes back);
//   - how many held connections use it (refs), so that a device joined for
//     an element the kernel then refused leaves again.
// It also finds the input device of a connection whose context does not
// name one: the route to the peer (route lookups are cached for
// kRouteCacheMs; link events clear the cache).
//
// Devices are numbered by their index here (uint16_t, kNoDevice for none),
// which per-connection records store instead of names.
//
// Not thread-safe: the provider keeps it behind its mutex
// (NftFlowtableProvider::Impl::mu), and the backend it is given is behind
// the same mutex.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ctoffload/conn.h"
#include "ctoffload/result.h"
#include "netlink/link.h"
#include "netlink/nft_txn.h"
#include "netlink/settle.h"
#include "providers/ft_mode.h"
#include "providers/nft_flowtable.h"
#include "providers/nft_layout.h"

namespace spdlog {
class logger;
}

namespace ctoffload::nft {

inline constexpr uint16_t kNoDevice = 0xffff;

// The real device directory: netlink/link.h for names, features and link
// events, netlink/route.h for route lookups (RTM_GETROUTE).
Result<std::unique_ptr<NftDeviceDirectory>> open_device_directory();

struct Device {
  std::string name;
  int ifindex = 0;
  bool present = false;
  // The flowtable the device belongs in (decided at first use), kNone
  // before that or without flowtables.
  FtMode mode = FtMode::kNone;
  // The kernel's flowtable lists it now.
  bool in_kernel = false;
  uint32_t refs = 0;  // Held connections whose iif or riif it is.
  std::string note;   // Why it is in the flowtable it is in (nft_flowtable.h: NftDeviceInfo).
};

class Devices {
 public:
  // The route cache: lifetime and size.
  static constexpr long long kRouteCacheMs = 1000;
  static constexpr size_t kRouteCacheMax = 65536;
  // How many times join() sends the same device (settle.h): the first
  // send, the software fallback of a device the hardware flowtable
  // refused, and a resend of a lost verdict.
  static constexpr netlink::Settle kJoinSettle{3};

  // 'backend' (its nft socket and device directory) and 'layout' are the
  // provider's and outlive this; the backend's members may be opened after
  // construction, before the first call that needs them.  'clock' gives
  // the time in ms (the route cache's).
  Devices(const nft::LayoutOptions& layout, HwOffload policy, NftBackend& backend, std::function<long long()> clock,
          std::shared_ptr<spdlog::logger> logger);

  size_t size() const { return devs_.size(); }
  Device& at(uint16_t i) { return devs_[i]; }
  const Device& at(uint16_t i) const { return devs_[i]; }
  const std::vector<Device>& all() const { return devs_; }
  // The device's name, "" for kNoDevice (an element's comment, a listing).
  std::string name_of(uint16_t i) const { return i == kNoDevice ? std::string() : devs_[i].name; }

  // The index of device 'name', added (not present, no mode) if new;
  // kNoDevice when the table is full.
  uint16_t slot(const std::string& name);
  // The device a connection's packets arrive on: 'nd' when it names one
  // (by name or ifindex), else the route to 'peer'.  Marks it present with
  // its current ifindex.  Errors name what was wrong (ENODEV: no such
  // device); a route that cannot be found is kNoDevice unless 'required'.
  Result<uint16_t> resolve(const Netdev* nd, uint8_t family, const Addr* peer, bool required);
  // The flowtable for a connection with these devices: hardware only
  // when both known devices are in it.
  FtMode mode_for(uint16_t iif, uint16_t riif) const;
  // Whether any device is in (or bound for) the hardware flowtable.
  bool any_hw() const;

  void ref(uint16_t i, int delta) {
    if (i == kNoDevice) return;
    devs_[i].refs = static_cast<uint32_t>(static_cast<int64_t>(devs_[i].refs) + delta);
  }

  // Joins devices 'wanted' to their flowtables, each in its own op of one
  // transaction per round: the flowtable it had, else the hardware one
  // when the policy and the device say so, falling back to software when
  // the kernel refuses hardware.  Returns each device's outcome.
  std::map<uint16_t, Status> join(const std::vector<uint16_t>& wanted);
  // Devices of 'joined' that no held connection uses leave their
  // flowtables again, in one transaction.  An error means the kernel's
  // flowtables may not list what memory says (the caller reads them back).
  Status leave_unused(const std::vector<uint16_t>& joined);
  // Devices in use that came back (present, not in the kernel) join again.
  void rejoin_present();

  // Applies the link events queued since the last call.
  void poll_events();
  // Looks device 'i' up again by name (after the kernel dropped it).
  void recheck(uint16_t i);
  // Device 'name' as listed in an existing flowtable of mode 'mode'.
  void adopt(const std::string& name, FtMode mode, const std::string& flowtable);
  // Puts into 'txn' the devices of flowtable 'mode' in use that its kernel
  // copy does not list ('listed': the names it lists, nullptr when the
  // flowtable is missing); updates in_kernel from 'listed'.  Returns the
  // ops, for restored().
  std::vector<std::pair<uint16_t, netlink::OpId>> restore(netlink::NftTxn& txn, FtMode mode,
                                                          const std::set<std::string>* listed);
  // Applies the verdicts of restore()'s ops after 'txn' committed.
  void restored(const netlink::NftTxn& txn, const std::vector<std::pair<uint16_t, netlink::OpId>>& ops);
  // Forgets every device (after a flush: the table and its flowtables
  // were rebuilt empty).
  void clear();

 private:
  void on_link_event(const netlink::LinkEvent& ev);
  FtMode wanted_mode(Device& d);
  // The route lookup, cached for kRouteCacheMs.
  Result<int> route_oif(uint8_t family, const Addr& addr);

  const nft::LayoutOptions& layout_;
  HwOffload policy_;
  NftBackend& backend_;
  std::function<long long()> clock_;
  std::shared_ptr<spdlog::logger> logger_;
  std::vector<Device> devs_;
  std::unordered_map<std::string, uint16_t> by_name_;
  // Address (family byte + address bytes) -> (ifindex, or the lookup's
  // errno negated; when it was looked up).
  std::unordered_map<std::string, std::pair<int, long long>> route_cache_;
};

}  // namespace ctoffload::nft
