// nft_socket.cc - NETLINK_NETFILTER socket on libmnl.
#include "netlink/nft_socket.h"

#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <climits>
#include <string>
#include <utility>

#include "log.h"
#include "netlink/nl_error.h"

namespace ctoffload::netlink {
namespace {

// Sets an int socket option; returns errno or 0.
int set_int_option(int fd, int level, int name, int value) {
  return setsockopt(fd, level, name, &value, sizeof(value)) == 0 ? 0 : errno;
}

// Reads back an int socket option; 0 when it cannot be read.
size_t get_int_option(int fd, int level, int name) {
  int value = 0;
  socklen_t len = sizeof(value);
  if (getsockopt(fd, level, name, &value, &len) != 0 || value < 0) return 0;
  return static_cast<size_t>(value);
}

// Asks for a buffer of 'bytes': forced when privileged (beyond the sysctl
// limit), else the ordinary option, which the kernel caps at the sysctl.
void set_buffer(int fd, int force_name, int name, size_t bytes) {
  const int value = bytes > static_cast<size_t>(INT_MAX / 2) ? INT_MAX / 2 : static_cast<int>(bytes);
  if (set_int_option(fd, SOL_SOCKET, force_name, value) == 0) return;
  (void)set_int_option(fd, SOL_SOCKET, name, value);  // Capped by the sysctl; best effort.
}

}  // namespace

Status NftSocket::reopen() {
  // Close first: see the header.
  close_now();
  auto fresh = open(options_);
  if (!fresh) return fresh.status().with_context("reopen NETLINK_NETFILTER socket");
  *this = std::move(*fresh);
  log::get("netlink")->info("nfnetlink socket reopened: portid {}", portid_);
  return {};
}

Result<NftSocket> NftSocket::open(const NftSocketOptions& options) {
  auto logger = log::get("netlink");
  mnl_socket* nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
  if (nl == nullptr) return errno_status(errno, "open NETLINK_NETFILTER socket");
  NftSocket sock(nl);
  sock.options_ = options;
  const int fd = mnl_socket_get_fd(nl);

  // Both options must be set before any request is sent: they change the
  // shape of every ack.  Old kernels lack them; we then lose detail only.
  if (int err = set_int_option(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1); err == 0) {
    sock.ext_ack_ = true;
  } else {
    logger->warn("NETLINK_EXT_ACK not available ({}): kernel errors will come without explanations", errno_name(err));
  }
  if (int err = set_int_option(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1); err == 0) {
    sock.cap_ack_ = true;
  } else {
    logger->info("NETLINK_CAP_ACK not available ({}): error acks will echo whole requests", errno_name(err));
  }
  set_buffer(fd, SO_RCVBUFFORCE, SO_RCVBUF, options.receive_buffer_bytes);
  set_buffer(fd, SO_SNDBUFFORCE, SO_SNDBUF, options.send_buffer_bytes);
  sock.rcvbuf_ = get_int_option(fd, SOL_SOCKET, SO_RCVBUF);
  sock.sndbuf_ = get_int_option(fd, SOL_SOCKET, SO_SNDBUF);

  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    return errno_status(errno, "bind NETLINK_NETFILTER socket");
  }
  sock.portid_ = mnl_socket_get_portid(nl);
  logger->debug("nfnetlink socket open: portid {}, rcvbuf {}, sndbuf {}, ext_ack {}, cap_ack {}", sock.portid_,
                sock.rcvbuf_, sock.sndbuf_, sock.ext_ack_, sock.cap_ack_);
  return sock;
}

NftSocket::NftSocket(NftSocket&& other) noexcept
    : nl_(std::exchange(other.nl_, nullptr)),
      options_(other.options_),
      portid_(other.portid_),
      rcvbuf_(other.rcvbuf_),
      sndbuf_(other.sndbuf_),
      ext_ack_(other.ext_ack_),
      cap_ack_(other.cap_ack_) {}

NftSocket& NftSocket::operator=(NftSocket&& other) noexcept {
  if (this != &other) {
    close_now();
    nl_ = std::exchange(other.nl_, nullptr);
    options_ = other.options_;
    portid_ = other.portid_;
    rcvbuf_ = other.rcvbuf_;
    sndbuf_ = other.sndbuf_;
    ext_ack_ = other.ext_ack_;
    cap_ack_ = other.cap_ack_;
  }
  return *this;
}

NftSocket::~NftSocket() { close_now(); }

void NftSocket::close_now() {
  if (nl_ != nullptr) mnl_socket_close(std::exchange(nl_, nullptr));
}

int NftSocket::borrow_fd_do_not_close() const { return nl_ != nullptr ? mnl_socket_get_fd(nl_) : -1; }

size_t NftSocket::max_send_bytes() const {
  // netlink_sendmsg() refuses a datagram longer than sk_sndbuf - 32 (the
  // value getsockopt reports is sk_sndbuf itself).
  return sndbuf_ > 32 ? sndbuf_ - 32 : 0;
}

Status NftSocket::send(std::span<const iovec> iov) {
  if (nl_ == nullptr) return Status::error(EBADF, "send to nfnetlink: socket is closed");
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  msghdr msg{};
  msg.msg_name = &kernel;
  msg.msg_namelen = sizeof(kernel);
  msg.msg_iov = const_cast<iovec*>(iov.data());  // sendmsg does not write through it.
  msg.msg_iovlen = iov.size();
  const int fd = mnl_socket_get_fd(nl_);
  for (;;) {
    if (sendmsg(fd, &msg, 0) >= 0) return Status();
    if (errno != EINTR) return errno_status(errno, "send to nfnetlink");
  }
}

Result<size_t> NftSocket::receive(std::span<std::byte> buf, int timeout_ms) {
  if (nl_ == nullptr) return Status::error(EBADF, "receive from nfnetlink: socket is closed");
  const int fd = mnl_socket_get_fd(nl_);
  for (;;) {
    ssize_t n = recv(fd, buf.data(), buf.size(), MSG_DONTWAIT | MSG_TRUNC);
    if (n >= 0) {
      if (static_cast<size_t>(n) > buf.size()) {
        return Status::error(EMSGSIZE, "receive from nfnetlink: a " + std::to_string(n) +
                                           "-byte datagram did not fit the receive buffer");
      }
      return static_cast<size_t>(n);
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return errno_status(errno, "receive from nfnetlink");
    if (timeout_ms == 0) return Status::error(ETIMEDOUT, "receive from nfnetlink: nothing to read");
    pollfd pfd{fd, POLLIN, 0};
    int ready = poll(&pfd, 1, timeout_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return errno_status(errno, "poll nfnetlink socket");
    if (ready == 0) return Status::error(ETIMEDOUT, "receive from nfnetlink: timed out");
    timeout_ms = 0;  // Readable now: the next recv either succeeds or says why.
  }
}

}  // namespace ctoffload::netlink
