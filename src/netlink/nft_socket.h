// nft_socket.h - the netlink socket nf_tables transactions go through.
//
// NftSocket is the real Transport (transport.h) of the nf_tables clients, a
// NETLINK_NETFILTER socket on libmnl; it reports errors with transport.h's
// errno table.
//
// Return convention: a Status/Result that is ok, or a positive errno with a
// message (see nl_error.h).  Nothing here throws.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "ctoffload/result.h"
#include "netlink/transport.h"

struct mnl_socket;

namespace ctoffload::netlink {

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

  using Transport::send;
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
