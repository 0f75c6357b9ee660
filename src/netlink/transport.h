// transport.h - the one seam between the netlink clients and the kernel.
//
// Every client in src/netlink and the kernel provider (nf_tables
// transactions and reads, ctnetlink, route lookups) talks to the kernel
// through a Transport: send one datagram, receive one datagram, say how big
// both may be, and replace the socket when it failed for good.  The real
// ones are netlink sockets; unit tests put a fake kernel behind the same
// interface.
//
// Return convention: a Status/Result that is ok, or a positive errno with a
// message (see nl_error.h).  Nothing here throws.
//
// The errno table, stated once.  Every Transport reports these conditions
// with these errnos, and every caller reads them this way:
//
//   ETIMEDOUT  receive(): no datagram arrived within the timeout (also with
//              timeout 0: nothing is queued right now).  The socket is fine,
//              but an answer may still be on its way.
//   EMSGSIZE   send(): the datagram is larger than max_send_bytes(); nothing
//              was sent.  receive(): the datagram did not fit the buffer and
//              is lost.
//   ENOBUFS    receive(): the kernel dropped messages because the receive
//              buffer was full.  The socket stays usable (later messages
//              can still be read), but what was dropped is gone.
//   EBADF,     send()/receive(): the socket itself is gone (its descriptor
//   ENOTSOCK   closed or replaced under us); see socket_gone().  Only
//              reopen() helps, and whatever it had queued is lost.
//   EINTR      retried inside a transport; a caller may still see one from a
//              transport that lets it through (see kMaxEintr).
//   other      the errno of the failed system call, unchanged.
//
// Note that EAGAIN never means "timed out" here: in an nf_tables ack the
// kernel's EAGAIN asks for the batch to be sent again.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "ctoffload/result.h"

namespace ctoffload::netlink {

// What every netlink client needs from a netlink socket.
class Transport {
 public:
  virtual ~Transport() = default;

  // Sends the concatenation of 'iov' as one datagram (one sendmsg), retrying
  // when interrupted (EINTR).  Errors: EMSGSIZE, EBADF/ENOTSOCK, or the errno
  // of the failed send (table above).
  virtual Status send(std::span<const iovec> iov) = 0;

  // Sends the 'len' bytes at 'msg' as one datagram, as send(iov) does.
  Status send(const void* msg, size_t len);

  // Receives one datagram into 'buf', waiting at most 'timeout_ms'
  // milliseconds for one to arrive (0: do not wait; negative: wait as long
  // as it takes).  Returns its length.  Errors: ETIMEDOUT, EMSGSIZE,
  // ENOBUFS, EBADF/ENOTSOCK, or the errno of the failed receive (table
  // above).
  virtual Result<size_t> receive(std::span<std::byte> buf, int timeout_ms) = 0;

  // The socket's netlink port id; answers to its requests carry it.
  virtual uint32_t portid() const = 0;

  // The largest datagram send() accepts.
  virtual size_t max_send_bytes() const = 0;

  // How many bytes of kernel messages (counted as the kernel counts them,
  // buffer overhead included) may wait to be read before the kernel drops
  // the next one.
  virtual size_t receive_buffer_bytes() const = 0;

  // Replaces the socket with a fresh one (a new port id): after it failed
  // for good (socket_gone()), or to drop what the old one had queued (the
  // rest of an answer given up on, a dump the kernel still runs for it).
  // Whatever the old socket had queued is lost, so a caller that had sent a
  // request on it no longer knows what became of it.  The default says
  // EOPNOTSUPP: a transport that cannot reopen stays as it is.
  virtual Status reopen();
};

// Whether a send or receive error 'err' means the socket itself is gone
// (EBADF, ENOTSOCK), so that only reopen() helps.
bool socket_gone(int err);

// How many EINTRs in a row a caller survives from a transport that lets one
// through (a transport retries EINTR itself; this is the second line).
inline constexpr int kMaxEintr = 64;

// t.send(iov), sent again while it fails with EINTR (at most kMaxEintr
// times): an interrupted send sent nothing.
Status send_retrying_eintr(Transport& t, std::span<const iovec> iov);

}  // namespace ctoffload::netlink
