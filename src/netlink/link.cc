// link.cc - devices over rtnetlink (libnl-route-3) and the SIOCETHTOOL ioctl.
#include "netlink/link.h"

// <net/if.h> gives struct ifreq for the ioctl; it must not follow
// <linux/if.h>, which nothing here includes.
#include <linux/ethtool.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <netlink/attr.h>
#include <netlink/cache.h>
#include <netlink/errno.h>
#include <netlink/msg.h>
#include <netlink/route/link.h>
#include <netlink/socket.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "log.h"
#include "netlink/nl_error.h"

namespace ctoffload::netlink {
namespace {

std::shared_ptr<spdlog::logger> logger() {
  static const auto l = log::get("link");
  return l;
}

static_assert(sizeof(FeatureBlock) == sizeof(ethtool_get_features_block),
              "FeatureBlock must mirror struct ethtool_get_features_block");
static_assert(kEthtoolStringLen == ETH_GSTRING_LEN, "kEthtoolStringLen must be ETH_GSTRING_LEN");

// Receive buffer of the monitor: link notifications carry statistics and
// per-VF data and can exceed a page.
constexpr size_t kMonitorBuffer = size_t{64} * 1024;

// libnl reports a missing device as one of these (it folds ENODEV into
// its own codes).
bool is_no_device(int nlerr) { return nlerr == -NLE_OBJ_NOTFOUND || nlerr == -NLE_NODEV; }

Status libnl_error(int nlerr, const std::string& what) {
  int err = EIO;
  switch (-nlerr) {
    case NLE_NOMEM:
      err = ENOMEM;
      break;
    case NLE_PERM:
      err = EPERM;
      break;
    case NLE_NOACCESS:
      err = EACCES;
      break;
    case NLE_INVAL:
      err = EINVAL;
      break;
    case NLE_OPNOTSUPP:
      err = EOPNOTSUPP;
      break;
    case NLE_BUSY:
      err = EBUSY;
      break;
    case NLE_AGAIN:
      err = EAGAIN;
      break;
    case NLE_BAD_SOCK:  // EBADF and ENOTSOCK: the socket was closed under us.
      err = EBADF;
      break;
    default:
      break;
  }
  return Status::error(err, what + ": " + nl_geterror(nlerr));
}

Status check_name(std::string_view name) {
  if (name.empty() || name.size() >= IFNAMSIZ) {
    return Status::error(EINVAL, "'" + std::string(name) + "' is not a network device name (1 to " +
                                     std::to_string(IFNAMSIZ - 1) + " bytes)");
  }
  if (name.find('\0') != std::string_view::npos) {
    return Status::error(EINVAL, "a network device name cannot contain a NUL byte");
  }
  return Status();
}

struct CacheFree {
  void operator()(nl_cache* c) const { nl_cache_free(c); }
};
struct LinkPut {
  void operator()(rtnl_link* l) const { rtnl_link_put(l); }
};

// One SIOCETHTOOL request for device 'name' on socket 'fd' (any socket of
// the device's namespace will do: the core handles the ioctl for every
// family).  'data' starts with the ethtool command word.
int ethtool_ioctl(int fd, std::string_view name, void* data) {
  ifreq ifr{};
  std::memcpy(ifr.ifr_name, name.data(), name.size());
  ifr.ifr_data = static_cast<char*>(data);
  return ioctl(fd, SIOCETHTOOL, &ifr) == 0 ? 0 : errno;
}

Status ethtool_status(int err, std::string_view name, const char* what) {
  if (err == ENODEV) return Status::error(ENODEV, "no network device named '" + std::string(name) + "'");
  if (err == EOPNOTSUPP) {
    return Status::error(EOPNOTSUPP, "device '" + std::string(name) + "' does not support ethtool " + what);
  }
  return errno_status(err, "ethtool " + std::string(what) + " on '" + std::string(name) + "'");
}

}  // namespace

// ------------------------------------------------------------------------

Result<size_t> find_ethtool_string(std::span<const char> table, size_t count, std::string_view name) {
  if (table.size() / kEthtoolStringLen < count) {
    return Status::error(EINVAL, "ethtool string table: " + std::to_string(table.size()) + " bytes cannot hold " +
                                     std::to_string(count) + " names");
  }
  for (size_t i = 0; i < count; ++i) {
    const char* s = table.data() + i * kEthtoolStringLen;
    const size_t len = strnlen(s, kEthtoolStringLen);
    if (std::string_view(s, len) == name) return i;
  }
  return Status::error(ENOENT, "ethtool string table has no '" + std::string(name) + "'");
}

Result<FeatureState> feature_state(std::span<const FeatureBlock> blocks, size_t index) {
  const size_t block = index / 32;
  if (block >= blocks.size()) {
    return Status::error(EINVAL, "ethtool feature " + std::to_string(index) + " lies past the " +
                                     std::to_string(blocks.size()) + " feature blocks");
  }
  const uint32_t bit = 1u << (index % 32);
  const FeatureBlock& b = blocks[block];
  FeatureState st;
  st.available = (b.available & bit) != 0;
  st.requested = (b.requested & bit) != 0;
  st.active = (b.active & bit) != 0;
  st.fixed = !st.available || (b.never_changed & bit) != 0;
  return st;
}

Result<LinkMessage> parse_link_message(const void* msg, size_t len) {
  const auto* nlh = static_cast<const nlmsghdr*>(msg);
  constexpr size_t kHeaders = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(ifinfomsg));
  if (msg == nullptr || len < NLMSG_HDRLEN || nlh->nlmsg_len < kHeaders || nlh->nlmsg_len > len) {
    return Status::error(EBADMSG, "link message: truncated (shorter than its headers or its nlmsg_len)");
  }
  if (nlh->nlmsg_type != RTM_NEWLINK && nlh->nlmsg_type != RTM_DELLINK) {
    return Status::error(
        EINVAL, "link message: type " + std::to_string(nlh->nlmsg_type) + " is not RTM_NEWLINK or RTM_DELLINK");
  }
  const auto* ifi = static_cast<const ifinfomsg*>(nlmsg_data(nlh));
  if (ifi->ifi_index <= 0) {
    return Status::error(EINVAL, "link message: ifindex " + std::to_string(ifi->ifi_index) + " is not valid");
  }

  const auto* head = reinterpret_cast<const nlattr*>(reinterpret_cast<const unsigned char*>(nlh) + kHeaders);
  const int attrlen = static_cast<int>(nlh->nlmsg_len - kHeaders);
  // nla_parse() tolerates bytes after the last whole attribute; they mean
  // the message was cut.
  int rem = attrlen;
  for (const nlattr* a = head; nla_ok(a, rem); a = nla_next(a, &rem)) {
  }
  if (rem > 0) return Status::error(EBADMSG, "link message: attributes are truncated");

  static const auto kPolicy = [] {
    std::array<nla_policy, IFLA_MAX + 1> p{};
    p[IFLA_IFNAME].type = NLA_STRING;
    p[IFLA_IFNAME].maxlen = IFNAMSIZ;
    return p;
  }();
  std::array<nlattr*, IFLA_MAX + 1> tb{};
  int err = nla_parse(tb.data(), IFLA_MAX, const_cast<nlattr*>(head), attrlen, kPolicy.data());
  if (err < 0) {
    return Status::error(EINVAL, std::string("link message: bad IFLA_IFNAME (not a NUL-terminated name shorter "
                                             "than IFNAMSIZ): ") +
                                     nl_geterror(err));
  }

  LinkMessage m;
  m.type = nlh->nlmsg_type;
  m.family = ifi->ifi_family;
  m.ifindex = ifi->ifi_index;
  m.flags = ifi->ifi_flags;
  if (tb[IFLA_IFNAME] != nullptr) m.name = static_cast<const char*>(nla_data(tb[IFLA_IFNAME]));
  return m;
}

// ------------------------------------------------------------------------

LinkClient::LinkClient(LinkClient&&) noexcept = default;
LinkClient& LinkClient::operator=(LinkClient&&) noexcept = default;
LinkClient::~LinkClient() = default;

Result<LinkClient> LinkClient::open() {
  NlSocketOptions options;
  options.receive_buffer = 1 << 20;
  auto sk = open_libnl_socket(NETLINK_ROUTE, options);
  if (!sk) return sk.status().with_context("open rtnetlink socket");
  return LinkClient(std::move(*sk));
}

Result<int> LinkClient::ifindex(std::string_view name) {
  if (Status s = check_name(name); !s) return s;
  const std::string n(name);
  rtnl_link* raw = nullptr;
  int err = rtnl_link_get_kernel(sk_.get(), 0, n.c_str(), &raw);
  std::unique_ptr<rtnl_link, LinkPut> link(raw);
  if (is_no_device(err)) return Status::error(ENODEV, "no network device named '" + n + "'");
  if (err < 0) return libnl_error(err, "look up network device '" + n + "'");
  return rtnl_link_get_ifindex(link.get());
}

Result<std::string> LinkClient::name(int ifindex) {
  if (ifindex <= 0) return Status::error(EINVAL, "ifindex " + std::to_string(ifindex) + " is not valid");
  rtnl_link* raw = nullptr;
  int err = rtnl_link_get_kernel(sk_.get(), ifindex, nullptr, &raw);
  std::unique_ptr<rtnl_link, LinkPut> link(raw);
  if (is_no_device(err)) {
    return Status::error(ENODEV, "no network device with ifindex " + std::to_string(ifindex));
  }
  if (err < 0) return libnl_error(err, "look up network device " + std::to_string(ifindex));
  const char* n = rtnl_link_get_name(link.get());
  return std::string(n != nullptr ? n : "");
}

Result<std::map<int, std::string>> LinkClient::list() {
  nl_cache* raw = nullptr;
  int err = rtnl_link_alloc_cache(sk_.get(), AF_UNSPEC, &raw);
  std::unique_ptr<nl_cache, CacheFree> cache(raw);
  if (err < 0) return libnl_error(err, "list network devices");
  std::map<int, std::string> out;
  for (nl_object* o = nl_cache_get_first(cache.get()); o != nullptr; o = nl_cache_get_next(o)) {
    auto* l = reinterpret_cast<rtnl_link*>(o);
    const char* n = rtnl_link_get_name(l);
    out.emplace(rtnl_link_get_ifindex(l), n != nullptr ? n : "");
  }
  return out;
}

Result<FeatureState> LinkClient::hw_tc_offload(std::string_view name) {
  auto st = feature(name, kHwTcOffloadFeature);
  // A kernel without the feature cannot offload TC to any device.
  if (!st && st.err() == ENOENT) return FeatureState{};
  return st;
}

Result<FeatureState> LinkClient::feature(std::string_view name, std::string_view feature_name) {
  if (Status s = check_name(name); !s) return s;
  const int fd = nl_socket_get_fd(sk_.get());

  // How many features the kernel names.
  std::vector<uint64_t> sset_buf((sizeof(ethtool_sset_info) + sizeof(uint32_t) + 7) / 8);
  auto* sset = reinterpret_cast<ethtool_sset_info*>(sset_buf.data());
  sset->cmd = ETHTOOL_GSSET_INFO;
  sset->sset_mask = 1ull << ETH_SS_FEATURES;
  if (int err = ethtool_ioctl(fd, name, sset); err != 0) return ethtool_status(err, name, "string set info");
  if ((sset->sset_mask & (1ull << ETH_SS_FEATURES)) == 0) {
    return Status::error(ENOENT, "device '" + std::string(name) + "' reports no feature names");
  }
  const uint32_t count = sset->data[0];

  // Their names, to find the bit of 'feature_name'.
  std::vector<uint64_t> str_buf((sizeof(ethtool_gstrings) + size_t{count} * ETH_GSTRING_LEN + 7) / 8);
  auto* strings = reinterpret_cast<ethtool_gstrings*>(str_buf.data());
  strings->cmd = ETHTOOL_GSTRINGS;
  strings->string_set = ETH_SS_FEATURES;
  strings->len = count;
  if (int err = ethtool_ioctl(fd, name, strings); err != 0) return ethtool_status(err, name, "feature names");
  const size_t n = std::min<size_t>(strings->len, count);
  auto index = find_ethtool_string(
      std::span<const char>(reinterpret_cast<const char*>(strings->data), n * ETH_GSTRING_LEN), n, feature_name);
  if (!index) return index.status().with_context("feature of '" + std::string(name) + "'");

  // The device's feature words.
  const uint32_t nblocks = (count + 31) / 32;
  std::vector<uint64_t> feat_buf((sizeof(ethtool_gfeatures) + nblocks * sizeof(ethtool_get_features_block) + 7) / 8);
  auto* feats = reinterpret_cast<ethtool_gfeatures*>(feat_buf.data());
  feats->cmd = ETHTOOL_GFEATURES;
  feats->size = nblocks;
  if (int err = ethtool_ioctl(fd, name, feats); err != 0) return ethtool_status(err, name, "features");
  const size_t got = std::min<size_t>(feats->size, nblocks);
  return feature_state(std::span<const FeatureBlock>(reinterpret_cast<const FeatureBlock*>(feats->features), got),
                       *index);
}

// ------------------------------------------------------------------------

std::string_view link_event_name(LinkEventType type) {
  switch (type) {
    case LinkEventType::kAdded:
      return "added";
    case LinkEventType::kRemoved:
      return "removed";
    case LinkEventType::kChanged:
      return "changed";
  }
  return "unknown";
}

LinkMonitor::LinkMonitor(NlSockPtr sk, LinkClient client)
    : sk_(std::move(sk)), client_(std::move(client)), buf_(new unsigned char[kMonitorBuffer]) {}
LinkMonitor::LinkMonitor(LinkMonitor&&) noexcept = default;
LinkMonitor& LinkMonitor::operator=(LinkMonitor&&) noexcept = default;
LinkMonitor::~LinkMonitor() = default;

Result<LinkMonitor> LinkMonitor::open() {
  auto client = LinkClient::open();
  if (!client) return client.status();
  NlSocketOptions options;
  options.receive_buffer = 1 << 20;
  options.receive_timeout_ms = 0;
  auto sk = open_libnl_socket(NETLINK_ROUTE, options);
  if (!sk) return sk.status().with_context("open link monitor");
  // Notifications carry no sequence number of ours.
  nl_socket_disable_seq_check(sk->get());
  if (int err = nl_socket_add_membership(sk->get(), RTNLGRP_LINK); err < 0) {
    return libnl_error(err, "subscribe to link notifications (RTNLGRP_LINK)");
  }
  if (int err = nl_socket_set_nonblocking(sk->get()); err < 0) {
    return libnl_error(err, "make the link monitor non-blocking");
  }
  LinkMonitor m(std::move(*sk), std::move(*client));
  // Subscribed first, listed second: a device created in between is both
  // listed and announced (then reported as "changed"), never missed.
  auto links = m.client_.list();
  if (!links) return links.status().with_context("open link monitor");
  m.links_ = std::move(*links);
  return m;
}

int LinkMonitor::borrow_fd_do_not_close() const { return sk_ ? nl_socket_get_fd(sk_.get()) : -1; }

Status LinkMonitor::resync(const std::function<void(const LinkEvent&)>& on_event, LinkDrainStats* stats) {
  auto now = client_.list();
  if (!now) return now.status().with_context("link monitor resync");
  ++stats->resyncs;
  for (const auto& [ifindex, name] : links_) {
    if (now->find(ifindex) == now->end()) {
      on_event(LinkEvent{LinkEventType::kRemoved, ifindex, name, 0});
      ++stats->events;
    }
  }
  for (const auto& [ifindex, name] : *now) {
    auto it = links_.find(ifindex);
    if (it == links_.end()) {
      on_event(LinkEvent{LinkEventType::kAdded, ifindex, name, 0});
      ++stats->events;
    } else if (it->second != name) {
      on_event(LinkEvent{LinkEventType::kChanged, ifindex, name, 0});
      ++stats->events;
    }
  }
  links_ = std::move(*now);
  return Status();
}

Result<LinkDrainStats> LinkMonitor::drain(const std::function<void(const LinkEvent&)>& on_event) {
  LinkDrainStats stats;
  const int fd = borrow_fd_do_not_close();
  for (;;) {
    ssize_t n = ::recv(fd, buf_.get(), kMonitorBuffer, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return stats;
      if (errno == ENOBUFS) {
        // Notifications were dropped; the device list says what we missed.
        logger()->info("link monitor overflowed (ENOBUFS); reading the device list again");
        if (Status s = resync(on_event, &stats); !s) return s;
        continue;
      }
      return errno_status(errno, "read link notifications");
    }
    if (static_cast<size_t>(n) > kMonitorBuffer) {
      // The datagram was cut, so its notifications are lost: resync.
      logger()->warn("link monitor: a {}-byte notification did not fit; reading the device list again", n);
      if (Status s = resync(on_event, &stats); !s) return s;
      continue;
    }
    int rem = static_cast<int>(n);
    for (auto* nlh = reinterpret_cast<nlmsghdr*>(buf_.get()); nlmsg_ok(nlh, rem); nlh = nlmsg_next(nlh, &rem)) {
      if (nlh->nlmsg_type != RTM_NEWLINK && nlh->nlmsg_type != RTM_DELLINK) continue;
      auto m = parse_link_message(nlh, nlh->nlmsg_len);
      if (!m) {
        logger()->warn("link monitor: skipping a notification: {}", m.message());
        continue;
      }
      // AF_BRIDGE notifications are about bridge ports, not devices.
      if (m->family != AF_UNSPEC) continue;
      LinkEvent ev;
      ev.ifindex = m->ifindex;
      ev.flags = m->flags;
      auto it = links_.find(m->ifindex);
      if (m->type == RTM_DELLINK) {
        ev.type = LinkEventType::kRemoved;
        ev.name = !m->name.empty() ? m->name : (it != links_.end() ? it->second : std::string());
        ev.flags = 0;
        if (it != links_.end()) links_.erase(it);
      } else if (it == links_.end()) {
        ev.type = LinkEventType::kAdded;
        ev.name = m->name;
        links_.emplace(m->ifindex, m->name);
      } else {
        ev.type = LinkEventType::kChanged;
        if (!m->name.empty()) it->second = m->name;
        ev.name = it->second;
      }
      on_event(ev);
      ++stats.events;
    }
  }
}

}  // namespace ctoffload::netlink
