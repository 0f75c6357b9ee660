// request.cc - send one request, read its answer.
//
// The datagram walk uses libmnl's framing helpers (mnl_nlmsg_ok/next) but
// not mnl_cb_run(): it fails a whole datagram on a foreign sequence number
// (EPROTO) or port id (ESRCH), where answers to a request given up on are
// expected here and skipped, and it stops a datagram part way on
// NLM_F_DUMP_INTR (EINTR) without saying where, which would leave the rest
// of the answer, NLMSG_DONE included, unread; here the interruption is
// noted and reported once the answer is read.  NLMSG_ERROR and NLMSG_DONE
// are decoded by nl_error.h, the one place kernel errors become Status.
#include "netlink/request.h"

#include <libmnl/libmnl.h>
#include <linux/netlink.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "netlink/nl_error.h"

namespace ctoffload::netlink {

size_t framed_length(const std::byte* buf, size_t len) {
  size_t off = 0;
  while (off < len) {
    if (len - off < sizeof(nlmsghdr)) break;
    nlmsghdr h;
    std::memcpy(&h, buf + off, sizeof h);
    if (h.nlmsg_len < sizeof(nlmsghdr) || h.nlmsg_len > len - off) break;
    off += std::min<size_t>(NLMSG_ALIGN(static_cast<size_t>(h.nlmsg_len)), len - off);
  }
  return off;
}

bool well_framed(const std::byte* buf, size_t len) { return framed_length(buf, len) == len; }

Status request_run(Transport& t, nlmsghdr* req, const RequestIo& io, const OnAnswer& on_answer, bool* delivered) {
  const std::string what(io.what);
  const uint32_t seq = req->nlmsg_seq;
  req->nlmsg_pid = 0;
  req->nlmsg_flags |= NLM_F_REQUEST;
  const bool dump = (req->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;
  const iovec iov{req, req->nlmsg_len};
  if (Status sent = send_retrying_eintr(t, std::span<const iovec>(&iov, 1)); !sent) return sent.with_context(what);
  const uint32_t portid = t.portid();

  // The first error of the answer's own messages; the rest is still read.
  Status first_error;
  int eintr = 0;
  bool interrupted = false;  // A message carried NLM_F_DUMP_INTR.
  // The answer's end: the first error of its messages, or the dump's
  // interruption.
  const auto finish = [&]() -> Status {
    if (!first_error.ok() || !interrupted) return first_error;
    if (io.interrupted != nullptr) {
      *io.interrupted = true;
      return {};
    }
    return Status::error(EINTR, what +
                                    ": the dump was interrupted: what it lists changed while the kernel "
                                    "dumped it (NLM_F_DUMP_INTR)");
  };
  if (io.interrupted != nullptr) *io.interrupted = false;
  for (;;) {
    auto got = t.receive(io.buf, io.timeout_ms);
    if (!got && got.err() == EINTR && ++eintr < kMaxEintr) continue;  // Nothing was read.
    if (!got) return got.status().with_context(what);
    const auto* base = io.buf.data();
    // Only the whole messages in front of any damage are walked.
    const size_t framed = framed_length(base, *got);
    const bool truncated = framed != *got;
    int len = static_cast<int>(framed);
    for (auto* m = reinterpret_cast<const nlmsghdr*>(base); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
      if (m->nlmsg_seq != seq) continue;                                         // Another request's.
      if (m->nlmsg_pid != 0 && portid != 0 && m->nlmsg_pid != portid) continue;  // Another socket's.
      if ((m->nlmsg_flags & NLM_F_DUMP_INTR) != 0) interrupted = true;
      switch (m->nlmsg_type) {
        case NLMSG_NOOP:
        case NLMSG_OVERRUN:
          continue;
        case NLMSG_ERROR: {
          auto ack = parse_kernel_ack(m, m->nlmsg_len);
          if (!ack) return ack.status().with_context(what);
          if (ack->err != 0) return kernel_status(*ack, what);
          if (dump) continue;  // A dump ends with NLMSG_DONE.
          return finish();
        }
        case NLMSG_DONE: {
          auto done = parse_kernel_done(m, m->nlmsg_len);
          if (!done) return done.status().with_context(what);
          if (done->err != 0) return kernel_status(*done, what);
          return finish();
        }
        default:
          if (first_error.ok()) {
            if (delivered != nullptr) *delivered = true;
            if (Status s = on_answer(m); !s) first_error = std::move(s);
          }
          break;
      }
    }
    // Reported after the messages in front of the damage were handed over.
    if (truncated && first_error.ok()) {
      first_error = Status::error(EBADMSG, what + ": a datagram of the answer ends in a truncated message");
    }
  }
}

}  // namespace ctoffload::netlink
