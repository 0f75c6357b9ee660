// nl_error.h - the one place where netlink errors become Status values.
//
// Convention, stated once: the kernel answers a request with an NLMSG_ERROR
// message whose 'error' field is 0 (an acknowledgement) or a negative errno.
// Everything in src/netlink turns that into a ctoffload::Status with the
// positive errno and a message of the form
//
//   "add element to set sel4: File exists (EEXIST) — kernel: <extack text>"
//
// where the part after the dash is the kernel's extended-ack message
// (NETLINK_EXT_ACK, NLMSGERR_ATTR_MSG) and is left out when the kernel sent
// none.  Extended-ack attributes this code does not know are ignored, so a
// newer kernel that sends more of them keeps working.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "ctoffload/result.h"
#include "errno_text.h"
#include "netlink/transport.h"

struct nlmsghdr;

namespace ctoffload::netlink {

// One NLMSG_ERROR message from the kernel, decoded.
struct KernelAck {
  // Sequence number of the request this answers.
  uint32_t seq = 0;
  // Positive errno; 0 for a plain acknowledgement.
  int err = 0;
  // NLMSGERR_ATTR_MSG: the kernel's explanation, empty when it sent none.
  std::string extack_msg;
  // NLMSGERR_ATTR_OFFS: byte offset of the offending attribute, counted from
  // the first byte of the request's nlmsghdr.
  std::optional<uint32_t> extack_offset;
};

// The largest errno the kernel returns (its MAX_ERRNO): a netlink error
// code beyond it is no errno, and INT_MIN cannot even be negated.
inline constexpr int kMaxErrno = 4095;

// Decodes the NLMSG_ERROR message 'nlh', which must span 'len' readable
// bytes.  Handles acks with and without NLM_F_CAPPED (NETLINK_CAP_ACK) and
// with or without NLM_F_ACK_TLVS.  Returns EBADMSG when 'nlh' is not an
// NLMSG_ERROR message, is too short to hold a struct nlmsgerr, or carries
// an error code beyond kMaxErrno either way; malformed
// or unknown extended-ack attributes are ignored (the errno still counts).
[[nodiscard]] Result<KernelAck> parse_kernel_ack(const nlmsghdr* nlh, size_t len);

// Decodes the NLMSG_DONE message 'nlh' ending a dump, which must span 'len'
// readable bytes, as a KernelAck: 'err' is the errno the dump ended with (0
// when it completed, or when the message is too short to carry one, as from
// kernels that sent a bare NLMSG_DONE), with the extended-ack message when
// the kernel sent one (NLM_F_ACK_TLVS, after the errno).  Returns EBADMSG
// when 'nlh' is not an NLMSG_DONE message or carries an error code beyond
// kMaxErrno either way.
[[nodiscard]] Result<KernelAck> parse_kernel_done(const nlmsghdr* nlh, size_t len);

// The symbolic name of 'err' ("EEXIST"), or "errno N" when it has none
// (errno_text.h).
using ctoffload::errno_name;

// The Status for kernel error 'err' (positive) on the request described by
// 'what': "what: strerror (ENAME)" plus " — kernel: extack" when 'extack'
// is not empty.  'err' 0 gives success.
Status kernel_status(int err, std::string_view what, std::string_view extack = {});

// The same for a decoded ack.
Status kernel_status(const KernelAck& ack, std::string_view what);

// The Status for a failed system call or library call that set errno 'err':
// "what: strerror (ENAME)".  'err' 0 gives success.
Status errno_status(int err, std::string_view what);

}  // namespace ctoffload::netlink
