// link_fuzz.cc - fuzzes the decoder of rtnetlink link notifications.
//
// Feeds: the input as one datagram of the link monitor's socket.  Each
// RTM_NEWLINK/RTM_DELLINK message in it (walked as LinkMonitor::drain()
// walks one) goes to netlink::parse_link_message() (src/netlink/link.h),
// once with its own length and once with every byte to the end of the
// datagram; every other message, and the whole input as one message, goes
// in too (the parser must refuse them cleanly).
//
// Checks, beyond not crashing:
//   * only RTM_NEWLINK/RTM_DELLINK messages with an ifindex > 0 are
//     accepted; refusals are EBADMSG or EINVAL;
//   * an accepted message reports the header's type, family, ifindex and
//     flags, and a name without NUL shorter than IFNAMSIZ;
//   * bytes after the message do not change the result;
//   * round trip: the decoded message encoded again (ifinfomsg plus
//     IFLA_IFNAME, with libmnl) decodes to the same message.
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <net/if.h>

#include <cstring>
#include <vector>

#include "fuzz_support.h"
#include "netlink/link.h"

namespace {

using namespace ctoffload;
using netlink::LinkMessage;

bool same(const LinkMessage& a, const LinkMessage& b) {
  return a.type == b.type && a.family == b.family && a.ifindex == b.ifindex && a.name == b.name && a.flags == b.flags;
}

std::vector<uint32_t> encode(const LinkMessage& m) {
  std::vector<uint32_t> buf(256);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = m.type;
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifi->ifi_family = m.family;
  ifi->ifi_index = m.ifindex;
  ifi->ifi_flags = m.flags;
  if (!m.name.empty()) mnl_attr_put_strz(nlh, IFLA_IFNAME, m.name.c_str());
  mnl_attr_put_u32(nlh, IFLA_MTU, 1500);  // Something the decoder ignores.
  buf.resize((nlh->nlmsg_len + 3) / 4);
  return buf;
}

void check_message(const nlmsghdr* nlh, size_t len) {
  auto r = netlink::parse_link_message(nlh, len);
  if (!r) {
    FUZZ_CHECK(r.err() == EBADMSG || r.err() == EINVAL, "errno %d: %s", r.err(), r.message().c_str());
    return;
  }
  const LinkMessage& m = *r;
  FUZZ_CHECK(len >= NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(ifinfomsg)) && nlh->nlmsg_len <= len,
             "accepted a message of %u bytes in %zu", nlh->nlmsg_len, len);
  const auto* ifi = static_cast<const ifinfomsg*>(mnl_nlmsg_get_payload(nlh));
  FUZZ_CHECK(m.type == nlh->nlmsg_type && (m.type == RTM_NEWLINK || m.type == RTM_DELLINK), "type %u", m.type);
  FUZZ_CHECK(m.ifindex == ifi->ifi_index && m.ifindex > 0, "ifindex %d", m.ifindex);
  FUZZ_CHECK(m.family == ifi->ifi_family && m.flags == ifi->ifi_flags, "family or flags differ from the header");
  FUZZ_CHECK(m.name.size() < IFNAMSIZ && m.name.find('\0') == std::string::npos, "name of %zu bytes", m.name.size());

  auto own = netlink::parse_link_message(nlh, nlh->nlmsg_len);
  FUZZ_CHECK(own.ok() && same(*own, m), "the result depends on bytes after the message");
  const std::vector<uint32_t> again = encode(m);
  auto back = netlink::parse_link_message(again.data(), again.size() * 4);
  FUZZ_CHECK(back.ok(), "the message encoded again does not decode: %s", back.message().c_str());
  FUZZ_CHECK(same(*back, m), "the message encoded again decodes to another message");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return -1;
  fuzz::for_each_message({data, size}, [](const nlmsghdr* nlh, size_t rest) {
    check_message(nlh, nlh->nlmsg_len);
    check_message(nlh, rest);
  });
  std::vector<uint32_t> aligned(size / 4 + 1);
  if (size > 0) std::memcpy(aligned.data(), data, size);
  if (size >= NLMSG_HDRLEN) check_message(reinterpret_cast<const nlmsghdr*>(aligned.data()), size);
  FUZZ_CHECK(!netlink::parse_link_message(nullptr, size).ok(), "a null message was accepted");
  return 0;
}
