// link.h - network devices through rtnetlink (libnl-route-3) and ethtool.
//
// What the kernel provider needs to know about devices: resolve a name to
// an ifindex and back, whether a device advertises hardware TC offload
// (the flowtable's `flags offload` needs it), and when devices come and go
// (a hot-unplugged device must leave the flowtable and come back with it).
//
// Return convention: a Status/Result that is ok, or a positive errno with a
// sentence naming the device (see nl_error.h).  Nothing here throws.
//
// Threads: each object is one socket; use it from one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "ctoffload/result.h"
#include "netlink/ctnetlink.h"  // NlSockPtr, open_libnl_socket()

namespace ctoffload::netlink {

// ------------------------------------------------------------------------
// Names, indexes and features
// ------------------------------------------------------------------------

// The state of one ethtool feature of a device.
struct FeatureState {
  bool available = false;  // The driver can do it (it is in hw_features).
  bool requested = false;  // Someone asked for it to be on.
  bool active = false;     // It is on now.
  bool fixed = false;      // It cannot be switched: not available, or
                           // one the kernel never changes (what ethtool -k
                           // shows as "[fixed]").
};

// Resolves devices of the caller's network namespace over rtnetlink and
// reads their ethtool features.  Move-only; closes its socket on
// destruction.
class LinkClient {
 public:
  // Opens a NETLINK_ROUTE socket (close-on-exec, extended acks on).
  static Result<LinkClient> open();

  LinkClient(LinkClient&&) noexcept;
  LinkClient& operator=(LinkClient&&) noexcept;
  LinkClient(const LinkClient&) = delete;
  LinkClient& operator=(const LinkClient&) = delete;
  ~LinkClient();

  // The ifindex of device 'name'.  ENODEV ("no network device named
  // 'veth9'") when there is none; EINVAL when 'name' is empty or longer
  // than IFNAMSIZ - 1 bytes.
  Result<int> ifindex(std::string_view name);

  // The name of device 'ifindex'.  ENODEV ("no network device with ifindex
  // 42") when there is none; EINVAL for an ifindex <= 0.
  Result<std::string> name(int ifindex);

  // Every device: ifindex -> name (one RTM_GETLINK dump).
  Result<std::map<int, std::string>> list();

  // Whether device 'name' advertises hardware TC offload (NETIF_F_HW_TC,
  // ethtool's "hw-tc-offload").  Read with the SIOCETHTOOL ioctl
  // (ETHTOOL_GSSET_INFO and ETHTOOL_GSTRINGS for the feature names, then
  // ETHTOOL_GFEATURES), because the ethtool netlink family would need
  // libnl-genl, which is not a dependency.  A kernel whose feature table has
  // no "hw-tc-offload" gives all-false.  ENODEV when there is no such
  // device; EOPNOTSUPP when its driver has no ethtool support.
  Result<FeatureState> hw_tc_offload(std::string_view name);

  // Any feature by its ethtool name ("hw-tc-offload", "rx-checksum", ...).
  // ENOENT when the kernel has no feature of that name.
  Result<FeatureState> feature(std::string_view name, std::string_view feature);

 private:
  explicit LinkClient(NlSockPtr sk) : sk_(std::move(sk)) {}

  NlSockPtr sk_;
};

// The ethtool name of NETIF_F_HW_TC.
inline constexpr std::string_view kHwTcOffloadFeature = "hw-tc-offload";

// Length of one name in an ethtool string table (ETH_GSTRING_LEN).
inline constexpr size_t kEthtoolStringLen = 32;

// The index of 'name' in an ethtool string table: 'count' names of
// kEthtoolStringLen bytes each, NUL-padded, as ETHTOOL_GSTRINGS returns it.
// A name filling all 32 bytes without a NUL is read as 32 characters.
// ENOENT when 'name' is not there; EINVAL when 'table' is shorter than
// 'count' names.
Result<size_t> find_ethtool_string(std::span<const char> table, size_t count, std::string_view name);

// One 32-feature block of ETHTOOL_GFEATURES, laid out as the kernel's
// struct ethtool_get_features_block.
struct FeatureBlock {
  uint32_t available;
  uint32_t requested;
  uint32_t active;
  uint32_t never_changed;
};

// The state of feature 'index' in the blocks ETHTOOL_GFEATURES returned.
// EINVAL when 'index' lies past the last block.
Result<FeatureState> feature_state(std::span<const FeatureBlock> blocks, size_t index);

// ------------------------------------------------------------------------
// Link notifications
// ------------------------------------------------------------------------

enum class LinkEventType {
  kAdded,    // A device appeared (created, or moved into this namespace).
  kRemoved,  // A device went away (deleted, or moved out).
  kChanged,  // A known device changed (renamed, up/down, carrier, MTU...).
};

// "added", "removed", "changed".
std::string_view link_event_name(LinkEventType type);

struct LinkEvent {
  LinkEventType type = LinkEventType::kChanged;
  int ifindex = 0;
  std::string name;    // The device's name (its new name after a rename).
  uint32_t flags = 0;  // IFF_* flags (IFF_UP, IFF_RUNNING, ...); 0 on removal.
};

// What one drain() did.
struct LinkDrainStats {
  size_t events = 0;   // Events handed to the callback.
  size_t resyncs = 0;  // Times the socket overflowed and the device list was
                       // read again to work out what was missed.
};

// Watches devices come and go (RTNLGRP_LINK).  Poll its descriptor for
// POLLIN, then call drain().  Move-only.
class LinkMonitor {
 public:
  // Subscribes to link notifications, then reads the current devices (in
  // that order, so nothing falls between the two).  The socket is
  // non-blocking and close-on-exec.
  static Result<LinkMonitor> open();

  LinkMonitor(LinkMonitor&&) noexcept;
  LinkMonitor& operator=(LinkMonitor&&) noexcept;
  LinkMonitor(const LinkMonitor&) = delete;
  LinkMonitor& operator=(const LinkMonitor&) = delete;
  ~LinkMonitor();

  // Reads every notification queued, without waiting, and reports each as
  // an event to 'on_event', in the kernel's order.  A device's first
  // RTM_NEWLINK is "added", later ones "changed"; RTM_DELLINK is "removed".
  // Bridge-port notifications (family AF_BRIDGE) are not device events and
  // are not reported.
  // When the socket overflowed (ENOBUFS: notifications were lost), the
  // device list is read again and the differences are reported as events
  // (added, removed, renamed = changed, all with flags 0); stats.resyncs
  // counts that.
  // Errors: those of recv() other than EAGAIN and ENOBUFS; a malformed
  // notification is skipped with a warning.
  Result<LinkDrainStats> drain(const std::function<void(const LinkEvent&)>& on_event);

  // The devices known now: ifindex -> name.
  const std::map<int, std::string>& links() const { return links_; }

  // The descriptor to poll() for POLLIN.  The monitor keeps ownership:
  // never close it, read from it or write to it.
  int borrow_fd_do_not_close() const;

 private:
  LinkMonitor(NlSockPtr sk, LinkClient client);
  Status resync(const std::function<void(const LinkEvent&)>& on_event, LinkDrainStats* stats);

  NlSockPtr sk_;
  LinkClient client_;  // For the initial and resync dumps.
  std::map<int, std::string> links_;
  std::unique_ptr<unsigned char[]> buf_;
};

// One RTM_NEWLINK / RTM_DELLINK message, decoded.
struct LinkMessage {
  uint16_t type = 0;   // RTM_NEWLINK or RTM_DELLINK.
  uint8_t family = 0;  // ifi_family: AF_UNSPEC for devices, AF_BRIDGE for
                       // bridge-port notifications.
  int ifindex = 0;
  std::string name;    // IFLA_IFNAME; empty when the message has none.
  uint32_t flags = 0;  // ifi_flags.
};

// Decodes the link message of 'len' bytes at 'msg'.  Unknown attributes are
// ignored.  EBADMSG when it is truncated (shorter than its headers or its
// nlmsg_len, or attributes running past the end); EINVAL when it is not an
// RTM_NEWLINK/RTM_DELLINK message, has ifindex <= 0, or its IFLA_IFNAME is
// not a NUL-terminated name shorter than IFNAMSIZ.
Result<LinkMessage> parse_link_message(const void* msg, size_t len);

}  // namespace ctoffload::netlink
