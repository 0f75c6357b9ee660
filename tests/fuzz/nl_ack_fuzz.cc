// nl_ack_fuzz.cc - fuzzes the decoder of nf_tables (and every netlink)
// acknowledgements and errors.
//
// Feeds: the input as one netlink datagram.  Each message in it (walked as
// the library's readers walk one) goes to netlink::parse_kernel_ack()
// (src/netlink/nl_error.h), once with the message's own length and once
// with every byte to the end of the datagram; the whole input also goes in
// as one message of its own length.  Then through kernel_status(), as
// nft_txn.cc and ctnetlink.cc use it.
//
// Checks, beyond not crashing:
//   * only NLMSG_ERROR messages long enough for a struct nlmsgerr, whose
//     error field is an errno (|error| <= 4095, MAX_ERRNO), are accepted;
//     everything else is EBADMSG;
//   * an accepted ack carries the message's sequence number and the
//     magnitude of its error field as a positive errno (0 for an ack);
//   * bytes after the message do not change the result;
//   * the extended-ack text holds no NUL and does not end in a newline or
//     a space; it is only read when NLM_F_ACK_TLVS is set;
//   * kernel_status() is ok exactly for errno 0, otherwise carries that
//     errno and a message that starts with what it was given, contains
//     errno_name(), and ends with the extended-ack text when there is one.
#include <libmnl/libmnl.h>
#include <linux/netlink.h>

#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "netlink/nl_error.h"

namespace {

using namespace ctoffload;
using namespace ctoffload::netlink;

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

void check_ack(const nlmsghdr* nlh, size_t len) {
  Result<KernelAck> r = parse_kernel_ack(nlh, len);
  bool acceptable = len >= NLMSG_HDRLEN && nlh->nlmsg_len <= len && nlh->nlmsg_type == NLMSG_ERROR &&
                    nlh->nlmsg_len >= NLMSG_HDRLEN + sizeof(nlmsgerr);
  if (acceptable) {
    int code;
    std::memcpy(&code, static_cast<const char*>(mnl_nlmsg_get_payload(nlh)), sizeof code);
    acceptable = code >= -4095 && code <= 4095;
  }
  if (!r) {
    FUZZ_CHECK(r.err() == EBADMSG, "parse_kernel_ack errno %d", r.err());
    FUZZ_CHECK(!acceptable, "a well-formed NLMSG_ERROR was refused: %s", r.message().c_str());
    return;
  }
  FUZZ_CHECK(acceptable, "accepted type %u of %u bytes (buffer %zu)", nlh->nlmsg_type, nlh->nlmsg_len, len);
  const KernelAck& ack = *r;
  const auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
  FUZZ_CHECK(ack.seq == nlh->nlmsg_seq, "seq %u for a message of seq %u", ack.seq, nlh->nlmsg_seq);
  FUZZ_CHECK(ack.err >= 0, "negative errno %d", ack.err);
  FUZZ_CHECK(ack.err == (e->error < 0 ? -e->error : e->error), "errno %d for error field %d", ack.err, e->error);
  FUZZ_CHECK(ack.extack_msg.find('\0') == std::string::npos, "extack text holds a NUL");
  FUZZ_CHECK(ack.extack_msg.empty() || (ack.extack_msg.back() != '\n' && ack.extack_msg.back() != ' '),
             "extack text ends in whitespace");
  if ((nlh->nlmsg_flags & NLM_F_ACK_TLVS) == 0) {
    FUZZ_CHECK(ack.extack_msg.empty() && !ack.extack_offset, "extack read without NLM_F_ACK_TLVS");
  }

  // The rest of the buffer does not matter.
  Result<KernelAck> own = parse_kernel_ack(nlh, nlh->nlmsg_len);
  FUZZ_CHECK(own.ok() && own->seq == ack.seq && own->err == ack.err && own->extack_msg == ack.extack_msg &&
                 own->extack_offset == ack.extack_offset,
             "the result depends on bytes after the message");
  // One byte short of the message is refused.
  FUZZ_CHECK(!parse_kernel_ack(nlh, nlh->nlmsg_len - 1).ok(), "a buffer shorter than nlmsg_len was accepted");

  Status st = kernel_status(ack, "add element to set s4");
  if (ack.err == 0) {
    FUZZ_CHECK(st.ok(), "errno 0 gave a failure");
    return;
  }
  FUZZ_CHECK(!st.ok() && st.err() == ack.err, "kernel_status errno %d for %d", st.err(), ack.err);
  const std::string& m = st.message();
  FUZZ_CHECK(m.rfind("add element to set s4: ", 0) == 0, "message '%s'", m.c_str());
  FUZZ_CHECK(m.find("(" + errno_name(ack.err) + ")") != std::string::npos, "message '%s' lacks the errno name",
             m.c_str());
  if (!ack.extack_msg.empty()) {
    FUZZ_CHECK(ends_with(m, " \u2014 kernel: " + ack.extack_msg), "message '%s' lacks the extack", m.c_str());
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 256 * 1024) return -1;
  fuzz::for_each_message({data, size}, [](const nlmsghdr* nlh, size_t rest) { check_ack(nlh, rest); });
  // The whole input as one message, whatever its nlmsg_len says.
  std::vector<uint32_t> aligned(size / 4 + 1);
  if (size > 0) std::memcpy(aligned.data(), data, size);
  if (size >= NLMSG_HDRLEN) check_ack(reinterpret_cast<const nlmsghdr*>(aligned.data()), size);
  (void)parse_kernel_ack(nullptr, size);
  return 0;
}
