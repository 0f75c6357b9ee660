// nft_layout_test.cc - the nf_tables objects of the nft_flowtable provider,
// built, serialised into netlink messages, decoded back with libnftnl and
// checked attribute by attribute.
#include "providers/nft_layout.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/flowtable.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <netinet/in.h>

#include <cstring>
#include <string>
#include <vector>

#include "test_support.h"

namespace ctoffload::nft {
namespace {

using netlink::ChainPtr;
using netlink::FlowtablePtr;
using netlink::RulePtr;
using netlink::SetPtr;
using netlink::TablePtr;

// Serialises with 'build' into a message of 'type' and returns the bytes.
template <typename Obj, typename Build>
std::vector<char> to_msg(uint16_t type, Obj* obj, Build build) {
  std::vector<char> buf(65536);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), type, NFPROTO_INET, 0, 1);
  build(nlh, obj);
  buf.resize(nlh->nlmsg_len);
  return buf;
}
const nlmsghdr* hdr(const std::vector<char>& m) { return reinterpret_cast<const nlmsghdr*>(m.data()); }

TablePtr round_trip(nftnl_table* t) {
  auto m = to_msg(NFT_MSG_NEWTABLE, t, nftnl_table_nlmsg_build_payload);
  TablePtr out = netlink::make_table();
  EXPECT_EQ(nftnl_table_nlmsg_parse(hdr(m), out.get()), 0);
  return out;
}
ChainPtr round_trip(nftnl_chain* c) {
  auto m = to_msg(NFT_MSG_NEWCHAIN, c, nftnl_chain_nlmsg_build_payload);
  ChainPtr out = netlink::make_chain();
  EXPECT_EQ(nftnl_chain_nlmsg_parse(hdr(m), out.get()), 0);
  return out;
}
FlowtablePtr round_trip(nftnl_flowtable* f) {
  auto m = to_msg(NFT_MSG_NEWFLOWTABLE, f, nftnl_flowtable_nlmsg_build_payload);
  FlowtablePtr out = netlink::make_flowtable();
  EXPECT_EQ(nftnl_flowtable_nlmsg_parse(hdr(m), out.get()), 0);
  return out;
}
SetPtr round_trip(nftnl_set* s) {
  auto m = to_msg(NFT_MSG_NEWSET, s, nftnl_set_nlmsg_build_payload);
  SetPtr out = netlink::make_set();
  EXPECT_EQ(nftnl_set_nlmsg_parse(hdr(m), out.get()), 0);
  return out;
}
RulePtr round_trip(nftnl_rule* r) {
  auto m = to_msg(NFT_MSG_NEWRULE, r, nftnl_rule_nlmsg_build_payload);
  RulePtr out = netlink::make_rule();
  EXPECT_EQ(nftnl_rule_nlmsg_parse(hdr(m), out.get()), 0);
  return out;
}
// Elements go through NEWSETELEM and come back in a set object.
SetPtr round_trip_elems(nftnl_set* s) {
  auto m = to_msg(NFT_MSG_NEWSETELEM, s, nftnl_set_elems_nlmsg_build_payload);
  SetPtr out = netlink::make_set();
  EXPECT_EQ(nftnl_set_elems_nlmsg_parse(hdr(m), out.get()), 0);
  return out;
}

// The string TLV 'type' of user data.
std::string udata_str(const void* data, uint32_t len, uint8_t type) {
  const char* bytes = static_cast<const char*>(data);
  const nftnl_udata* a;
  nftnl_udata_for_each_data(bytes, len, a) {
    if (nftnl_udata_type(a) == type) return std::string(static_cast<const char*>(nftnl_udata_get(a)));
  }
  return "<none>";
}

std::vector<nftnl_set_elem*> elems_of(nftnl_set* s) {
  std::vector<nftnl_set_elem*> v;
  nftnl_set_elem_foreach(
      s,
      [](nftnl_set_elem* e, void* d) -> int {
        static_cast<std::vector<nftnl_set_elem*>*>(d)->push_back(e);
        return 0;
      },
      &v);
  return v;
}

// One expression of a rule, as (name, attributes that matter).
struct Expr {
  std::string name;
  nftnl_expr* e;
};
std::vector<Expr> exprs_of(nftnl_rule* r) {
  std::vector<Expr> v;
  nftnl_expr_foreach(
      r,
      [](nftnl_expr* e, void* d) -> int {
        static_cast<std::vector<Expr>*>(d)->push_back(Expr{nftnl_expr_get_str(e, NFTNL_EXPR_NAME), e});
        return 0;
      },
      &v);
  return v;
}

std::string cmp_data(nftnl_expr* e) {
  uint32_t len = 0;
  const void* p = nftnl_expr_get(e, NFTNL_EXPR_CMP_DATA, &len);
  return std::string(static_cast<const char*>(p), len);
}

void expect_ct(const Expr& x, uint32_t key, int dir, uint32_t dreg) {
  ASSERT_EQ(x.name, "ct");
  EXPECT_EQ(nftnl_expr_get_u32(x.e, NFTNL_EXPR_CT_KEY), key);
  EXPECT_EQ(nftnl_expr_get_u32(x.e, NFTNL_EXPR_CT_DREG), dreg);
  if (dir < 0) {
    EXPECT_FALSE(nftnl_expr_is_set(x.e, NFTNL_EXPR_CT_DIR));
  } else {
    ASSERT_TRUE(nftnl_expr_is_set(x.e, NFTNL_EXPR_CT_DIR));
    EXPECT_EQ(nftnl_expr_get_u8(x.e, NFTNL_EXPR_CT_DIR), dir);
  }
}

LayoutOptions opts(const std::string& table = "ctoffload") {
  LayoutOptions o;
  o.table = table;
  return o;
}

// ---------------------------------------------------------------------------

TEST(NftLayout, TableIsInetWithTheOwnersComment) {
  TablePtr t = round_trip(build_table(opts("mytable")).get());
  EXPECT_STREQ(nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME), "mytable");
  EXPECT_EQ(nftnl_table_get_u32(t.get(), NFTNL_TABLE_FLAGS), 0u);
  uint32_t len = 0;
  const void* ud = nftnl_table_get_data(t.get(), NFTNL_TABLE_USERDATA, &len);
  ASSERT_NE(ud, nullptr);
  // nft's comment TLV: type NFTNL_UDATA_TABLE_COMMENT, NUL-terminated.
  EXPECT_EQ(udata_str(ud, len, NFTNL_UDATA_TABLE_COMMENT), "managed by ctoffload; do not edit");
  EXPECT_EQ(table_comment(ud, len), "managed by ctoffload; do not edit");
  EXPECT_EQ(len, 2u + sizeof("managed by ctoffload; do not edit"));
}

TEST(NftLayout, TableFamilyIsInetInTheMessageHeader) {
  TablePtr t = build_table(opts());
  EXPECT_EQ(nftnl_table_get_u32(t.get(), NFTNL_TABLE_FAMILY), static_cast<uint32_t>(NFPROTO_INET));
  TablePtr ref = build_table_ref(opts());
  EXPECT_EQ(nftnl_table_get_u32(ref.get(), NFTNL_TABLE_FAMILY), static_cast<uint32_t>(NFPROTO_INET));
  EXPECT_FALSE(nftnl_table_is_set(ref.get(), NFTNL_TABLE_USERDATA));
}

TEST(NftLayout, ProbeTableCarriesTheOwnerFlag) {
  LayoutOptions o = opts("probe");
  o.table_flags = NFT_TABLE_F_OWNER;
  o.comment = "probe";
  TablePtr t = round_trip(build_table(o).get());
  EXPECT_EQ(nftnl_table_get_u32(t.get(), NFTNL_TABLE_FLAGS), static_cast<uint32_t>(NFT_TABLE_F_OWNER));
  uint32_t len = 0;
  const void* ud = nftnl_table_get_data(t.get(), NFTNL_TABLE_USERDATA, &len);
  EXPECT_EQ(table_comment(ud, len), "probe");
}

TEST(NftLayout, ChainIsAFilterChainOnTheForwardHookAfterFilterPriority) {
  ChainPtr c = round_trip(build_chain(opts("t1")).get());
  EXPECT_STREQ(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TABLE), "t1");
  EXPECT_STREQ(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_NAME), "forward");
  EXPECT_STREQ(nftnl_chain_get_str(c.get(), NFTNL_CHAIN_TYPE), "filter");
  EXPECT_EQ(nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_HOOKNUM), static_cast<uint32_t>(NF_INET_FORWARD));
  EXPECT_EQ(nftnl_chain_get_s32(c.get(), NFTNL_CHAIN_PRIO), 100);
  EXPECT_EQ(nftnl_chain_get_u32(c.get(), NFTNL_CHAIN_POLICY), static_cast<uint32_t>(NF_ACCEPT));
}

TEST(NftLayout, SoftwareFlowtableCountsAndHooksIngressOfItsDevices) {
  FlowtablePtr f = round_trip(build_flowtable(opts(), FtMode::kSw, {"eth0", "veth1"}).get());
  EXPECT_STREQ(nftnl_flowtable_get_str(f.get(), NFTNL_FLOWTABLE_NAME), "ft_sw");
  EXPECT_STREQ(nftnl_flowtable_get_str(f.get(), NFTNL_FLOWTABLE_TABLE), "ctoffload");
  EXPECT_EQ(nftnl_flowtable_get_u32(f.get(), NFTNL_FLOWTABLE_HOOKNUM), static_cast<uint32_t>(NF_NETDEV_INGRESS));
  EXPECT_EQ(nftnl_flowtable_get_s32(f.get(), NFTNL_FLOWTABLE_PRIO), 0);
  EXPECT_EQ(nftnl_flowtable_get_u32(f.get(), NFTNL_FLOWTABLE_FLAGS), static_cast<uint32_t>(NFT_FLOWTABLE_COUNTER));
  const char* const* devs = nftnl_flowtable_get_array(f.get(), NFTNL_FLOWTABLE_DEVICES);
  ASSERT_NE(devs, nullptr);
  std::vector<std::string> names;
  for (size_t i = 0; devs[i] != nullptr; ++i) names.emplace_back(devs[i]);
  EXPECT_EQ(names, (std::vector<std::string>{"eth0", "veth1"}));
}

TEST(NftLayout, HardwareFlowtableAsksForOffload) {
  FlowtablePtr f = round_trip(build_flowtable(opts(), FtMode::kHw, {"swp1"}).get());
  EXPECT_STREQ(nftnl_flowtable_get_str(f.get(), NFTNL_FLOWTABLE_NAME), "ft_hw");
  EXPECT_EQ(nftnl_flowtable_get_u32(f.get(), NFTNL_FLOWTABLE_FLAGS),
            static_cast<uint32_t>(NFT_FLOWTABLE_HW_OFFLOAD | NFT_FLOWTABLE_COUNTER));
  EXPECT_EQ(flowtable_flags(FtMode::kHw), static_cast<uint32_t>(NFT_FLOWTABLE_HW_OFFLOAD | NFT_FLOWTABLE_COUNTER));
  EXPECT_EQ(flowtable_flags(FtMode::kSw), static_cast<uint32_t>(NFT_FLOWTABLE_COUNTER));
}

TEST(NftLayout, FlowtableWithoutDevicesHasNoDeviceList) {
  FlowtablePtr f = round_trip(build_flowtable(opts(), FtMode::kSw, {}).get());
  EXPECT_FALSE(nftnl_flowtable_is_set(f.get(), NFTNL_FLOWTABLE_DEVICES));
  EXPECT_EQ(nftnl_flowtable_get_u32(f.get(), NFTNL_FLOWTABLE_HOOKNUM), static_cast<uint32_t>(NF_NETDEV_INGRESS));
}

TEST(NftLayout, Ipv4SetKeyIsTheFiveFieldConcatenation) {
  SetPtr s = round_trip(build_set(opts(), SelKey{AF_INET, 0, FtMode::kSw}).get());
  EXPECT_STREQ(nftnl_set_get_str(s.get(), NFTNL_SET_NAME), "sel4");
  EXPECT_STREQ(nftnl_set_get_str(s.get(), NFTNL_SET_TABLE), "ctoffload");
  // ipv4_addr(7) . ipv4_addr(7) . inet_proto(12) . inet_service(13) .
  // inet_service(13), 6 bits each: what nft reads to print the elements.
  EXPECT_EQ(nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_TYPE), (((((7u << 6 | 7u) << 6) | 12u) << 6 | 13u) << 6) | 13u);
  EXPECT_EQ(nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_LEN), 20u);
  // A plain hash: no interval, concat, timeout, map or size.
  EXPECT_EQ(nftnl_set_get_u32(s.get(), NFTNL_SET_FLAGS), 0u);
  EXPECT_FALSE(nftnl_set_is_set(s.get(), NFTNL_SET_DESC_CONCAT));
  EXPECT_FALSE(nftnl_set_is_set(s.get(), NFTNL_SET_DESC_SIZE));
  EXPECT_FALSE(nftnl_set_is_set(s.get(), NFTNL_SET_DATA_TYPE));
  // The kernel wants a set id on every new set.
  EXPECT_TRUE(nftnl_set_is_set(s.get(), NFTNL_SET_ID));
  uint32_t len = 0;
  const void* ud = nftnl_set_get_data(s.get(), NFTNL_SET_USERDATA, &len);
  ASSERT_NE(ud, nullptr);
  EXPECT_EQ(udata_str(ud, len, NFTNL_UDATA_SET_COMMENT), "connections selected by ctoffload (ipv4, zone 0, ft_sw)");
}

TEST(NftLayout, Ipv6HardwareZoneSetIsNamedAndTypedForItsFamily) {
  SetPtr s = round_trip(build_set(opts(), SelKey{AF_INET6, 7, FtMode::kHw}).get());
  EXPECT_STREQ(nftnl_set_get_str(s.get(), NFTNL_SET_NAME), "sel6_z7_hw");
  EXPECT_EQ(nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_TYPE), (((((8u << 6 | 8u) << 6) | 12u) << 6 | 13u) << 6) | 13u);
  EXPECT_EQ(nftnl_set_get_u32(s.get(), NFTNL_SET_KEY_LEN), 44u);
  uint32_t len = 0;
  const void* ud = nftnl_set_get_data(s.get(), NFTNL_SET_USERDATA, &len);
  EXPECT_EQ(udata_str(ud, len, NFTNL_UDATA_SET_COMMENT), "connections selected by ctoffload (ipv6, zone 7, ft_hw)");
}

TEST(NftLayout, SetIdsDifferBetweenSets) {
  SetPtr a = build_set(opts(), SelKey{AF_INET, 0, FtMode::kSw});
  SetPtr b = build_set(opts(), SelKey{AF_INET, 0, FtMode::kSw});
  EXPECT_NE(nftnl_set_get_u32(a.get(), NFTNL_SET_ID), nftnl_set_get_u32(b.get(), NFTNL_SET_ID));
}

TEST(NftLayout, SetNamesRoundTripAndForeignNamesAreRejected) {
  for (uint8_t family : {uint8_t{AF_INET}, uint8_t{AF_INET6}}) {
    for (uint16_t zone : {uint16_t{0}, uint16_t{1}, uint16_t{42}, uint16_t{65535}}) {
      for (FtMode kind : {FtMode::kSw, FtMode::kHw}) {
        const SelKey k{family, zone, kind};
        auto back = parse_set_name(set_name(k));
        ASSERT_TRUE(back.has_value()) << set_name(k);
        EXPECT_EQ(*back, k) << set_name(k);
      }
    }
  }
  EXPECT_EQ(set_name(SelKey{AF_INET, 0, FtMode::kSw}), "sel4");
  EXPECT_EQ(set_name(SelKey{AF_INET6, 5, FtMode::kSw}), "sel6_z5");
  EXPECT_EQ(set_name(SelKey{AF_INET, 0, FtMode::kHw}), "sel4_hw");
  for (const char* bad : {"sel5", "sel4_z0", "sel4_z007", "sel4_z65536", "sel4_hwx", "sel4_", "sel4_z", "ft_sw",
                          "sel4_sw", "xsel4", ""}) {
    EXPECT_FALSE(parse_set_name(bad).has_value()) << bad;
  }
}

void expect_payload(const Expr& x, uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg) {
  ASSERT_EQ(x.name, "payload");
  EXPECT_EQ(nftnl_expr_get_u32(x.e, NFTNL_EXPR_PAYLOAD_BASE), base);
  EXPECT_EQ(nftnl_expr_get_u32(x.e, NFTNL_EXPR_PAYLOAD_OFFSET), offset);
  EXPECT_EQ(nftnl_expr_get_u32(x.e, NFTNL_EXPR_PAYLOAD_LEN), len);
  EXPECT_EQ(nftnl_expr_get_u32(x.e, NFTNL_EXPR_PAYLOAD_DREG), dreg);
}

void expect_l4proto(const Expr& x, uint32_t dreg) {
  ASSERT_EQ(x.name, "meta");
  EXPECT_EQ(nftnl_expr_get_u32(x.e, NFTNL_EXPR_META_KEY), static_cast<uint32_t>(NFT_META_L4PROTO));
  EXPECT_EQ(nftnl_expr_get_u32(x.e, NFTNL_EXPR_META_DREG), dreg);
}

std::string rule_comment_of(nftnl_rule* r) {
  uint32_t len = 0;
  const void* ud = nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &len);
  return ud == nullptr ? std::string() : udata_str(ud, len, NFTNL_UDATA_RULE_COMMENT);
}

TEST(NftLayout, Ipv4OriginalRuleLooksUpThePacketHeaderFields) {
  RulePtr r = round_trip(build_rule(opts(), SelKey{AF_INET, 0, FtMode::kSw}, RuleDir::kOriginal).get());
  EXPECT_STREQ(nftnl_rule_get_str(r.get(), NFTNL_RULE_TABLE), "ctoffload");
  EXPECT_STREQ(nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN), "forward");
  const auto x = exprs_of(r.get());
  ASSERT_EQ(x.size(), 12u);
  // meta nfproto ipv4
  ASSERT_EQ(x[0].name, "meta");
  EXPECT_EQ(nftnl_expr_get_u32(x[0].e, NFTNL_EXPR_META_KEY), static_cast<uint32_t>(NFT_META_NFPROTO));
  EXPECT_EQ(nftnl_expr_get_u32(x[0].e, NFTNL_EXPR_META_DREG), static_cast<uint32_t>(NFT_REG_1));
  ASSERT_EQ(x[1].name, "cmp");
  EXPECT_EQ(nftnl_expr_get_u32(x[1].e, NFTNL_EXPR_CMP_OP), static_cast<uint32_t>(NFT_CMP_EQ));
  EXPECT_EQ(cmp_data(x[1].e), std::string(1, static_cast<char>(NFPROTO_IPV4)));
  // ct zone 0 (16 bits, host order)
  expect_ct(x[2], NFT_CT_ZONE, -1, NFT_REG_1);
  ASSERT_EQ(x[3].name, "cmp");
  EXPECT_EQ(cmp_data(x[3].e), std::string(2, '\0'));
  // ip saddr . ip daddr . meta l4proto . th sport . th dport, one 32-bit
  // register each from NFT_REG32_00.
  expect_payload(x[4], NFT_PAYLOAD_NETWORK_HEADER, 12, 4, NFT_REG32_00);
  expect_payload(x[5], NFT_PAYLOAD_NETWORK_HEADER, 16, 4, NFT_REG32_01);
  expect_l4proto(x[6], NFT_REG32_02);
  expect_payload(x[7], NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, NFT_REG32_03);
  expect_payload(x[8], NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG32_04);
  ASSERT_EQ(x[9].name, "lookup");
  EXPECT_EQ(nftnl_expr_get_u32(x[9].e, NFTNL_EXPR_LOOKUP_SREG), static_cast<uint32_t>(NFT_REG32_00));
  EXPECT_STREQ(nftnl_expr_get_str(x[9].e, NFTNL_EXPR_LOOKUP_SET), "sel4");
  EXPECT_FALSE(nftnl_expr_is_set(x[9].e, NFTNL_EXPR_LOOKUP_FLAGS) &&
               nftnl_expr_get_u32(x[9].e, NFTNL_EXPR_LOOKUP_FLAGS) != 0);
  EXPECT_EQ(x[10].name, "counter");
  ASSERT_EQ(x[11].name, "flow_offload");
  EXPECT_STREQ(nftnl_expr_get_str(x[11].e, NFTNL_EXPR_FLOW_TABLE_NAME), "ft_sw");
  EXPECT_EQ(rule_comment_of(r.get()), "sel4 original");
}

TEST(NftLayout, ReplyRuleReadsTheSameFieldsSwapped) {
  RulePtr r = round_trip(build_rule(opts(), SelKey{AF_INET, 0, FtMode::kSw}, RuleDir::kReply).get());
  const auto x = exprs_of(r.get());
  ASSERT_EQ(x.size(), 12u);
  // ip daddr . ip saddr . meta l4proto . th dport . th sport: a reply
  // packet's fields in the order of the original direction's key.
  expect_payload(x[4], NFT_PAYLOAD_NETWORK_HEADER, 16, 4, NFT_REG32_00);
  expect_payload(x[5], NFT_PAYLOAD_NETWORK_HEADER, 12, 4, NFT_REG32_01);
  expect_l4proto(x[6], NFT_REG32_02);
  expect_payload(x[7], NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG32_03);
  expect_payload(x[8], NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, NFT_REG32_04);
  EXPECT_STREQ(nftnl_expr_get_str(x[9].e, NFTNL_EXPR_LOOKUP_SET), "sel4");
  EXPECT_EQ(rule_comment_of(r.get()), "sel4 reply");
}

TEST(NftLayout, Ipv6ZoneRuleUsesWideRegistersAndItsZone) {
  RulePtr r = round_trip(build_rule(opts(), SelKey{AF_INET6, 513, FtMode::kHw}, RuleDir::kOriginal).get());
  const auto x = exprs_of(r.get());
  ASSERT_EQ(x.size(), 12u);
  EXPECT_EQ(cmp_data(x[1].e), std::string(1, static_cast<char>(NFPROTO_IPV6)));
  const uint16_t zone = 513;
  EXPECT_EQ(cmp_data(x[3].e), std::string(reinterpret_cast<const char*>(&zone), 2));
  expect_payload(x[4], NFT_PAYLOAD_NETWORK_HEADER, 8, 16, NFT_REG32_00);
  expect_payload(x[5], NFT_PAYLOAD_NETWORK_HEADER, 24, 16, NFT_REG32_04);
  expect_l4proto(x[6], NFT_REG32_08);
  expect_payload(x[7], NFT_PAYLOAD_TRANSPORT_HEADER, 0, 2, NFT_REG32_09);
  expect_payload(x[8], NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, NFT_REG32_10);
  EXPECT_STREQ(nftnl_expr_get_str(x[9].e, NFTNL_EXPR_LOOKUP_SET), "sel6_z513_hw");
  EXPECT_STREQ(nftnl_expr_get_str(x[11].e, NFTNL_EXPR_FLOW_TABLE_NAME), "ft_hw");
  EXPECT_EQ(rule_comment_of(r.get()), "sel6_z513_hw original");
}

TEST(NftLayout, LegacyRuleLoadsTheOriginalTupleFromConntrack) {
  RulePtr r = round_trip(build_legacy_rule(opts(), SelKey{AF_INET6, 7, FtMode::kSw}).get());
  const auto x = exprs_of(r.get());
  ASSERT_EQ(x.size(), 12u);
  expect_ct(x[4], NFT_CT_SRC_IP6, 0, NFT_REG32_00);
  expect_ct(x[5], NFT_CT_DST_IP6, 0, NFT_REG32_04);
  expect_ct(x[6], NFT_CT_PROTOCOL, 0, NFT_REG32_08);
  expect_ct(x[7], NFT_CT_PROTO_SRC, 0, NFT_REG32_09);
  expect_ct(x[8], NFT_CT_PROTO_DST, 0, NFT_REG32_10);
  EXPECT_EQ(rule_comment_of(r.get()), "sel6_z7");
}

TEST(NftLayout, RuleCommentsNameSetDirectionAndLayout) {
  for (uint8_t family : {uint8_t{AF_INET}, uint8_t{AF_INET6}}) {
    for (FtMode kind : {FtMode::kSw, FtMode::kHw}) {
      for (RuleDir dir : {RuleDir::kOriginal, RuleDir::kReply}) {
        const SelKey k{family, 42, kind};
        auto id = parse_rule_comment(rule_comment(k, dir));
        ASSERT_TRUE(id.has_value()) << rule_comment(k, dir);
        EXPECT_EQ(id->key, k);
        EXPECT_EQ(id->dir, dir);
        EXPECT_EQ(id->selector, Selector::kPacket);
      }
    }
  }
  auto legacy = parse_rule_comment("sel4_z3");
  ASSERT_TRUE(legacy.has_value());
  EXPECT_EQ(legacy->selector, Selector::kLegacyCtOriginal);
  EXPECT_EQ(legacy->key, (SelKey{AF_INET, 3, FtMode::kSw}));
  for (const char* bad : {"", "sel4 sideways", "sel4  original", "rule", "sel9 original", "sel4 original x"}) {
    EXPECT_FALSE(parse_rule_comment(bad).has_value()) << bad;
  }
}

TEST(NftLayout, TestLayoutRuleEndsInACounterWithoutFlowAdd) {
  LayoutOptions o = opts();
  o.flowtables = false;
  RulePtr r = round_trip(build_rule(o, SelKey{AF_INET, 0, FtMode::kSw}, RuleDir::kReply).get());
  const auto x = exprs_of(r.get());
  ASSERT_EQ(x.size(), 11u);
  EXPECT_EQ(x.back().name, "counter");
}

TEST(NftLayout, RuleReferenceNamesItsHandle) {
  RulePtr r = build_rule_ref(opts(), 77);
  EXPECT_EQ(nftnl_rule_get_u64(r.get(), NFTNL_RULE_HANDLE), 77u);
  EXPECT_STREQ(nftnl_rule_get_str(r.get(), NFTNL_RULE_CHAIN), "forward");
}

TEST(NftLayout, Ipv4ElementKeyIsPaddedToRegisters) {
  const Conn c = testing::tcp4("10.1.2.3", 40000, "192.0.2.9", 443);
  uint8_t key[44];
  ASSERT_EQ(build_key(c, key), 20u);
  const uint8_t want[20] = {10, 1, 2, 3, 192, 0, 2, 9, IPPROTO_TCP, 0, 0, 0, 0x9c, 0x40, 0, 0, 0x01, 0xbb, 0, 0};
  EXPECT_EQ(std::memcmp(key, want, 20), 0);
  EXPECT_EQ(key_len(AF_INET), 20u);
  EXPECT_EQ(key_len(AF_INET6), 44u);
  // Without NAT, layout 1's key is the same bytes (no element moves when a
  // table of it is migrated).
  uint8_t legacy[44];
  ASSERT_EQ(build_legacy_key(c, legacy), 20u);
  EXPECT_EQ(std::memcmp(key, legacy, 20), 0);
}

TEST(NftLayout, Ipv6ElementKeyCarriesFullAddresses) {
  const Conn c = testing::udp6("fd00::1", 5353, "2001:db8::53", 53, 4);
  uint8_t key[44];
  ASSERT_EQ(build_key(c, key), 44u);
  EXPECT_EQ(std::memcmp(key, c.orig.src.bytes, 16), 0);
  EXPECT_EQ(std::memcmp(key + 16, c.orig.dst.bytes, 16), 0);
  EXPECT_EQ(key[32], IPPROTO_UDP);
  EXPECT_EQ(key[33] | key[34] | key[35], 0);
  EXPECT_EQ(key[36], 5353 >> 8);
  EXPECT_EQ(key[37], 5353 & 0xff);
  EXPECT_EQ(key[40], 0);
  EXPECT_EQ(key[41], 53);
  EXPECT_EQ(key[38] | key[39] | key[42] | key[43], 0);
}

TEST(NftLayout, NatKeyIsWhatTheForwardHookSees) {
  // DNAT of 10.1.0.1:8080 to 10.2.0.2:80, and SNAT of the client to
  // 10.2.0.1:61000: at the forward hook an original-direction packet reads
  // 10.1.0.2:40002 -> 10.2.0.2:80 (DNAT done, SNAT not yet).
  auto c = make_conn(IPPROTO_TCP, *parse_endpoint("10.1.0.2:40002"), *parse_endpoint("10.1.0.1:8080"),
                     *parse_endpoint("10.2.0.2:80"), *parse_endpoint("10.2.0.1:61000"), 3);
  ASSERT_TRUE(c.ok());
  uint8_t key[44];
  ASSERT_EQ(build_key(*c, key), 20u);
  const uint8_t want[20] = {10, 1, 0, 2, 10, 2, 0, 2, IPPROTO_TCP, 0, 0, 0, 0x9c, 0x42, 0, 0, 0, 80, 0, 0};
  EXPECT_EQ(std::memcmp(key, want, 20), 0);
  // Layout 1 keyed the original tuple, untouched by NAT.
  uint8_t legacy[44];
  ASSERT_EQ(build_legacy_key(*c, legacy), 20u);
  const uint8_t want_legacy_dst[4] = {10, 1, 0, 1};
  EXPECT_EQ(std::memcmp(legacy + 4, want_legacy_dst, 4), 0);
  EXPECT_EQ(legacy[16] << 8 | legacy[17], 8080);
}

TEST(NftLayout, ElementsRoundTripWithTheirNotes) {
  const SelKey key{AF_INET, 0, FtMode::kSw};
  SetPtr s = build_set_ref(opts(), key);
  const Conn plain = testing::tcp4("10.1.0.2", 40000, "10.2.0.2", 80);
  ElemNote n1;
  n1.iif = "r-c";
  n1.reply_iif = "r-s";
  nftnl_set_elem_add(s.get(), build_element(plain, n1).release());
  SetPtr back = round_trip_elems(s.get());
  EXPECT_STREQ(nftnl_set_get_str(back.get(), NFTNL_SET_NAME), "sel4");
  EXPECT_STREQ(nftnl_set_get_str(back.get(), NFTNL_SET_TABLE), "ctoffload");
  auto es = elems_of(back.get());
  ASSERT_EQ(es.size(), 1u);
  uint32_t len = 0;
  const void* ud = nftnl_set_elem_get(es[0], NFTNL_SET_ELEM_USERDATA, &len);
  ASSERT_NE(ud, nullptr);
  EXPECT_EQ(udata_str(ud, len, NFTNL_UDATA_SET_ELEM_COMMENT), "iif r-c riif r-s");
  auto d = decode_element(key, es[0]);
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_TRUE(same_conn(d->conn, plain)) << format_conn(d->conn);
  EXPECT_EQ(d->note.iif, "r-c");
  EXPECT_EQ(d->note.reply_iif, "r-s");
  EXPECT_FALSE(d->note.dnat_from.has_value());
  EXPECT_FALSE(d->note.snat_to.has_value());
}

TEST(NftLayout, NatElementSaysWhatNatChangedAndDecodesToBothTuples) {
  auto c = make_conn(IPPROTO_TCP, *parse_endpoint("10.1.0.2:40002"), *parse_endpoint("10.1.0.1:8080"),
                     *parse_endpoint("10.2.0.2:80"), *parse_endpoint("10.2.0.1:61000"), 3);
  ASSERT_TRUE(c.ok());
  const SelKey key{AF_INET, 3, FtMode::kSw};
  ElemNote n;
  n.iif = "r-c";
  EXPECT_EQ(format_note(*c, n), "iif r-c dnat-from 10.1.0.1:8080 snat-to 10.2.0.1:61000");
  SetPtr s = build_set_ref(opts(), key);
  nftnl_set_elem_add(s.get(), build_element(*c, n).release());
  SetPtr back = round_trip_elems(s.get());
  auto es = elems_of(back.get());
  ASSERT_EQ(es.size(), 1u);
  auto d = decode_element(key, es[0]);
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_TRUE(same_conn(d->conn, *c)) << format_conn(d->conn);
  EXPECT_EQ(d->conn.zone, 3);
}

TEST(NftLayout, DnatOnlyAndSnatOnlyWriteOneWordEach) {
  // A port forward (DNAT only): the reply goes back to the client itself.
  auto dnat = make_conn(IPPROTO_UDP, *parse_endpoint("198.51.100.7:5000"), *parse_endpoint("192.0.2.1:53"),
                        *parse_endpoint("10.0.0.53:5353"), *parse_endpoint("198.51.100.7:5000"));
  ASSERT_TRUE(dnat.ok());
  EXPECT_EQ(format_note(*dnat, ElemNote{}), "dnat-from 192.0.2.1:53");
  // Masquerade (SNAT only).
  auto snat = make_conn(IPPROTO_TCP, *parse_endpoint("10.0.0.2:40000"), *parse_endpoint("192.0.2.1:443"),
                        *parse_endpoint("192.0.2.1:443"), *parse_endpoint("203.0.113.1:61000"));
  ASSERT_TRUE(snat.ok());
  EXPECT_EQ(format_note(*snat, ElemNote{}), "snat-to 203.0.113.1:61000");
  for (const Conn* c : {&*dnat, &*snat}) {
    const SelKey key{AF_INET, 0, FtMode::kSw};
    SetPtr s = build_set_ref(opts(), key);
    nftnl_set_elem_add(s.get(), build_element(*c, ElemNote{}).release());
    SetPtr back = round_trip_elems(s.get());
    auto d = decode_element(key, elems_of(back.get())[0]);
    ASSERT_TRUE(d.ok()) << d.message();
    EXPECT_TRUE(same_conn(d->conn, *c)) << format_conn(d->conn);
  }
}

TEST(NftLayout, LegacyElementDecodesFromTheOriginalTupleAndItsReplyNote) {
  // What layout 1 wrote for a NATed connection: the original tuple as key,
  // "reply A -> B" in the comment.
  auto c = make_conn(IPPROTO_TCP, *parse_endpoint("10.1.0.2:40002"), *parse_endpoint("10.1.0.1:8080"),
                     *parse_endpoint("10.2.0.2:80"), *parse_endpoint("10.2.0.1:61000"));
  ASSERT_TRUE(c.ok());
  const SelKey key{AF_INET, 0, FtMode::kSw};
  SetPtr s = build_set_ref(opts(), key);
  auto e = build_element(*c, ElemNote{}, false, Selector::kLegacyCtOriginal);
  const std::string note = "iif r-c reply 10.2.0.2:80 -> 10.2.0.1:61000";
  std::vector<uint8_t> ud = {NFTNL_UDATA_SET_ELEM_COMMENT, static_cast<uint8_t>(note.size() + 1)};
  ud.insert(ud.end(), note.begin(), note.end());
  ud.push_back(0);
  nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_USERDATA, ud.data(), static_cast<uint32_t>(ud.size()));
  nftnl_set_elem_add(s.get(), e.release());
  SetPtr back = round_trip_elems(s.get());
  auto es = elems_of(back.get());
  ASSERT_EQ(es.size(), 1u);
  auto d = decode_element(key, es[0], Selector::kLegacyCtOriginal);
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_TRUE(same_conn(d->conn, *c)) << format_conn(d->conn);
  EXPECT_EQ(d->note.iif, "r-c");
}

TEST(NftLayout, Ipv6ZoneElementDecodesWithItsZoneAndFamily) {
  const Conn c = testing::udp6("fd00:1::2", 5000, "fd00:2::2", 53, 9);
  const SelKey key{AF_INET6, 9, FtMode::kHw};
  SetPtr s = build_set_ref(opts(), key);
  ElemNote n;
  n.iif = "eth0";
  n.reply_iif = "eth1";
  nftnl_set_elem_add(s.get(), build_element(c, n).release());
  SetPtr back = round_trip_elems(s.get());
  auto es = elems_of(back.get());
  ASSERT_EQ(es.size(), 1u);
  auto d = decode_element(key, es[0]);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(same_conn(d->conn, c));
  EXPECT_EQ(d->conn.family, AF_INET6);
  EXPECT_EQ(d->conn.zone, 9);
  // An element of the wrong key length is refused.
  EXPECT_EQ(decode_element(SelKey{AF_INET, 9, FtMode::kHw}, es[0]).err(), EINVAL);
}

TEST(NftLayout, DeletionElementsCarryTheKeyOnly) {
  const Conn c = testing::tcp4("10.1.0.2", 1, "10.2.0.2", 2);
  ElemNote n;
  n.iif = "eth0";
  n.reply_iif = "eth1";
  auto e = build_element(c, n, false);
  EXPECT_TRUE(nftnl_set_elem_is_set(e.get(), NFTNL_SET_ELEM_KEY));
  EXPECT_FALSE(nftnl_set_elem_is_set(e.get(), NFTNL_SET_ELEM_USERDATA));
  // Without devices and NAT there is nothing to note either.
  auto bare = build_element(c, ElemNote{});
  EXPECT_FALSE(nftnl_set_elem_is_set(bare.get(), NFTNL_SET_ELEM_USERDATA));
}

TEST(NftLayout, LongNotesDropDeviceNamesButKeepWhatNatChanged) {
  auto c = make_conn(IPPROTO_UDP, *parse_endpoint("[2001:db8:1111:2222:3333:4444:5555:6666]:65535"),
                     *parse_endpoint("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65534"),
                     *parse_endpoint("[2001:db8:9999:8888:7777:6666:5555:4444]:65533"),
                     *parse_endpoint("[2001:db8:1111:2222:3333:4444:5555:7777]:65532"));
  ASSERT_TRUE(c.ok());
  ElemNote n;
  n.iif = "abcdefghijklmno";
  n.reply_iif = "ponmlkjihgfedcb";
  const std::string text = format_note(*c, n);
  EXPECT_LE(text.size(), kMaxElemComment);
  EXPECT_EQ(text.find("iif"), std::string::npos) << text;
  const SelKey key{AF_INET6, 0, FtMode::kSw};
  SetPtr s = build_set_ref(opts(), key);
  nftnl_set_elem_add(s.get(), build_element(*c, n).release());
  SetPtr back = round_trip_elems(s.get());
  auto d = decode_element(key, elems_of(back.get())[0]);
  ASSERT_TRUE(d.ok()) << d.message();
  EXPECT_TRUE(same_conn(d->conn, *c)) << format_conn(d->conn);
}

TEST(NftLayout, NotesIgnoreUnknownWordsAndRefuseMalformedAddresses) {
  auto n = parse_note(AF_INET, "iif eth0 future stuff riif eth1");
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->iif, "eth0");
  EXPECT_EQ(n->reply_iif, "eth1");
  EXPECT_EQ(parse_note(AF_INET, "reply 10.0.0.1:80 10.0.0.2:90").err(), EINVAL);
  EXPECT_EQ(parse_note(AF_INET, "reply 10.0.0.1:80 ->").err(), EINVAL);
  EXPECT_EQ(parse_note(AF_INET, "reply [fd00::1]:80 -> [fd00::2]:90").err(), EINVAL);
  EXPECT_EQ(parse_note(AF_INET, "iif abcdefghijklmnopq").err(), EINVAL);
  EXPECT_EQ(parse_note(AF_INET, "dnat-from 10.0.0.1").err(), EINVAL);
  EXPECT_EQ(parse_note(AF_INET, "snat-to [fd00::1]:80").err(), EINVAL);
  auto nat = parse_note(AF_INET6, "dnat-from [fd00::1]:80 snat-to [fd00::2]:90");
  ASSERT_TRUE(nat.ok()) << nat.message();
  ASSERT_TRUE(nat->dnat_from.has_value());
  EXPECT_EQ(nat->dnat_from->port, 80);
  ASSERT_TRUE(nat->snat_to.has_value());
  EXPECT_EQ(nat->snat_to->port, 90);
}

TEST(NftLayout, TableNamesFollowNftIdentifiers) {
  EXPECT_TRUE(valid_table_name("ctoffload"));
  EXPECT_TRUE(valid_table_name("ct_off-load2"));
  EXPECT_TRUE(valid_table_name(std::string(31, 'a')));
  EXPECT_FALSE(valid_table_name(std::string(32, 'a')));
  EXPECT_FALSE(valid_table_name(""));
  EXPECT_FALSE(valid_table_name("2table"));
  EXPECT_FALSE(valid_table_name("_table"));
  EXPECT_FALSE(valid_table_name("my table"));
  EXPECT_FALSE(valid_table_name("tab;le"));
}

}  // namespace
}  // namespace ctoffload::nft
