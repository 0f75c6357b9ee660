// nl_error.cc - decoding NLMSG_ERROR and mapping errno to Status.
#include "netlink/nl_error.h"

#include <libmnl/libmnl.h>
#include <linux/netlink.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "errno_text.h"

namespace ctoffload::netlink {
namespace {

// Collects the extended-ack attributes we understand; mnl_attr_parse calls
// it once per attribute.  Unknown types and malformed known ones are
// skipped rather than failing the whole ack.
int extack_attr_cb(const nlattr* attr, void* data) {
  auto* ack = static_cast<KernelAck*>(data);
  switch (mnl_attr_get_type(attr)) {
    case NLMSGERR_ATTR_MSG:
      if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0) {
        ack->extack_msg = mnl_attr_get_str(attr);
        // The kernel's messages end without punctuation; trailing
        // whitespace would only make the composed message ragged.
        while (!ack->extack_msg.empty() && (ack->extack_msg.back() == '\n' || ack->extack_msg.back() == ' ')) {
          ack->extack_msg.pop_back();
        }
      }
      break;
    case NLMSGERR_ATTR_OFFS:
      if (mnl_attr_validate(attr, MNL_TYPE_U32) == 0) ack->extack_offset = mnl_attr_get_u32(attr);
      break;
    default:
      break;  // Forward compatibility: ignore what we do not know.
  }
  return MNL_CB_OK;
}

}  // namespace

Result<KernelAck> parse_kernel_ack(const nlmsghdr* nlh, size_t len) {
  if (nlh == nullptr || len < NLMSG_HDRLEN || nlh->nlmsg_len > len || nlh->nlmsg_type != NLMSG_ERROR) {
    return Status::error(EBADMSG, "netlink ack: not an NLMSG_ERROR message");
  }
  if (nlh->nlmsg_len < NLMSG_HDRLEN + sizeof(nlmsgerr)) {
    return Status::error(EBADMSG, "netlink ack: NLMSG_ERROR too short for struct nlmsgerr");
  }
  const auto* err = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  KernelAck ack;
  ack.seq = nlh->nlmsg_seq;
  // The kernel's errnos are below 4096 (MAX_ERRNO); anything else is not a
  // kernel ack (and INT_MIN cannot even be negated).
  if (err->error < -kMaxErrno || err->error > kMaxErrno) {
    return Status::error(EBADMSG, "netlink ack: error code " + std::to_string(err->error) + " is not an errno");
  }
  ack.err = err->error < 0 ? -err->error : err->error;
  if ((nlh->nlmsg_flags & NLM_F_ACK_TLVS) == 0) return ack;

  // The TLVs follow the echoed request: only its header when the ack is
  // capped, the whole request otherwise.
  size_t tlv_offset = sizeof(nlmsgerr);
  if ((nlh->nlmsg_flags & NLM_F_CAPPED) == 0) {
    tlv_offset = sizeof(int) + NLMSG_ALIGN(err->msg.nlmsg_len);
  }
  if (tlv_offset >= mnl_nlmsg_get_payload_len(nlh)) return ack;
  // A malformed TLV stops the walk; what was read before it is kept and the
  // errno stands regardless.
  (void)mnl_attr_parse(nlh, static_cast<unsigned int>(tlv_offset), extack_attr_cb, &ack);
  return ack;
}

Result<KernelAck> parse_kernel_done(const nlmsghdr* nlh, size_t len) {
  if (nlh == nullptr || len < NLMSG_HDRLEN || nlh->nlmsg_len > len || nlh->nlmsg_type != NLMSG_DONE) {
    return Status::error(EBADMSG, "netlink dump end: not an NLMSG_DONE message");
  }
  KernelAck done;
  done.seq = nlh->nlmsg_seq;
  if (mnl_nlmsg_get_payload_len(nlh) < sizeof(int)) return done;
  int err = 0;
  std::memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof err);
  if (err < -kMaxErrno || err > kMaxErrno) {
    return Status::error(EBADMSG, "netlink dump end: NLMSG_DONE carries " + std::to_string(err) + ", not an errno");
  }
  done.err = err < 0 ? -err : err;
  if ((nlh->nlmsg_flags & NLM_F_ACK_TLVS) != 0 && mnl_nlmsg_get_payload_len(nlh) > sizeof(int)) {
    (void)mnl_attr_parse(nlh, sizeof(int), extack_attr_cb, &done);
  }
  return done;
}

Status kernel_status(int err, std::string_view what, std::string_view extack) {
  if (err == 0) return Status();
  std::string msg;
  msg.reserve(what.size() + extack.size() + 64);
  msg.append(what);
  msg.append(": ");
  msg.append(errno_text(err));
  msg.append(" (");
  msg.append(errno_name(err));
  msg.append(")");
  if (!extack.empty()) {
    msg.append(" \u2014 kernel: ");
    msg.append(extack);
  }
  return Status::error(err, std::move(msg));
}

Status kernel_status(const KernelAck& ack, std::string_view what) {
  return kernel_status(ack.err, what, ack.extack_msg);
}

Status errno_status(int err, std::string_view what) { return kernel_status(err, what, {}); }

}  // namespace ctoffload::netlink
