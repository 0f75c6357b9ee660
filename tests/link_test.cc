// link_test.cc - link messages and ethtool tables, decoded without a kernel.
//
// Link notifications are built here with libmnl and decoded with
// parse_link_message(); ethtool string tables and feature blocks are laid
// out as SIOCETHTOOL returns them.
#include "netlink/link.h"

#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <sys/socket.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace ctoffload::netlink {
namespace {

struct LinkSpec {
  uint16_t type = RTM_NEWLINK;
  uint8_t family = AF_UNSPEC;
  int ifindex = 5;
  unsigned flags = IFF_UP | IFF_RUNNING;
  const char* name = "veth0";  // nullptr: no IFLA_IFNAME.
  bool extra = false;          // Add attributes the decoder does not read.
};

std::vector<unsigned char> build_link(const LinkSpec& s) {
  std::vector<unsigned char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = s.type;
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifi->ifi_family = s.family;
  ifi->ifi_index = s.ifindex;
  ifi->ifi_flags = s.flags;
  if (s.extra) {
    mnl_attr_put_u32(nlh, IFLA_MTU, 1500);
    mnl_attr_put_u32(nlh, 500, 1);  // Beyond any IFLA_MAX.
  }
  if (s.name != nullptr) mnl_attr_put_strz(nlh, IFLA_IFNAME, s.name);
  if (s.extra) mnl_attr_put_strz(nlh, IFLA_QDISC, "noqueue");
  buf.resize(nlh->nlmsg_len);
  return buf;
}

TEST(LinkParse, NewLinkGivesIndexNameAndFlags) {
  auto msg = build_link(LinkSpec{});
  auto m = parse_link_message(msg.data(), msg.size());
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_EQ(m->type, RTM_NEWLINK);
  EXPECT_EQ(m->family, AF_UNSPEC);
  EXPECT_EQ(m->ifindex, 5);
  EXPECT_EQ(m->name, "veth0");
  EXPECT_EQ(m->flags, static_cast<uint32_t>(IFF_UP | IFF_RUNNING));
}

TEST(LinkParse, DelLinkIsRecognised) {
  LinkSpec s;
  s.type = RTM_DELLINK;
  s.ifindex = 77;
  s.name = "eth9";
  auto msg = build_link(s);
  auto m = parse_link_message(msg.data(), msg.size());
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_EQ(m->type, RTM_DELLINK);
  EXPECT_EQ(m->ifindex, 77);
  EXPECT_EQ(m->name, "eth9");
}

TEST(LinkParse, BridgePortNotificationKeepsItsFamily) {
  LinkSpec s;
  s.family = AF_BRIDGE;
  auto msg = build_link(s);
  auto m = parse_link_message(msg.data(), msg.size());
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_EQ(m->family, AF_BRIDGE);
}

TEST(LinkParse, UnknownAttributesAreIgnored) {
  LinkSpec s;
  s.extra = true;
  auto msg = build_link(s);
  auto m = parse_link_message(msg.data(), msg.size());
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_EQ(m->name, "veth0");
}

TEST(LinkParse, MessageWithoutNameHasAnEmptyName) {
  LinkSpec s;
  s.name = nullptr;
  auto msg = build_link(s);
  auto m = parse_link_message(msg.data(), msg.size());
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_TRUE(m->name.empty());
}

TEST(LinkParse, LongestValidNameIsAccepted) {
  LinkSpec s;
  s.name = "abcdefghijklmno";  // IFNAMSIZ - 1 characters.
  auto msg = build_link(s);
  auto m = parse_link_message(msg.data(), msg.size());
  ASSERT_TRUE(m.ok()) << m.message();
  EXPECT_EQ(m->name, "abcdefghijklmno");
}

TEST(LinkParse, NameLongerThanIfnamsizReturnsEinval) {
  LinkSpec s;
  s.name = "abcdefghijklmnopqrstuvwxyz";
  auto msg = build_link(s);
  EXPECT_EQ(parse_link_message(msg.data(), msg.size()).err(), EINVAL);
}

TEST(LinkParse, NameWithoutNulReturnsEinval) {
  std::vector<unsigned char> buf(MNL_SOCKET_BUFFER_SIZE);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = RTM_NEWLINK;
  auto* ifi = static_cast<ifinfomsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(ifinfomsg)));
  ifi->ifi_index = 3;
  mnl_attr_put(nlh, IFLA_IFNAME, 4, "eth0");  // No terminating NUL.
  buf.resize(nlh->nlmsg_len);
  EXPECT_EQ(parse_link_message(buf.data(), buf.size()).err(), EINVAL);
}

TEST(LinkParse, InvalidIfindexOrTypeReturnsEinval) {
  LinkSpec s;
  s.ifindex = 0;
  auto msg = build_link(s);
  EXPECT_EQ(parse_link_message(msg.data(), msg.size()).err(), EINVAL);
  s.ifindex = 4;
  s.type = RTM_NEWADDR;
  msg = build_link(s);
  EXPECT_EQ(parse_link_message(msg.data(), msg.size()).err(), EINVAL);
}

TEST(LinkParse, EveryTruncationIsRefusedWithoutCrashing) {
  LinkSpec s;
  s.extra = true;
  const auto full = build_link(s);
  for (size_t cut = 0; cut < full.size(); ++cut) {
    std::vector<unsigned char> m(full.begin(), full.begin() + static_cast<long>(cut));
    EXPECT_EQ(parse_link_message(m.data(), m.size()).err(), EBADMSG) << "cut at " << cut;
    if (cut >= NLMSG_HDRLEN) {
      reinterpret_cast<nlmsghdr*>(m.data())->nlmsg_len = static_cast<uint32_t>(cut);
      auto r = parse_link_message(m.data(), m.size());
      // A cut that falls between attributes leaves a shorter valid message.
      if (!r.ok()) {
        EXPECT_TRUE(r.err() == EBADMSG || r.err() == EINVAL) << "cut at " << cut;
      }
    }
  }
  EXPECT_EQ(parse_link_message(nullptr, 0).err(), EBADMSG);
}

TEST(LinkParse, RandomCorruptionNeverCrashes) {
  LinkSpec s;
  s.extra = true;
  const auto full = build_link(s);
  std::mt19937 rng(777);
  for (int i = 0; i < 20000; ++i) {
    auto m = full;
    m[4 + rng() % (m.size() - 4)] = static_cast<unsigned char>(rng());
    auto r = parse_link_message(m.data(), m.size());
    if (!r.ok()) {
      EXPECT_TRUE(r.err() == EBADMSG || r.err() == EINVAL) << r.message();
    }
  }
}

// ------------------------------------------------------------------------
// ethtool tables
// ------------------------------------------------------------------------

// An ETH_SS_FEATURES-like table of 'names', each NUL-padded to 32 bytes.
std::vector<char> string_table(const std::vector<std::string>& names) {
  std::vector<char> t(names.size() * kEthtoolStringLen, '\0');
  for (size_t i = 0; i < names.size(); ++i) {
    std::memcpy(t.data() + i * kEthtoolStringLen, names[i].data(), std::min(names[i].size(), kEthtoolStringLen));
  }
  return t;
}

TEST(EthtoolStrings, FindsTheIndexOfANamedFeature) {
  auto t = string_table({"tx-scatter-gather", "tx-checksum-ipv4", "rx-gro", "hw-tc-offload", "rx-udp-gro-forwarding"});
  auto i = find_ethtool_string(t, 5, kHwTcOffloadFeature);
  ASSERT_TRUE(i.ok()) << i.message();
  EXPECT_EQ(*i, 3u);
  auto j = find_ethtool_string(t, 5, "tx-scatter-gather");
  ASSERT_TRUE(j.ok());
  EXPECT_EQ(*j, 0u);
}

TEST(EthtoolStrings, PrefixOfANameDoesNotMatch) {
  auto t = string_table({"hw-tc-offload-extra", "hw-tc"});
  EXPECT_EQ(find_ethtool_string(t, 2, kHwTcOffloadFeature).err(), ENOENT);
}

TEST(EthtoolStrings, NameFillingAllBytesWithoutNulIsRead) {
  const std::string full(kEthtoolStringLen, 'x');
  auto t = string_table({"a", full});
  auto i = find_ethtool_string(t, 2, full);
  ASSERT_TRUE(i.ok()) << i.message();
  EXPECT_EQ(*i, 1u);
}

TEST(EthtoolStrings, MissingNameReturnsEnoent) {
  auto t = string_table({"rx-gro"});
  EXPECT_EQ(find_ethtool_string(t, 1, kHwTcOffloadFeature).err(), ENOENT);
}

TEST(EthtoolStrings, TableShorterThanItsCountReturnsEinval) {
  auto t = string_table({"rx-gro", "hw-tc-offload"});
  EXPECT_EQ(find_ethtool_string(std::span<const char>(t.data(), t.size() - 1), 2, "hw-tc-offload").err(), EINVAL);
}

TEST(EthtoolFeatures, StateOfABitIsReadFromItsBlock) {
  std::vector<FeatureBlock> blocks(2, FeatureBlock{0, 0, 0, 0});
  // Feature 40 lives in block 1, bit 8.
  blocks[1].available = 1u << 8;
  blocks[1].active = 1u << 8;
  blocks[1].requested = 1u << 8;
  blocks[0].available = 1u << 8;  // Feature 8: available, off, never changed.
  blocks[0].never_changed = 1u << 8;
  auto on = feature_state(blocks, 40);
  ASSERT_TRUE(on.ok()) << on.message();
  EXPECT_TRUE(on->available);
  EXPECT_TRUE(on->active);
  EXPECT_TRUE(on->requested);
  EXPECT_FALSE(on->fixed);
  auto off = feature_state(blocks, 8);
  ASSERT_TRUE(off.ok());
  EXPECT_TRUE(off->available);
  EXPECT_FALSE(off->active);
  EXPECT_TRUE(off->fixed);
  auto none = feature_state(blocks, 41);  // Not available: fixed (off).
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->available || none->active || none->requested);
  EXPECT_TRUE(none->fixed);
}

TEST(EthtoolFeatures, IndexPastTheBlocksReturnsEinval) {
  std::vector<FeatureBlock> blocks(2, FeatureBlock{~0u, ~0u, ~0u, ~0u});
  EXPECT_EQ(feature_state(blocks, 64).err(), EINVAL);
  EXPECT_EQ(feature_state({}, 0).err(), EINVAL);
}

TEST(LinkEvents, NamesAreStable) {
  EXPECT_EQ(link_event_name(LinkEventType::kAdded), "added");
  EXPECT_EQ(link_event_name(LinkEventType::kRemoved), "removed");
  EXPECT_EQ(link_event_name(LinkEventType::kChanged), "changed");
}

// Opening a route socket needs no privilege; these checks are made before
// anything is asked of the kernel.
TEST(LinkClientNames, EmptyOrOverlongNameReturnsEinval) {
  auto client = LinkClient::open();
  ASSERT_TRUE(client.ok()) << client.message();
  EXPECT_EQ(client->ifindex("").err(), EINVAL);
  EXPECT_EQ(client->ifindex("abcdefghijklmnop").err(), EINVAL);  // 16 bytes.
  EXPECT_EQ(client->hw_tc_offload("abcdefghijklmnop").err(), EINVAL);
  EXPECT_EQ(client->name(0).err(), EINVAL);
  EXPECT_EQ(client->name(-3).err(), EINVAL);
}

}  // namespace
}  // namespace ctoffload::netlink
