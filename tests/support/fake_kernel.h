// fake_kernel.h - the fake netlink kernel of the unit tests and fuzz
// targets, and a wrapper that injects the same faults into another
// transport (the netns fault tests), both behind netlink::Transport.
//
// FakeKernel simulates the socket side of a kernel: it records every
// datagram sent, hands it to the test's handler (which queues the answer:
// datagrams, or errnos in their place), hands the queue out one datagram a
// receive(), and shows, when told, each condition of the transport's errno
// table (transport.h): nothing queued (ETIMEDOUT), a datagram too big
// (EMSGSIZE), messages dropped (ENOBUFS), the socket gone (EBADF/ENOTSOCK
// until reopen()), an interrupted call (EINTR), a send that fails with
// some other errno.  What a kernel answers to what is the test's own: that
// logic lives in the handler.  A test that decides faults datagram by
// datagram sets them from on_send, which sees every datagram before the
// faults do; on_read sees what the client read.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <span>
#include <vector>

#include "netlink/transport.h"

namespace ctoffload::testing {

using Bytes = std::vector<unsigned char>;

// The datagram 'iov' sends: its parts, concatenated.
Bytes flatten(std::span<const iovec> iov);

// Sets NLM_F_DUMP_INTR on every message of 'datagram' (a kernel whose dump
// was interrupted by a change: its sequence counter moved under the dump).
// Returns 'datagram'.
Bytes dump_interrupted(Bytes datagram);

class FakeKernel : public netlink::Transport {
 public:
  // One entry of the receive queue: a datagram, or an errno in its place.
  struct Datagram {
    Bytes bytes;
    int err = 0;
  };

  FakeKernel() = default;
  FakeKernel(const FakeKernel&) = delete;
  FakeKernel& operator=(const FakeKernel&) = delete;

  // The kernel: called with each datagram that reaches it (already in
  // 'requests'); queues the answer with push()/push_error().
  std::function<void(const Bytes& datagram, FakeKernel& k)> on_request;
  // Called by every receive() before it looks at the queue: a kernel that
  // answers as it is read queues here.
  std::function<void(FakeKernel& k)> on_receive;
  // Called by every send() with its datagram before any fault below is
  // looked at, whether the datagram then arrives or not: a test that
  // checks every datagram the client tries to send, or whose faults depend
  // on the datagram, does it here (setting a fault for this very send).
  std::function<void(const Bytes& datagram, FakeKernel& k)> on_send;
  // Called with each queued datagram a receive() hands out, as the client
  // gets it (not with one too big for the buffer: that one is lost).
  std::function<void(const Bytes& datagram, FakeKernel& k)> on_read;

  // The socket (portid(), max_send_bytes(), receive_buffer_bytes()).  A
  // datagram over 'max_send' is refused with EMSGSIZE and never arrives.
  uint32_t port = 0;
  size_t max_send = size_t{1} << 20;
  size_t rcvbuf = size_t{4} << 20;

  // Faults, as the errno table has them.
  Status send_error;           // every send fails with it (when not ok); nothing arrives
  bool eintr_send = false;     // the next send is interrupted: EINTR, nothing arrives
  int fail_next_send = 0;      // the next send fails with this errno (when not 0); nothing arrives
  bool eintr_receive = false;  // the next receive is interrupted: EINTR, nothing read
  bool overrun = false;        // messages were dropped: the next receive says ENOBUFS
  int gone = 0;                // EBADF/ENOTSOCK: send and receive fail with it until reopen()
  int gone_after_send = 0;     // 'gone' becomes this right after the next datagram arrives:
                               // the kernel acts on it, its answer is lost
  int reopen_errno = 0;        // reopen() fails with it, and the socket stays gone

  // What happened.
  std::vector<Bytes> requests;  // every datagram that arrived, in order
  std::deque<Datagram> queue;   // what receive() hands out next
  size_t reopens = 0;           // reopen() calls

  void push(Bytes datagram) { queue.push_back(Datagram{std::move(datagram), 0}); }
  void push_error(int err) { queue.push_back(Datagram{{}, err}); }

  using Transport::send;
  Status send(std::span<const iovec> iov) override;
  Result<size_t> receive(std::span<std::byte> buf, int timeout_ms) override;
  uint32_t portid() const override { return port; }
  size_t max_send_bytes() const override { return max_send; }
  size_t receive_buffer_bytes() const override { return rcvbuf; }
  // A fresh socket: the queue is dropped and the socket is no longer gone.
  Status reopen() override;

 protected:
  // Where a datagram goes once no fault stopped it: to 'requests' and the
  // handler.
  virtual Status deliver(std::span<const iovec> iov);
  // What receive() returns when nothing is queued: ETIMEDOUT.
  virtual Result<size_t> receive_idle(std::span<std::byte> buf, int timeout_ms);
};

// A transport in front of another one ('real', not owned) that passes every
// call through, and injects the faults of FakeKernel in between: a queued
// datagram or errno is handed out before the real socket is read.  The
// socket's numbers (portid() ...) are the real one's.  With no fault set it
// is a plain forwarder.
class FaultyTransport : public FakeKernel {
 public:
  explicit FaultyTransport(netlink::Transport& real) : real_(&real) {}

  uint32_t portid() const override { return real_->portid(); }
  size_t max_send_bytes() const override { return real_->max_send_bytes(); }
  size_t receive_buffer_bytes() const override { return real_->receive_buffer_bytes(); }
  // Drops what this wrapper had queued, then reopens the real socket.
  Status reopen() override;

 protected:
  Status deliver(std::span<const iovec> iov) override { return real_->send(iov); }
  Result<size_t> receive_idle(std::span<std::byte> buf, int timeout_ms) override {
    return real_->receive(buf, timeout_ms);
  }

 private:
  netlink::Transport* real_;
};

}  // namespace ctoffload::testing
