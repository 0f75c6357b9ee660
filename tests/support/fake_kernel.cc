// fake_kernel.cc - the fake netlink kernel of the tests (fake_kernel.h).
#include "support/fake_kernel.h"

#include <linux/netlink.h>

#include <cerrno>
#include <cstring>
#include <utility>

namespace ctoffload::testing {

Bytes flatten(std::span<const iovec> iov) {
  Bytes out;
  for (const iovec& v : iov) {
    const auto* p = static_cast<const unsigned char*>(v.iov_base);
    out.insert(out.end(), p, p + v.iov_len);
  }
  return out;
}

Bytes dump_interrupted(Bytes datagram) {
  size_t off = 0;
  while (off + sizeof(nlmsghdr) <= datagram.size()) {
    nlmsghdr h;
    std::memcpy(&h, datagram.data() + off, sizeof h);
    if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > datagram.size() - off) break;
    h.nlmsg_flags |= NLM_F_DUMP_INTR;
    std::memcpy(datagram.data() + off, &h, sizeof h);
    off += NLMSG_ALIGN(h.nlmsg_len);
  }
  return datagram;
}

Status FakeKernel::send(std::span<const iovec> iov) {
  if (on_send) on_send(flatten(iov), *this);
  if (gone != 0) return Status::error(gone, "fake kernel: send on a socket that is gone");
  if (std::exchange(eintr_send, false)) return Status::error(EINTR, "fake kernel: send interrupted");
  if (const int err = std::exchange(fail_next_send, 0); err != 0) {
    return Status::error(err, "fake kernel: send failed");
  }
  if (!send_error) return send_error;
  Status s = deliver(iov);
  if (s && gone_after_send != 0) gone = std::exchange(gone_after_send, 0);
  return s;
}

Status FakeKernel::deliver(std::span<const iovec> iov) {
  Bytes d = flatten(iov);
  if (d.size() > max_send) return Status::error(EMSGSIZE, "fake kernel: datagram too long to send");
  requests.push_back(std::move(d));
  if (on_request) on_request(requests.back(), *this);
  return Status();
}

Result<size_t> FakeKernel::receive(std::span<std::byte> buf, int timeout_ms) {
  if (gone != 0) return Status::error(gone, "fake kernel: receive on a socket that is gone");
  if (std::exchange(overrun, false)) return Status::error(ENOBUFS, "fake kernel: receive buffer overrun");
  if (std::exchange(eintr_receive, false)) return Status::error(EINTR, "fake kernel: receive interrupted");
  if (on_receive) on_receive(*this);
  if (queue.empty()) return receive_idle(buf, timeout_ms);
  Datagram d = std::move(queue.front());
  queue.pop_front();
  if (d.err != 0) return Status::error(d.err, "fake kernel: scripted error");
  if (d.bytes.size() > buf.size()) return Status::error(EMSGSIZE, "fake kernel: datagram too big for the buffer");
  if (!d.bytes.empty()) std::memcpy(buf.data(), d.bytes.data(), d.bytes.size());
  if (on_read) on_read(d.bytes, *this);
  return d.bytes.size();
}

Result<size_t> FakeKernel::receive_idle(std::span<std::byte>, int) {
  return Status::error(ETIMEDOUT, "fake kernel: nothing queued");
}

Status FakeKernel::reopen() {
  ++reopens;
  queue.clear();  // A fresh socket has nothing queued.
  if (reopen_errno != 0) return Status::error(reopen_errno, "fake kernel: cannot open a socket");
  gone = 0;
  return Status();
}

Status FaultyTransport::reopen() {
  if (Status s = FakeKernel::reopen(); !s) return s;
  return real_->reopen();
}

}  // namespace ctoffload::testing
