// nft_socket.h - the netlink socket nf_tables transactions go through.
//
// Transport is the seam between the transaction logic (nft_txn.h) and the
// kernel: send one datagram, receive one datagram, and say how big both may
// be.  NftSocket is the real one, a NETLINK_NETFILTER socket on libmnl;
// unit tests put a fake kernel behind the same interface.
//
// Return convention: a Status/Result that is ok, or a positive errno with a
// message (see nl_error.h).  Nothing here throws.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "ctoffload/result.h"

struct mnl_socket;

namespace ctoffload::netlink {

// What a transaction needs from a netlink socket.
class Transport {
 public:
  virtual ~Transport() = default;

  // Sends the concatenation of 'iov' as one datagram (one sendmsg), retrying
  // when interrupted (EINTR).  Returns EMSGSIZE when the datagram is larger
  // than max_send_bytes(), or the errno of the failed send.
  virtual Status send(std::span<const iovec> iov) = 0;

  // Receives one datagram into 'buf', waiting at most 'timeout_ms'
  // milliseconds for one to arrive (0: do not wait).  Returns its length.
  // Fails with EAGAIN when nothing arrived in time, with ENOBUFS when the
  // kernel had to drop messages because the receive buffer was full (the
  // socket stays usable: later messages can still be read), and with
  // ENOSPC when the datagram did not fit in 'buf' (it is lost).
  virtual Result<size_t> receive(std::span<std::byte> buf, int timeout_ms) = 0;

  // The socket's netlink port id; acknowledgements carry it.
  virtual uint32_t portid() const = 0;

  // The largest datagram send() accepts.
  virtual size_t max_send_bytes() const = 0;

  // How many bytes of kernel messages (counted as the kernel counts them,
  // buffer overhead included) may wait to be read before the kernel drops
  // the next one.
  virtual size_t receive_buffer_bytes() const = 0;

  // Replaces the socket with a fresh one after it failed for good (its
  // descriptor was closed or replaced under us: EBADF, ENOTSOCK).  Whatever
  // the old socket had queued is lost, so a caller that had sent a request
  // on it no longer knows what became of it.  The default says EOPNOTSUPP:
  // a transport that cannot reopen stays failed.
  virtual Status reopen();
};

// How many EINTRs in a row a caller survives from a transport that lets one
// through (a transport retries EINTR itself; this is the second line).
inline constexpr int kMaxEintr = 64;

// t.send(iov), sent again while it fails with EINTR (at most kMaxEintr
// times): an interrupted send sent nothing.
Status send_retrying_eintr(Transport& t, std::span<const iovec> iov);

// What NftSocket::open() asks the kernel for.
struct NftSocketOptions {
  // Requested receive and send buffer sizes.  With CAP_NET_ADMIN they are
  // forced (SO_RCVBUFFORCE/SO_SNDBUFFORCE); otherwise the kernel caps them at
  // net.core.rmem_max/wmem_max.  The kernel doubles what it grants to cover
  // its bookkeeping; the accessors report what was granted.
  size_t receive_buffer_bytes = 8u << 20;
  size_t send_buffer_bytes = 8u << 20;
};

// A NETLINK_NETFILTER socket: move-only, closed on destruction, bound to a
// kernel-assigned port id, close-on-exec, with NETLINK_EXT_ACK (the kernel
// says why a request failed) and NETLINK_CAP_ACK (acks do not echo the
// request) switched on where the kernel has them.
class NftSocket final : public Transport {
 public:
  // Opens and binds the socket.  Returns the errno of socket(2)/bind(2)
  // (EPROTONOSUPPORT when the kernel has no nfnetlink, EMFILE, ENOMEM, ...).
  // Failing to set the ack options or the buffer sizes is not an error:
  // the socket works without them, with less detail or smaller batches.
  [[nodiscard]] static Result<NftSocket> open(const NftSocketOptions& options = {});

  NftSocket(NftSocket&& other) noexcept;
  NftSocket& operator=(NftSocket&& other) noexcept;
  NftSocket(const NftSocket&) = delete;
  NftSocket& operator=(const NftSocket&) = delete;
  ~NftSocket() override;

  Status send(std::span<const iovec> iov) override;
  Result<size_t> receive(std::span<std::byte> buf, int timeout_ms) override;
  uint32_t portid() const override { return portid_; }
  size_t max_send_bytes() const override;
  size_t receive_buffer_bytes() const override { return rcvbuf_; }
  // Closes the socket and opens a new one with the options it was opened
  // with (a new port id).  The old descriptor is closed first, so that the
  // new one cannot be the number that is closed: if the descriptor was
  // closed under us, nobody may have reused its number in between.  Fails
  // with the errno of socket(2)/bind(2); the socket is then closed (EBADF).
  Status reopen() override;

  // Whether the kernel accepted NETLINK_EXT_ACK / NETLINK_CAP_ACK.
  bool ext_ack() const { return ext_ack_; }
  bool cap_ack() const { return cap_ack_; }
  // The send buffer the kernel granted (bytes, as getsockopt reports it).
  size_t send_buffer_bytes() const { return sndbuf_; }

  // The raw descriptor, for poll() or getsockopt() only.  The socket keeps
  // ownership: never close it, and never read from or write to it while a
  // transaction uses this socket.  -1 after a move.
  int borrow_fd_do_not_close() const;

 private:
  explicit NftSocket(mnl_socket* nl) : nl_(nl) {}
  void close_now();

  mnl_socket* nl_ = nullptr;
  NftSocketOptions options_;
  uint32_t portid_ = 0;
  size_t rcvbuf_ = 0;
  size_t sndbuf_ = 0;
  bool ext_ack_ = false;
  bool cap_ack_ = false;
};

}  // namespace ctoffload::netlink
