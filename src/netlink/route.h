// route.h - route lookups (RTM_GETROUTE) over rtnetlink.
//
// The kernel provider asks which device a packet to an address leaves by,
// to find a connection's reply-direction input device when the datapath
// did not say (section 5 of the design brief).  One question, one answer:
// the request goes through request.h's engine.
//
// Return convention: a Status or Result whose error is a positive errno
// plus a sentence naming what failed, with the kernel's extended-ack text
// when it sent one.  Threads: one thread at a time per client.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "ctoffload/conn.h"
#include "ctoffload/result.h"
#include "netlink/transport.h"

namespace ctoffload::netlink {

class RouteClient {
 public:
  // Opens a NETLINK_ROUTE socket (close-on-exec, extended acks on).
  // Errors: the errno of socket()/bind() (EMFILE, ENOMEM, ...).
  [[nodiscard]] static Result<RouteClient> open();

  // A client speaking over 'transport' (tests drive error paths this way).
  static RouteClient with_transport(std::unique_ptr<Transport> transport);

  RouteClient(RouteClient&&) noexcept;
  RouteClient& operator=(RouteClient&&) noexcept;
  RouteClient(const RouteClient&) = delete;
  RouteClient& operator=(const RouteClient&) = delete;
  ~RouteClient();

  // The ifindex of the output device of the route to 'addr' ('family'
  // AF_INET or AF_INET6).  EADDRNOTAVAIL when the address is local,
  // EHOSTUNREACH when there is no unicast route or it has no output device,
  // ENOENT when the kernel acknowledged without a route, the kernel's errno
  // (ENETUNREACH, ...) or the transport's (transport.h) otherwise.
  Result<int> oif(uint8_t family, const Addr& addr);

  // How long one receive waits for the kernel, in milliseconds.
  static constexpr int kTimeoutMs = 10000;

 private:
  explicit RouteClient(std::unique_ptr<Transport> transport);

  std::unique_ptr<Transport> transport_;
  std::unique_ptr<std::byte[]> buf_;  // Receive buffer, reused.
  uint32_t seq_ = 0;
};

}  // namespace ctoffload::netlink
