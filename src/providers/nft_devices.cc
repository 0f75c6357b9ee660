// nft_devices.cc - the devices the kernel provider uses (nft_devices.h),
// and the real device directory behind them.
#include "providers/nft_devices.h"

#include <libnftnl/flowtable.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netlink.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "log.h"
#include "netlink/nl_error.h"
#include "netlink/reopen.h"
#include "netlink/route.h"

namespace ctoffload::nft {

namespace {

// ------------------------------------------------------------------------
// The real device directory
// ------------------------------------------------------------------------

class RealDevices final : public NftDeviceDirectory {
 public:
  static Result<std::unique_ptr<NftDeviceDirectory>> open() {
    auto d = std::unique_ptr<RealDevices>(new RealDevices());
    if (Status s = d->open_links(); !s) return s;
    if (Status s = d->open_routes(); !s) return s;
    // Without link events a returning device is still found by the checks
    // every operation makes, so a monitor that cannot open is not fatal.
    if (Status s = d->open_monitor(); !s) {
      log::get("nft_flowtable")->warn("no link events ({}); devices are re-checked at each operation", s.to_string());
    }
    return std::unique_ptr<NftDeviceDirectory>(std::move(d));
  }

  Result<int> ifindex(std::string_view name) override {
    return with_links([&](netlink::LinkClient& c) { return c.ifindex(name); });
  }
  Result<std::string> name(int ifindex) override {
    return with_links([&](netlink::LinkClient& c) { return c.name(ifindex); });
  }
  Result<bool> hw_tc_offload(std::string_view name) override {
    auto f = with_links([&](netlink::LinkClient& c) { return c.hw_tc_offload(name); });
    if (!f) {
      if (f.err() == EOPNOTSUPP) return false;
      return f.status();
    }
    return f->active;
  }
  Result<int> route_oif(uint8_t family, const Addr& addr) override {
    return netlink::reopen_once_and_resend(
        "rtnetlink (route lookups)",
        [&] { return routes_ ? routes_->oif(family, addr) : Result<int>(gone("route lookup")); },
        [&] { return open_routes(); });
  }
  void poll_events(const std::function<void(const netlink::LinkEvent&)>& on_event) override {
    if (!monitor_) return;
    auto r = monitor_->drain(on_event);
    if (r) return;
    if (netlink::socket_gone(r.err())) {
      // Events sent to the dead socket are lost; every operation checks
      // the devices it uses anyway, and the table check re-adds those that
      // came back.
      log::get("nft_flowtable")->warn("link event socket failed ({}); reopening it", r.status().to_string());
      if (Status s = open_monitor(); !s) log::get("nft_flowtable")->warn("no link events: {}", s.to_string());
      return;
    }
    log::get("nft_flowtable")->warn("reading link events: {}", r.status().to_string());
  }

 private:
  RealDevices() = default;

  static Status gone(std::string_view what) {
    return Status::error(EBADF, std::string(what) + ": no rtnetlink socket (reopening it failed)");
  }

  // Opens a new Client into 'slot', closing the old one first: opened
  // first, the new socket could get the number of a descriptor that was
  // closed under us, and closing the old one would close the new one.
  template <typename Client>
  static Status reopen(std::optional<Client>& slot) {
    slot.reset();
    auto c = Client::open();
    if (!c) return c.status();
    slot.emplace(std::move(*c));
    return {};
  }
  Status open_links() { return reopen(links_); }
  Status open_routes() { return reopen(routes_); }
  Status open_monitor() { return reopen(monitor_); }

  // Runs 'fn' on the link client; once more on a new one when its socket
  // was closed under us (a lookup is safe to repeat).
  template <typename Fn>
  auto with_links(Fn fn) -> decltype(fn(std::declval<netlink::LinkClient&>())) {
    using R = decltype(fn(std::declval<netlink::LinkClient&>()));
    return netlink::reopen_once_and_resend(
        "rtnetlink (link lookups)", [&] { return links_ ? fn(*links_) : R(gone("link lookup")); },
        [&] { return open_links(); });
  }

  std::optional<netlink::LinkClient> links_;
  std::optional<netlink::RouteClient> routes_;
  std::optional<netlink::LinkMonitor> monitor_;
};

}  // namespace

Result<std::unique_ptr<NftDeviceDirectory>> open_device_directory() { return RealDevices::open(); }

// ------------------------------------------------------------------------
// Devices
// ------------------------------------------------------------------------

Devices::Devices(const nft::LayoutOptions& layout, HwOffload policy, NftBackend& backend,
                 std::function<long long()> clock, std::shared_ptr<spdlog::logger> logger)
    : layout_(layout), policy_(policy), backend_(backend), clock_(std::move(clock)), logger_(std::move(logger)) {}

uint16_t Devices::slot(const std::string& name) {
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return it->second;
  if (devs_.size() >= kNoDevice) return kNoDevice;
  const auto i = static_cast<uint16_t>(devs_.size());
  Device d;
  d.name = name;
  devs_.push_back(std::move(d));
  by_name_.emplace(name, i);
  return i;
}

Result<int> Devices::route_oif(uint8_t family, const Addr& addr) {
  std::string key(1, static_cast<char>(family));
  key.append(reinterpret_cast<const char*>(addr.bytes), family == AF_INET ? 4 : 16);
  const long long t = clock_();
  auto it = route_cache_.find(key);
  if (it != route_cache_.end() && t - it->second.second < kRouteCacheMs) {
    // A negative entry holds the lookup's errno, negated.
    if (it->second.first > 0) return it->second.first;
    return Status::error(-it->second.first, "route lookup for " + format_address(family, addr) + " (cached)");
  }
  auto oif = backend_.devices->route_oif(family, addr);
  if (route_cache_.size() >= kRouteCacheMax) route_cache_.clear();
  route_cache_[key] = {oif ? *oif : -oif.err(), t};
  return oif;
}

Result<uint16_t> Devices::resolve(const Netdev* nd, uint8_t family, const Addr* peer, bool required) {
  std::string name;
  int ifindex = 0;
  if (nd != nullptr && (nd->name[0] != '\0' || nd->ifindex > 0)) {
    const std::string given(nd->name, strnlen(nd->name, sizeof(nd->name)));
    // A device in use and present has a current ifindex (link events and
    // the periodic check keep it so): no lookup per connection.
    if (!given.empty()) {
      auto known = by_name_.find(given);
      if (known != by_name_.end() && devs_[known->second].present && devs_[known->second].ifindex > 0) {
        return known->second;
      }
      auto idx = backend_.devices->ifindex(given);
      if (!idx) return Status::error(ENODEV, "input device '" + given + "': " + idx.message());
      name = given;
      ifindex = *idx;
    } else {
      for (size_t i = 0; i < devs_.size(); ++i) {
        if (devs_[i].present && devs_[i].ifindex == nd->ifindex) return static_cast<uint16_t>(i);
      }
      auto n = backend_.devices->name(nd->ifindex);
      if (!n) return Status::error(ENODEV, "input device ifindex " + std::to_string(nd->ifindex) + ": " + n.message());
      name = *n;
      ifindex = nd->ifindex;
    }
  } else if (peer != nullptr) {
    auto oif = route_oif(family, *peer);
    if (!oif) {
      if (required) return oif.status().with_context("no input device given");
      return kNoDevice;
    }
    for (size_t i = 0; i < devs_.size(); ++i) {
      if (devs_[i].present && devs_[i].ifindex == *oif) return static_cast<uint16_t>(i);
    }
    auto n = backend_.devices->name(*oif);
    if (!n) {
      if (required) return n.status();
      return kNoDevice;
    }
    name = *n;
    ifindex = *oif;
  } else {
    return Status::error(ENODEV, "no input device");
  }
  const uint16_t i = slot(name);
  if (i == kNoDevice) return Status::error(ENOSPC, "too many devices");
  Device& d = devs_[i];
  if (!d.present || d.ifindex != ifindex) {
    // New, or back (possibly with a new ifindex): the kernel dropped it
    // from the flowtable when it went away.
    if (d.ifindex != 0 && d.ifindex != ifindex) d.in_kernel = false;
    d.present = true;
    d.ifindex = ifindex;
  }
  return i;
}

FtMode Devices::wanted_mode(Device& d) {
  switch (policy_) {
    case HwOffload::kOff:
      d.note = "hw_offload=off";
      return FtMode::kSw;
    case HwOffload::kOn:
      return FtMode::kHw;
    case HwOffload::kAuto: {
      auto hw = backend_.devices->hw_tc_offload(d.name);
      if (hw && *hw) return FtMode::kHw;
      d.note = hw ? "device does not advertise hw-tc-offload" : "hw-tc-offload unknown: " + hw.message();
      return FtMode::kSw;
    }
  }
  return FtMode::kSw;
}

std::map<uint16_t, Status> Devices::join(const std::vector<uint16_t>& wanted) {
  std::map<uint16_t, Status> result;
  if (!layout_.flowtables) {
    for (uint16_t i : wanted) {
      devs_[i].in_kernel = true;  // Nothing to do without flowtables.
      if (devs_[i].mode == FtMode::kNone) devs_[i].mode = FtMode::kSw;
      result[i] = Status();
    }
    return result;
  }
  // First attempt: each device to the flowtable it wants (its earlier mode
  // if it had one), one op per device so each gets its own verdict.
  std::vector<std::pair<uint16_t, FtMode>> todo;
  for (uint16_t i : wanted) {
    Device& d = devs_[i];
    const FtMode k = d.mode == FtMode::kNone ? wanted_mode(d) : d.mode;
    todo.emplace_back(i, k);
  }
  for (const netlink::Settle::Round& round : kJoinSettle) {
    netlink::NftTxn txn(*backend_.nft);
    std::vector<netlink::OpId> ids;
    ids.reserve(todo.size());
    for (auto [i, k] : todo) {
      ids.push_back(
          txn.add_flowtable(NFT_MSG_NEWFLOWTABLE, NLM_F_CREATE, nft::build_flowtable(layout_, k, {devs_[i].name}),
                            "add device " + devs_[i].name + " to flowtable " + std::string(nft::flowtable_name(k))));
    }
    (void)txn.commit();
    std::vector<std::pair<uint16_t, FtMode>> again;
    for (size_t n = 0; n < todo.size(); ++n) {
      auto [i, k] = todo[n];
      Device& d = devs_[i];
      const Status& s = txn.status(ids[n]);
      if (s) {
        d.mode = k;
        d.in_kernel = true;
        if (k == FtMode::kHw) d.note = "hardware offload accepted";
        logger_->info("device {} joined flowtable {} ({} offload{}{})", d.name, nft::flowtable_name(k),
                      k == FtMode::kHw ? "hardware" : "software", d.note.empty() ? "" : ": ", d.note);
        result[i] = Status();
        continue;
      }
      if (txn.outcome_unknown(ids[n])) {
        // NEWFLOWTABLE with NLM_F_CREATE is idempotent (a device already
        // listed is fine): resent without reading back.  Out of rounds, the
        // lost verdict is the device's error.
        result[i] = s;
        if (round.lost(netlink::ReadBack::kIdempotent) == netlink::Fate::kResend) again.emplace_back(i, k);
        continue;
      }
      if (k == FtMode::kHw && s.err() != ENOENT && s.err() != ENODEV && s.err() != EPERM &&
          round.again() == netlink::Fate::kResend) {
        // Refused for hardware (EOPNOTSUPP on veth and most drivers):
        // the device takes the software flowtable.
        d.note = "hardware offload refused: " + s.message();
        logger_->info("device {}: {}; using the software flowtable", d.name, d.note);
        again.emplace_back(i, FtMode::kSw);
        continue;
      }
      if (s.err() == ENOENT) {
        d.present = false;
        d.in_kernel = false;
        result[i] = Status::error(ENODEV, "device " + d.name + " is gone: " + s.message());
      } else {
        result[i] = s;
      }
    }
    todo = std::move(again);
    if (todo.empty()) break;
  }
  return result;
}

Status Devices::leave_unused(const std::vector<uint16_t>& joined) {
  std::map<FtMode, std::vector<std::string>> drop;
  for (uint16_t i : joined) {
    Device& d = devs_[i];
    if (d.refs != 0 || !d.in_kernel || d.mode == FtMode::kNone) continue;
    if (layout_.flowtables) drop[d.mode].push_back(d.name);
    d.in_kernel = false;
  }
  if (drop.empty()) return {};
  netlink::NftTxn txn(*backend_.nft);
  for (auto& [m, names] : drop) {
    txn.add_flowtable(NFT_MSG_DELFLOWTABLE, 0, nft::build_flowtable(layout_, m, names),
                      "remove unused devices from a flowtable");
  }
  return txn.commit();
}

void Devices::rejoin_present() {
  std::vector<uint16_t> want;
  for (size_t i = 0; i < devs_.size(); ++i) {
    const Device& d = devs_[i];
    if (d.refs > 0 && d.present && !d.in_kernel) want.push_back(static_cast<uint16_t>(i));
  }
  if (want.empty()) return;
  for (const auto& [i, s] : join(want)) {
    if (!s) logger_->warn("device {} could not rejoin its flowtable: {}", devs_[i].name, s.to_string());
  }
}

void Devices::poll_events() {
  backend_.devices->poll_events([this](const netlink::LinkEvent& ev) { on_link_event(ev); });
}

void Devices::on_link_event(const netlink::LinkEvent& ev) {
  route_cache_.clear();
  if (ev.type == netlink::LinkEventType::kRemoved) {
    for (auto& d : devs_) {
      if (d.present && d.ifindex == ev.ifindex) {
        d.present = false;
        d.in_kernel = false;  // The kernel drops a vanished device from its flowtable.
        d.ifindex = 0;
        logger_->info("device {} went away; the kernel dropped it from its flowtable", d.name);
      }
    }
    return;
  }
  auto it = by_name_.find(ev.name);
  if (it == by_name_.end()) return;
  Device& d = devs_[it->second];
  if (d.present && d.ifindex == ev.ifindex) return;
  // Events queue up between operations; one about an ifindex the name no
  // longer has is stale (what it reports was already undone).
  auto now_idx = backend_.devices->ifindex(d.name);
  if (!now_idx || *now_idx != ev.ifindex) return;
  if (!d.present || d.ifindex != ev.ifindex) {
    if (d.ifindex != ev.ifindex) d.in_kernel = false;
    d.present = true;
    d.ifindex = ev.ifindex;
    logger_->info("device {} is back (ifindex {})", d.name, d.ifindex);
  }
}

void Devices::recheck(uint16_t i) {
  Device& d = devs_[i];
  auto idx = backend_.devices->ifindex(d.name);
  d.present = idx.ok();
  d.ifindex = idx ? *idx : 0;
}

void Devices::adopt(const std::string& name, FtMode mode, const std::string& flowtable) {
  const uint16_t i = slot(name);
  if (i == kNoDevice) return;
  devs_[i].mode = mode;
  devs_[i].in_kernel = true;
  devs_[i].note = "adopted from the existing flowtable " + flowtable;
}

FtMode Devices::mode_for(uint16_t iif, uint16_t riif) const {
  if (iif == kNoDevice || devs_[iif].mode != FtMode::kHw) return FtMode::kSw;
  if (riif != kNoDevice && devs_[riif].mode != FtMode::kHw) return FtMode::kSw;
  return FtMode::kHw;
}

bool Devices::any_hw() const {
  return std::any_of(devs_.begin(), devs_.end(), [](const Device& d) { return d.mode == FtMode::kHw; });
}

std::vector<std::pair<uint16_t, netlink::OpId>> Devices::restore(netlink::NftTxn& txn, FtMode mode,
                                                                 const std::set<std::string>* listed) {
  std::vector<std::pair<uint16_t, netlink::OpId>> ops;
  const std::string fname(nft::flowtable_name(mode));
  for (size_t i = 0; i < devs_.size(); ++i) {
    Device& d = devs_[i];
    if (d.mode != mode) continue;
    d.in_kernel = listed != nullptr && listed->count(d.name) != 0;
    if (d.in_kernel || d.refs == 0) continue;
    // The kernel dropped it (it went away); is it back?
    recheck(static_cast<uint16_t>(i));
    if (!d.present) continue;
    ops.emplace_back(static_cast<uint16_t>(i), txn.add_flowtable(NFT_MSG_NEWFLOWTABLE, NLM_F_CREATE,
                                                                 nft::build_flowtable(layout_, mode, {d.name}),
                                                                 "add device " + d.name + " to flowtable " + fname));
  }
  return ops;
}

void Devices::restored(const netlink::NftTxn& txn, const std::vector<std::pair<uint16_t, netlink::OpId>>& ops) {
  for (auto [i, op] : ops) {
    if (txn.status(op)) {
      devs_[i].in_kernel = true;
    } else {
      logger_->warn("device {} could not rejoin its flowtable: {}", devs_[i].name, txn.status(op).to_string());
    }
  }
}

void Devices::clear() {
  devs_.clear();
  by_name_.clear();
  route_cache_.clear();
}

}  // namespace ctoffload::nft
