// request.h - the one request/answer engine of the netlink clients.
//
// Every client that asks the kernel one question and reads its answer (the
// nf_tables reads of nft_layout.h, ctnetlink.h's get, delete and dump, the
// route lookups of route.h) goes through request_run(): it sends the
// request over a Transport (transport.h), reads datagrams until the
// kernel's last word on that request, hands every other message of the
// answer to the caller, and turns the kernel's errors into Status values
// (nl_error.h) with the kernel's extended-ack text.
//
// The answer ends with, and request_run() reports:
//   NLMSG_ERROR, error 0   an acknowledgement.  It ends a request that is
//                          not a dump; for a dump (NLM_F_DUMP) it is
//                          skipped and NLMSG_DONE ends the answer.
//   NLMSG_ERROR, errno     the kernel refused the request: that errno, with
//                          the extended-ack message.
//   NLMSG_DONE, 0          the end of a dump.
//   NLMSG_DONE, errno      the dump failed part way (the kernel's dump
//                          callback returned an error): that errno, with
//                          the extended-ack message when the kernel sent
//                          one.  Never dropped.
// Messages of other requests (another sequence number, or another port id
// when both are known) are skipped, as are NLMSG_NOOP and NLMSG_OVERRUN.
//
// A dump whose messages carry NLM_F_DUMP_INTR (the kernel saw what it walks
// change between two parts of the dump: nf_tables flags this when its
// ruleset generation moved) is still read to its end, every message handed
// over, and then reported: EINTR, unless the caller said it takes such a
// dump as it is (RequestIo::interrupted).
//
// Return convention: a Status that is ok, or a positive errno with a
// message (nl_error.h).  Nothing here throws.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <string_view>

#include "ctoffload/result.h"
#include "netlink/transport.h"

struct nlmsghdr;

namespace ctoffload::netlink {

// Called with each message of the answer that is not a control message,
// and which spans m->nlmsg_len readable bytes.  An error it returns is
// kept (the first one only: later messages are not handed over) and the
// rest of the answer is still read, so that the socket holds nothing of
// this request afterwards.
using OnAnswer = std::function<Status(const nlmsghdr* m)>;

// How request_run() reads.
struct RequestIo {
  // Where datagrams are received; large enough for the kernel's biggest
  // (dumps write up to 32 KiB, sets of big elements more).
  std::span<std::byte> buf;
  // How long each receive waits (Transport::receive: negative waits as
  // long as it takes).
  int timeout_ms = 5000;
  // Names the request in kernel errors: "what: strerror (ENAME) — kernel: ...".
  std::string_view what;
  // Null: an interrupted dump (NLM_F_DUMP_INTR) is EINTR.  Otherwise the
  // dump is accepted as the kernel gave it and *interrupted says whether it
  // was (for dumps of things that move all the time, where a consistent
  // snapshot cannot be had, as `nft list set` and `conntrack -L` take them).
  bool* interrupted = nullptr;
};

// Sends 'req' over 't' as one datagram and reads the answer (see the top
// of this file).  'req' carries the caller's sequence number; NLM_F_REQUEST
// is set and the port id cleared here.  When 'delivered' is not null it is
// set once a message was handed to 'on_answer'.
//
// Returns ok; the kernel's errno from NLMSG_ERROR or NLMSG_DONE; the first
// error 'on_answer' returned; EINTR for an interrupted dump (see above);
// EBADMSG for a malformed NLMSG_ERROR or
// NLMSG_DONE or a datagram that ends in a truncated message; or the
// transport's errno (transport.h's table: ETIMEDOUT, ENOBUFS, EMSGSIZE,
// EBADF/ENOTSOCK, ...), with 'io.what' as context.  After a transport error
// the socket may still hold part of the answer.
[[nodiscard]] Status request_run(Transport& t, nlmsghdr* req, const RequestIo& io, const OnAnswer& on_answer,
                                 bool* delivered = nullptr);

// How many of the 'len' bytes at 'buf' are whole netlink messages, from
// the start (each nlmsg_len at least a header and within what is left).
// libmnl compares lengths as signed ints, so a datagram is framed with this
// before it is walked.
size_t framed_length(const std::byte* buf, size_t len);

// Whether all the 'len' bytes at 'buf' are whole netlink messages.
bool well_framed(const std::byte* buf, size_t len);

}  // namespace ctoffload::netlink
