// route.cc - RTM_GETROUTE over rtnetlink, through the request engine.
#include "netlink/route.h"

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>
#include <utility>

#include "netlink/ctnetlink.h"  // open_netlink_transport()
#include "netlink/request.h"

namespace ctoffload::netlink {
namespace {

// Route answers are a few hundred bytes.
constexpr size_t kRouteBuffer = size_t{16} * 1024;

}  // namespace

RouteClient::RouteClient(std::unique_ptr<Transport> transport)
    : transport_(std::move(transport)), buf_(new std::byte[kRouteBuffer]) {}
RouteClient::RouteClient(RouteClient&&) noexcept = default;
RouteClient& RouteClient::operator=(RouteClient&&) noexcept = default;
RouteClient::~RouteClient() = default;

Result<RouteClient> RouteClient::open() {
  NlSocketOptions options;
  options.receive_buffer = 0;  // The kernel's default: answers are small.
  options.receive_timeout_ms = kTimeoutMs;
  auto t = open_netlink_transport(NETLINK_ROUTE, options);
  if (!t) return t.status().with_context("open rtnetlink socket for route lookups");
  return RouteClient(std::move(*t));
}

RouteClient RouteClient::with_transport(std::unique_ptr<Transport> transport) {
  return RouteClient(std::move(transport));
}

Result<int> RouteClient::oif(uint8_t family, const Addr& addr) {
  alignas(nlmsghdr) char req[MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(rtmsg)) + MNL_ATTR_HDRLEN + 16];
  nlmsghdr* nlh = mnl_nlmsg_put_header(req);
  nlh->nlmsg_type = RTM_GETROUTE;
  // The ack ends the answer after the route, so the socket is left empty.
  nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  nlh->nlmsg_seq = ++seq_;
  auto* rtm = static_cast<rtmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(rtmsg)));
  rtm->rtm_family = family;
  const size_t alen = family == AF_INET ? 4 : 16;
  rtm->rtm_dst_len = static_cast<unsigned char>(alen * 8);
  mnl_attr_put(nlh, RTA_DST, alen, addr.bytes);
  const std::string what = "route lookup for " + format_address(family, addr);

  bool found = false;
  int oif = 0;
  const auto on_route = [&](const nlmsghdr* m) -> Status {
    if (m->nlmsg_type != RTM_NEWROUTE || found) return {};
    found = true;
    if (mnl_nlmsg_get_payload_len(m) < sizeof(rtmsg)) return Status::error(EBADMSG, what + ": truncated route");
    const auto* r = static_cast<const rtmsg*>(mnl_nlmsg_get_payload(m));
    if (r->rtm_type == RTN_LOCAL) return Status::error(EADDRNOTAVAIL, what + ": the address is local");
    if (r->rtm_type != RTN_UNICAST) return Status::error(EHOSTUNREACH, what + ": no unicast route");
    const auto* end = reinterpret_cast<const char*>(mnl_nlmsg_get_payload_tail(m));
    for (auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(m, sizeof(rtmsg)));
         mnl_attr_ok(a, static_cast<int>(end - reinterpret_cast<const char*>(a))); a = mnl_attr_next(a)) {
      if (mnl_attr_get_type(a) == RTA_OIF && mnl_attr_get_payload_len(a) >= 4) {
        oif = static_cast<int>(mnl_attr_get_u32(a));
      }
    }
    if (oif <= 0) return Status::error(EHOSTUNREACH, what + ": the route has no output device");
    return {};
  };
  const RequestIo io{{buf_.get(), kRouteBuffer}, kTimeoutMs, what};
  if (Status s = request_run(*transport_, nlh, io, on_route); !s) return s;
  if (!found) return Status::error(ENOENT, what + ": no answer");
  return oif;
}

}  // namespace ctoffload::netlink
