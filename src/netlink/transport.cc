// transport.cc - what every Transport shares.
#include "netlink/transport.h"

#include <cerrno>

namespace ctoffload::netlink {

Status Transport::send(const void* msg, size_t len) {
  const iovec iov{const_cast<void*>(msg), len};  // sendmsg does not write through it.
  return send(std::span<const iovec>(&iov, 1));
}

Status Transport::reopen() { return Status::error(EOPNOTSUPP, "this netlink transport cannot reopen its socket"); }

bool socket_gone(int err) { return err == EBADF || err == ENOTSOCK; }

Status send_retrying_eintr(Transport& t, std::span<const iovec> iov) {
  Status s;
  for (int i = 0; i < kMaxEintr; ++i) {
    s = t.send(iov);
    if (s.err() != EINTR) return s;
  }
  return s;
}

}  // namespace ctoffload::netlink
