// nft_layout.cc - building the provider's nf_tables objects and reading
// them back.  docs/LAYOUT.md explains the layout; this file is the one
// place that knows how it is encoded.
#include "providers/nft_layout.h"

#include <arpa/inet.h>
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
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <memory>

#include "log.h"
#include "netlink/nft_socket.h"
#include "netlink/nl_error.h"
#include "netlink/reopen.h"
#include "netlink/request.h"

namespace ctoffload::nft {
namespace {

// nft's datatype numbers (nftables' enum datatypes), which nft reads back
// from a set's key type to print its elements.  A concatenation's type is
// the field types, 6 bits each, the first field in the highest bits.
constexpr uint32_t kTypeIpAddr = 7;
constexpr uint32_t kTypeIp6Addr = 8;
constexpr uint32_t kTypeInetProto = 12;
constexpr uint32_t kTypeInetService = 13;
constexpr uint32_t kTypeBits = 6;

// enum ip_conntrack_dir's IP_CT_DIR_ORIGINAL.
constexpr uint8_t kDirOriginal = 0;

uint32_t concat_type(std::initializer_list<uint32_t> types) {
  uint32_t t = 0;
  for (uint32_t sub : types) t = (t << kTypeBits) | sub;
  return t;
}

size_t addr_len(uint8_t family) { return family == AF_INET ? 4 : 16; }

// Register layout of the lookup: 32-bit registers from NFT_REG32_00, each
// field starting on its own register.
struct KeyLayout {
  uint32_t saddr_off, daddr_off, proto_off, sport_off, dport_off, len;
};
KeyLayout key_layout(uint8_t family) {
  const auto a = static_cast<uint32_t>(addr_len(family));
  return KeyLayout{0, a, 2 * a, 2 * a + 4, 2 * a + 8, 2 * a + 12};
}

uint32_t reg_at(uint32_t byte_off) { return NFT_REG32_00 + byte_off / 4; }

// Frees an nftnl_udata_buf.
struct UdataFree {
  void operator()(nftnl_udata_buf* b) const noexcept { nftnl_udata_buf_free(b); }
};
using UdataPtr = std::unique_ptr<nftnl_udata_buf, UdataFree>;

// A user-data buffer holding one NUL-terminated string TLV of 'type'.
UdataPtr comment_udata(uint8_t type, std::string_view text) {
  UdataPtr buf(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
  if (!buf) return buf;
  std::string s(text.substr(0, kMaxElemComment));
  if (!nftnl_udata_put_strz(buf.get(), type, s.c_str())) return nullptr;
  return buf;
}

// The string TLV of 'type' in user data 'data', or "".
std::string udata_string(const void* data, uint32_t len, uint8_t type) {
  if (data == nullptr || len == 0) return {};
  // (A char pointer: the macro does arithmetic on it.)
  const char* bytes = static_cast<const char*>(data);
  const nftnl_udata* attr;
  nftnl_udata_for_each_data(bytes, len, attr) {
    if (nftnl_udata_type(attr) != type) continue;
    const auto* p = static_cast<const char*>(nftnl_udata_get(attr));
    const uint8_t n = nftnl_udata_len(attr);
    if (n == 0) return {};
    // Must be NUL-terminated, as nft writes it.
    if (p[n - 1] != '\0') return {};
    return std::string(p, n - 1);
  }
  return {};
}

void add_expr(nftnl_rule* r, nftnl_expr* e) {
  if (e != nullptr) nftnl_rule_add_expr(r, e);
}

nftnl_expr* ct_load(uint32_t key, std::optional<uint8_t> dir, uint32_t dreg) {
  nftnl_expr* e = nftnl_expr_alloc("ct");
  if (e == nullptr) return nullptr;
  nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, key);
  if (dir) nftnl_expr_set_u8(e, NFTNL_EXPR_CT_DIR, *dir);
  nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, dreg);
  return e;
}

nftnl_expr* cmp_eq(uint32_t sreg, const void* data, uint32_t len) {
  nftnl_expr* e = nftnl_expr_alloc("cmp");
  if (e == nullptr) return nullptr;
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, sreg);
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
  nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
  return e;
}

bool is_ident_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

Result<uint64_t> parse_u64(std::string_view s) {
  uint64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) {
    return Status::error(EINVAL, "not a number: '" + std::string(s) + "'");
  }
  return v;
}

}  // namespace

std::string_view flowtable_name(FtMode kind) { return kind == FtMode::kHw ? "ft_hw" : "ft_sw"; }

std::string set_name(const SelKey& key) {
  std::string n = key.family == AF_INET6 ? "sel6" : "sel4";
  if (key.zone != 0) n += "_z" + std::to_string(key.zone);
  if (key.kind == FtMode::kHw) n += "_hw";
  return n;
}

std::optional<SelKey> parse_set_name(std::string_view name) {
  SelKey key;
  if (name.starts_with("sel4")) {
    key.family = AF_INET;
  } else if (name.starts_with("sel6")) {
    key.family = AF_INET6;
  } else {
    return std::nullopt;
  }
  name.remove_prefix(4);
  if (name.starts_with("_z")) {
    name.remove_prefix(2);
    size_t digits = 0;
    while (digits < name.size() && name[digits] >= '0' && name[digits] <= '9') ++digits;
    auto zone = parse_u64(name.substr(0, digits));
    // Zone 0 is written without a suffix, and never with leading zeros.
    if (!zone || *zone == 0 || *zone > UINT16_MAX || name[0] == '0') return std::nullopt;
    key.zone = static_cast<uint16_t>(*zone);
    name.remove_prefix(digits);
  }
  if (name == "_hw") {
    key.kind = FtMode::kHw;
  } else if (!name.empty()) {
    return std::nullopt;
  }
  return key;
}

bool valid_table_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxTableName) return false;
  const char c0 = name[0];
  if (!((c0 >= 'a' && c0 <= 'z') || (c0 >= 'A' && c0 <= 'Z'))) return false;
  for (char c : name) {
    if (!is_ident_char(c)) return false;
  }
  return true;
}

std::string rule_comment(const SelKey& key, RuleDir dir) {
  return set_name(key) + (dir == RuleDir::kReply ? " reply" : " original");
}

std::optional<RuleId> parse_rule_comment(std::string_view comment) {
  RuleId id;
  const size_t sp = comment.find(' ');
  auto key = parse_set_name(comment.substr(0, sp));
  if (!key) return std::nullopt;
  id.key = *key;
  if (sp == std::string_view::npos) {
    id.selector = Selector::kLegacyCtOriginal;
    return id;
  }
  const std::string_view word = comment.substr(sp + 1);
  if (word == "original") {
    id.dir = RuleDir::kOriginal;
  } else if (word == "reply") {
    id.dir = RuleDir::kReply;
  } else {
    return std::nullopt;
  }
  return id;
}

// ---- Builders ----

netlink::TablePtr build_table_ref(const LayoutOptions& opts) {
  netlink::TablePtr t = netlink::make_table();
  if (!t) return t;
  nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
  nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, opts.table.c_str());
  return t;
}

netlink::TablePtr build_table(const LayoutOptions& opts) {
  netlink::TablePtr t = build_table_ref(opts);
  if (!t) return t;
  nftnl_table_set_u32(t.get(), NFTNL_TABLE_FLAGS, opts.table_flags);
  if (!opts.comment.empty()) {
    UdataPtr ud = comment_udata(NFTNL_UDATA_TABLE_COMMENT, opts.comment);
    if (!ud) return nullptr;
    nftnl_table_set_data(t.get(), NFTNL_TABLE_USERDATA, nftnl_udata_buf_data(ud.get()), nftnl_udata_buf_len(ud.get()));
  }
  return t;
}

netlink::ChainPtr build_chain(const LayoutOptions& opts) {
  netlink::ChainPtr c = netlink::make_chain();
  if (!c) return c;
  nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, opts.table.c_str());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, std::string(kChainName).c_str());
  nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, NF_INET_FORWARD);
  nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, kChainPriority);
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
  nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
  return c;
}

uint32_t flowtable_flags(FtMode kind) {
  uint32_t flags = NFT_FLOWTABLE_COUNTER;
  if (kind == FtMode::kHw) flags |= NFT_FLOWTABLE_HW_OFFLOAD;
  return flags;
}

netlink::FlowtablePtr build_flowtable_ref(const LayoutOptions& opts, FtMode kind) {
  netlink::FlowtablePtr f = netlink::make_flowtable();
  if (!f) return f;
  nftnl_flowtable_set_u32(f.get(), NFTNL_FLOWTABLE_FAMILY, NFPROTO_INET);
  nftnl_flowtable_set_str(f.get(), NFTNL_FLOWTABLE_TABLE, opts.table.c_str());
  nftnl_flowtable_set_str(f.get(), NFTNL_FLOWTABLE_NAME, std::string(flowtable_name(kind)).c_str());
  return f;
}

netlink::FlowtablePtr build_flowtable(const LayoutOptions& opts, FtMode kind, const std::vector<std::string>& devices) {
  netlink::FlowtablePtr f = netlink::make_flowtable();
  if (!f) return f;
  nftnl_flowtable_set_u32(f.get(), NFTNL_FLOWTABLE_FAMILY, NFPROTO_INET);
  nftnl_flowtable_set_str(f.get(), NFTNL_FLOWTABLE_TABLE, opts.table.c_str());
  nftnl_flowtable_set_str(f.get(), NFTNL_FLOWTABLE_NAME, std::string(flowtable_name(kind)).c_str());
  nftnl_flowtable_set_u32(f.get(), NFTNL_FLOWTABLE_HOOKNUM, NF_NETDEV_INGRESS);
  nftnl_flowtable_set_s32(f.get(), NFTNL_FLOWTABLE_PRIO, kFlowtablePriority);
  nftnl_flowtable_set_u32(f.get(), NFTNL_FLOWTABLE_FLAGS, flowtable_flags(kind));
  if (!devices.empty()) {
    std::vector<const char*> names;
    names.reserve(devices.size() + 1);
    for (const auto& d : devices) names.push_back(d.c_str());
    names.push_back(nullptr);
    if (nftnl_flowtable_set_array(f.get(), NFTNL_FLOWTABLE_DEVICES, names.data()) < 0) return nullptr;
  }
  return f;
}

netlink::SetPtr build_set_ref(const LayoutOptions& opts, const SelKey& key) {
  netlink::SetPtr s = netlink::make_set();
  if (!s) return s;
  nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
  nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, opts.table.c_str());
  nftnl_set_set_str(s.get(), NFTNL_SET_NAME, set_name(key).c_str());
  return s;
}

netlink::SetPtr build_set(const LayoutOptions& opts, const SelKey& key) {
  netlink::SetPtr s = build_set_ref(opts, key);
  if (!s) return s;
  const bool v4 = key.family == AF_INET;
  const uint32_t a = v4 ? kTypeIpAddr : kTypeIp6Addr;
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE,
                    concat_type({a, a, kTypeInetProto, kTypeInetService, kTypeInetService}));
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, static_cast<uint32_t>(key_len(key.family)));
  // A plain hash set: no timeout, no interval, no data; the kernel picks its
  // resizable hash.  No size either: the provider enforces its capacity, and
  // a size would make the kernel preallocate a bucket array for it.
  // No NFTA_SET_DESC_CONCAT either: the kernel reads field lengths only
  // with NFT_SET_CONCAT, which selects the interval (pipapo) backend - slow
  // to update and not needed for exact matches.  The key type names the
  // fields for nft.
  nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, 0);
  // The kernel requires a transaction-local id on every new set.
  static std::atomic<uint32_t> next_set_id{1};
  nftnl_set_set_u32(s.get(), NFTNL_SET_ID, next_set_id.fetch_add(1, std::memory_order_relaxed));
  const std::string comment = "connections selected by ctoffload (" + std::string(v4 ? "ipv4" : "ipv6") + ", zone " +
                              std::to_string(key.zone) + ", " + std::string(flowtable_name(key.kind)) + ")";
  UdataPtr ud = comment_udata(NFTNL_UDATA_SET_COMMENT, comment);
  if (!ud) return nullptr;
  nftnl_set_set_data(s.get(), NFTNL_SET_USERDATA, nftnl_udata_buf_data(ud.get()), nftnl_udata_buf_len(ud.get()));
  return s;
}

namespace {

// A rule of our chain in 'opts.table', without expressions.
netlink::RulePtr rule_base(const LayoutOptions& opts) {
  netlink::RulePtr r = netlink::make_rule();
  if (!r) return r;
  nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
  nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, opts.table.c_str());
  nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, std::string(kChainName).c_str());
  return r;
}

// meta nfproto ipv4|ipv6 ct zone N: keeps a rule of one family from reading
// the other family's header fields, and one zone's rule from another
// zone's connections.
void add_family_and_zone(nftnl_rule* rp, const SelKey& key) {
  nftnl_expr* meta = nftnl_expr_alloc("meta");
  if (meta != nullptr) {
    nftnl_expr_set_u32(meta, NFTNL_EXPR_META_KEY, NFT_META_NFPROTO);
    nftnl_expr_set_u32(meta, NFTNL_EXPR_META_DREG, NFT_REG_1);
  }
  add_expr(rp, meta);
  const uint8_t nfproto = key.family == AF_INET6 ? uint8_t{NFPROTO_IPV6} : uint8_t{NFPROTO_IPV4};
  add_expr(rp, cmp_eq(NFT_REG_1, &nfproto, sizeof(nfproto)));
  // ct zone N (host byte order, 16 bits).
  add_expr(rp, ct_load(NFT_CT_ZONE, std::nullopt, NFT_REG_1));
  const uint16_t zone = key.zone;
  add_expr(rp, cmp_eq(NFT_REG_1, &zone, sizeof(zone)));
}

// The lookup in the set of 'key' (registers from NFT_REG32_00), a counter
// of the slow-path packets of selected connections (a connection's packets
// stop reaching this chain once it is offloaded), and `flow add`, then the
// comment.  False when memory ran out.
bool add_lookup_and_actions(nftnl_rule* rp, const LayoutOptions& opts, const SelKey& key, const std::string& comment) {
  nftnl_expr* lookup = nftnl_expr_alloc("lookup");
  if (lookup == nullptr) return false;
  nftnl_expr_set_u32(lookup, NFTNL_EXPR_LOOKUP_SREG, reg_at(0));
  nftnl_expr_set_str(lookup, NFTNL_EXPR_LOOKUP_SET, set_name(key).c_str());
  add_expr(rp, lookup);
  add_expr(rp, nftnl_expr_alloc("counter"));
  if (opts.flowtables) {
    nftnl_expr* flow = nftnl_expr_alloc("flow_offload");
    if (flow == nullptr) return false;
    nftnl_expr_set_str(flow, NFTNL_EXPR_FLOW_TABLE_NAME, std::string(flowtable_name(key.kind)).c_str());
    add_expr(rp, flow);
  }
  UdataPtr ud = comment_udata(NFTNL_UDATA_RULE_COMMENT, comment);
  if (!ud) return false;
  nftnl_rule_set_data(rp, NFTNL_RULE_USERDATA, nftnl_udata_buf_data(ud.get()), nftnl_udata_buf_len(ud.get()));
  return true;
}

nftnl_expr* payload_load(uint32_t base, uint32_t offset, uint32_t len, uint32_t dreg) {
  nftnl_expr* e = nftnl_expr_alloc("payload");
  if (e == nullptr) return nullptr;
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg);
  return e;
}

}  // namespace

netlink::RulePtr build_rule(const LayoutOptions& opts, const SelKey& key, RuleDir dir) {
  netlink::RulePtr r = rule_base(opts);
  if (!r) return r;
  nftnl_rule* rp = r.get();
  add_family_and_zone(rp, key);

  // ip saddr . ip daddr . meta l4proto . th sport . th dport @set, or for
  // reply-direction packets the same fields swapped (ip daddr . ip saddr .
  // meta l4proto . th dport . th sport), so that both directions of one
  // connection build the same key.  Nothing here depends on the transport
  // protocol: `th` reads the first four bytes after the IP header, and the
  // protocol is part of the key.
  const KeyLayout l = key_layout(key.family);
  const bool v4 = key.family == AF_INET;
  const uint32_t alen = v4 ? 4 : 16;
  const uint32_t src_off = v4 ? 12 : 8;  // iphdr.saddr / ipv6hdr.saddr
  const uint32_t dst_off = src_off + alen;
  const bool swap = dir == RuleDir::kReply;
  add_expr(rp, payload_load(NFT_PAYLOAD_NETWORK_HEADER, swap ? dst_off : src_off, alen, reg_at(l.saddr_off)));
  add_expr(rp, payload_load(NFT_PAYLOAD_NETWORK_HEADER, swap ? src_off : dst_off, alen, reg_at(l.daddr_off)));
  nftnl_expr* l4 = nftnl_expr_alloc("meta");
  if (l4 == nullptr) return nullptr;
  nftnl_expr_set_u32(l4, NFTNL_EXPR_META_KEY, NFT_META_L4PROTO);
  nftnl_expr_set_u32(l4, NFTNL_EXPR_META_DREG, reg_at(l.proto_off));
  add_expr(rp, l4);
  add_expr(rp, payload_load(NFT_PAYLOAD_TRANSPORT_HEADER, swap ? 2 : 0, 2, reg_at(l.sport_off)));
  add_expr(rp, payload_load(NFT_PAYLOAD_TRANSPORT_HEADER, swap ? 0 : 2, 2, reg_at(l.dport_off)));
  if (!add_lookup_and_actions(rp, opts, key, rule_comment(key, dir))) return nullptr;
  return r;
}

netlink::RulePtr build_legacy_rule(const LayoutOptions& opts, const SelKey& key) {
  netlink::RulePtr r = rule_base(opts);
  if (!r) return r;
  nftnl_rule* rp = r.get();
  add_family_and_zone(rp, key);
  // ct original ip saddr . ct original ip daddr . ct protocol .
  // ct original proto-src . ct original proto-dst @set
  const KeyLayout l = key_layout(key.family);
  const bool v4 = key.family == AF_INET;
  add_expr(rp, ct_load(v4 ? NFT_CT_SRC_IP : NFT_CT_SRC_IP6, kDirOriginal, reg_at(l.saddr_off)));
  add_expr(rp, ct_load(v4 ? NFT_CT_DST_IP : NFT_CT_DST_IP6, kDirOriginal, reg_at(l.daddr_off)));
  add_expr(rp, ct_load(NFT_CT_PROTOCOL, kDirOriginal, reg_at(l.proto_off)));
  add_expr(rp, ct_load(NFT_CT_PROTO_SRC, kDirOriginal, reg_at(l.sport_off)));
  add_expr(rp, ct_load(NFT_CT_PROTO_DST, kDirOriginal, reg_at(l.dport_off)));
  if (!add_lookup_and_actions(rp, opts, key, set_name(key))) return nullptr;
  return r;
}

netlink::RulePtr build_rule_ref(const LayoutOptions& opts, uint64_t handle) {
  netlink::RulePtr r = rule_base(opts);
  if (!r) return r;
  nftnl_rule_set_u64(r.get(), NFTNL_RULE_HANDLE, handle);
  return r;
}

size_t key_len(uint8_t family) { return key_layout(family).len; }

namespace {

size_t write_key(uint8_t family, uint8_t proto, const Addr& saddr, const Addr& daddr, uint16_t sport, uint16_t dport,
                 uint8_t* out) {
  const KeyLayout l = key_layout(family);
  std::memset(out, 0, l.len);
  const size_t a = addr_len(family);
  std::memcpy(out + l.saddr_off, saddr.bytes, a);
  std::memcpy(out + l.daddr_off, daddr.bytes, a);
  out[l.proto_off] = proto;
  const uint16_t sp = htons(sport);
  const uint16_t dp = htons(dport);
  std::memcpy(out + l.sport_off, &sp, 2);
  std::memcpy(out + l.dport_off, &dp, 2);
  return l.len;
}

bool same_endpoint(uint8_t family, const Addr& a, uint16_t ap, const Addr& b, uint16_t bp) {
  return ap == bp && std::memcmp(a.bytes, b.bytes, addr_len(family)) == 0;
}

}  // namespace

size_t build_key(const Conn& conn, uint8_t* out) {
  return write_key(conn.family, conn.proto, conn.orig.src, conn.reply.src, conn.orig.src_port, conn.reply.src_port,
                   out);
}

size_t build_legacy_key(const Conn& conn, uint8_t* out) {
  return write_key(conn.family, conn.proto, conn.orig.src, conn.orig.dst, conn.orig.src_port, conn.orig.dst_port, out);
}

size_t build_key(const Conn& conn, Selector selector, uint8_t* out) {
  return selector == Selector::kLegacyCtOriginal ? build_legacy_key(conn, out) : build_key(conn, out);
}

std::string format_note(const Conn& conn, const ElemNote& note) {
  std::string tail;
  const uint8_t f = conn.family;
  // The key holds orig.src:sport and reply.src:sport; without NAT the
  // original destination is the reply source and the reply destination the
  // original source.  Only what differs from that is written.
  if (!same_endpoint(f, conn.orig.dst, conn.orig.dst_port, conn.reply.src, conn.reply.src_port)) {
    tail += " dnat-from " + format_endpoint(f, conn.orig.dst, conn.orig.dst_port);
  }
  if (!same_endpoint(f, conn.reply.dst, conn.reply.dst_port, conn.orig.src, conn.orig.src_port)) {
    tail += " snat-to " + format_endpoint(f, conn.reply.dst, conn.reply.dst_port);
  }
  std::string devs;
  if (!note.iif.empty()) devs += "iif " + note.iif;
  if (!note.reply_iif.empty()) devs += std::string(devs.empty() ? "" : " ") + "riif " + note.reply_iif;
  std::string out = devs + tail;
  if (out.size() > kMaxElemComment) out = tail;
  if (!out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

Result<ElemNote> parse_note(uint8_t family, std::string_view text) {
  ElemNote note;
  std::vector<std::string_view> words;
  while (!text.empty()) {
    const size_t sp = text.find(' ');
    std::string_view w = text.substr(0, sp);
    if (!w.empty()) words.push_back(w);
    if (sp == std::string_view::npos) break;
    text.remove_prefix(sp + 1);
  }
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string_view w = words[i];
    if ((w == "iif" || w == "riif") && i + 1 < words.size()) {
      std::string_view dev = words[++i];
      if (dev.size() >= CT_OFFLOAD_IFNAMSIZ) return Status::error(EINVAL, "device name too long in element comment");
      (w == "iif" ? note.iif : note.reply_iif) = std::string(dev);
    } else if ((w == "dnat-from" || w == "snat-to") && i + 1 < words.size()) {
      auto ep = parse_endpoint(words[++i]);
      if (!ep) return ep.status().with_context(std::string(w) + " in element comment");
      if (ep->family != family)
        return Status::error(EINVAL, std::string(w) + " of the wrong family in element comment");
      (w == "dnat-from" ? note.dnat_from : note.snat_to) = *ep;
    } else if (w == "reply") {
      if (i + 3 >= words.size() || words[i + 2] != "->") {
        return Status::error(EINVAL, "malformed reply tuple in element comment");
      }
      auto src = parse_endpoint(words[i + 1]);
      auto dst = parse_endpoint(words[i + 3]);
      if (!src) return src.status();
      if (!dst) return dst.status();
      if (src->family != family || dst->family != family) {
        return Status::error(EINVAL, "reply tuple of the wrong family in element comment");
      }
      Tuple t{};
      t.src = src->addr;
      t.src_port = src->port;
      t.dst = dst->addr;
      t.dst_port = dst->port;
      note.reply = t;
      i += 3;
    }
    // Anything else: a word a newer version wrote; ignored.
  }
  return note;
}

netlink::SetElemPtr build_element(const Conn& conn, const ElemNote& note, bool with_note, Selector selector) {
  netlink::SetElemPtr e = netlink::make_set_elem();
  if (!e) return e;
  uint8_t key[44];
  const size_t len = build_key(conn, selector, key);
  nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_KEY, key, static_cast<uint32_t>(len));
  if (with_note) {
    const std::string text = format_note(conn, note);
    if (!text.empty()) {
      UdataPtr ud = comment_udata(NFTNL_UDATA_SET_ELEM_COMMENT, text);
      if (!ud) return nullptr;
      nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_USERDATA, nftnl_udata_buf_data(ud.get()),
                         nftnl_udata_buf_len(ud.get()));
    }
  }
  return e;
}

Result<DecodedElem> decode_element(const SelKey& key, nftnl_set_elem* e, Selector selector) {
  uint32_t len = 0;
  const auto* k = static_cast<const uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len));
  const KeyLayout l = key_layout(key.family);
  if (k == nullptr || len != l.len) {
    return Status::error(EINVAL, "element of set " + set_name(key) + " has a key of " + std::to_string(len) +
                                     " bytes, expected " + std::to_string(l.len));
  }
  DecodedElem d;
  if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_USERDATA)) {
    uint32_t ulen = 0;
    const void* ud = nftnl_set_elem_get(e, NFTNL_SET_ELEM_USERDATA, &ulen);
    const std::string text = udata_string(ud, ulen, NFTNL_UDATA_SET_ELEM_COMMENT);
    if (!text.empty()) {
      auto note = parse_note(key.family, text);
      if (!note) return note.status();
      d.note = std::move(*note);
      d.has_note = true;
    }
  }
  Conn& c = d.conn;
  c.family = key.family;
  c.zone = key.zone;
  c.proto = k[l.proto_off];
  const size_t a = addr_len(key.family);
  Addr saddr{}, daddr{};
  std::memcpy(saddr.bytes, k + l.saddr_off, a);
  std::memcpy(daddr.bytes, k + l.daddr_off, a);
  uint16_t port;
  std::memcpy(&port, k + l.sport_off, 2);
  const uint16_t sport = ntohs(port);
  std::memcpy(&port, k + l.dport_off, 2);
  const uint16_t dport = ntohs(port);
  if (selector == Selector::kLegacyCtOriginal) {
    // Layout 1: the key is the original tuple, the comment the reply tuple
    // under NAT.
    c.orig.src = saddr;
    c.orig.dst = daddr;
    c.orig.src_port = sport;
    c.orig.dst_port = dport;
    c.reply = d.note.reply ? *d.note.reply : mirror(c.orig);
    return d;
  }
  // Layout 2: the key is what an original-direction packet carries at the
  // forward hook; the comment says what NAT changed.
  c.orig.src = saddr;
  c.orig.src_port = sport;
  c.reply.src = daddr;
  c.reply.src_port = dport;
  c.orig.dst = d.note.dnat_from ? d.note.dnat_from->addr : daddr;
  c.orig.dst_port = d.note.dnat_from ? d.note.dnat_from->port : dport;
  c.reply.dst = d.note.snat_to ? d.note.snat_to->addr : saddr;
  c.reply.dst_port = d.note.snat_to ? d.note.snat_to->port : sport;
  return d;
}

// ---- Reading ----

std::string table_comment(const void* data, uint32_t len) { return udata_string(data, len, NFTNL_UDATA_TABLE_COMMENT); }

namespace {

std::atomic<uint32_t> g_query_seq{static_cast<uint32_t>(time(nullptr)) ^ 0x5a5a0000u};

constexpr size_t kQueryBuffer = size_t{256} * 1024;
constexpr int kQueryTimeoutMs = 5000;

Status query_once(netlink::Transport& t, nlmsghdr* nlh, std::string_view what,
                  const std::function<Status(const nlmsghdr*)>& on_msg, bool* delivered, bool* interrupted);

// Sends the GET request in 'buf' (built with nftnl_nlmsg_build_hdr) and
// hands every reply object message to 'on_msg' until the kernel's ack or
// NLMSG_DONE.  Messages of other requests (stale sequence numbers) are
// skipped.  A socket that is gone (EBADF, ENOTSOCK) is reopened and, when
// nothing of the answer was handed over yet, the request is sent again: a
// GET changes nothing, so asking twice is safe.  A dump the kernel marks
// interrupted (NLM_F_DUMP_INTR) is EINTR, unless 'interrupted' is given:
// request.h.
Status query(netlink::Transport& t, nlmsghdr* nlh, std::string_view what,
             const std::function<Status(const nlmsghdr*)>& on_msg, bool* interrupted = nullptr) {
  bool delivered = false;
  return netlink::reopen_once_and_resend(
      "nf_tables", [&] { return query_once(t, nlh, what, on_msg, &delivered, interrupted); },
      [&] { return t.reopen(); }, [&] { return !delivered; });
}

Status query_once(netlink::Transport& t, nlmsghdr* nlh, std::string_view what,
                  const std::function<Status(const nlmsghdr*)>& on_msg, bool* delivered, bool* interrupted) {
  nlh->nlmsg_seq = g_query_seq.fetch_add(1, std::memory_order_relaxed);
  std::vector<std::byte> buf(kQueryBuffer);
  netlink::RequestIo io{buf, kQueryTimeoutMs, what};
  io.interrupted = interrupted;
  return netlink::request_run(t, nlh, io, on_msg, delivered);
}

// A GET request buffer with room for the payload.
struct Request {
  alignas(nlmsghdr) char buf[8192];
};

}  // namespace

Result<TableState> decode_table(const nlmsghdr* nlh) {
  netlink::TablePtr t = netlink::make_table();
  if (!t) return Status::error(ENOMEM, "out of memory decoding a table");
  if (nftnl_table_nlmsg_parse(nlh, t.get()) < 0) return Status::error(EBADMSG, "malformed table message");
  TableState st;
  st.exists = true;
  if (nftnl_table_is_set(t.get(), NFTNL_TABLE_HANDLE)) st.handle = nftnl_table_get_u64(t.get(), NFTNL_TABLE_HANDLE);
  if (nftnl_table_is_set(t.get(), NFTNL_TABLE_FLAGS)) st.flags = nftnl_table_get_u32(t.get(), NFTNL_TABLE_FLAGS);
  if (nftnl_table_is_set(t.get(), NFTNL_TABLE_USE)) st.use = nftnl_table_get_u32(t.get(), NFTNL_TABLE_USE);
  if (nftnl_table_is_set(t.get(), NFTNL_TABLE_USERDATA)) {
    uint32_t len = 0;
    const void* ud = nftnl_table_get_data(t.get(), NFTNL_TABLE_USERDATA, &len);
    st.comment = table_comment(ud, len);
  }
  return st;
}

bool is_ours(const LayoutState& st) {
  if (!st.table.exists) return false;
  if (st.table.comment == kTableComment) return true;
  if (!st.table.comment.empty() || !st.chain || st.other_chains != 0 || st.rules.empty()) return false;
  for (const auto& r : st.rules) {
    if (!r.id) return false;
  }
  for (const auto& name : st.sets) {
    if (!parse_set_name(name)) return false;
  }
  for (const auto& f : st.flowtables) {
    if (f.name != flowtable_name(FtMode::kSw) && f.name != flowtable_name(FtMode::kHw)) return false;
  }
  return true;
}

Result<TableState> read_table(netlink::Transport& transport, const std::string& name) {
  auto req = std::make_unique<Request>();
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req->buf, NFT_MSG_GETTABLE, NFPROTO_INET, NLM_F_ACK, 0);
  netlink::TablePtr t = netlink::make_table();
  if (!t) return Status::error(ENOMEM, "out of memory");
  nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, name.c_str());
  nftnl_table_nlmsg_build_payload(nlh, t.get());
  TableState st;
  Status s = query(transport, nlh, "get table inet " + name, [&](const nlmsghdr* m) -> Status {
    auto d = decode_table(m);
    if (!d) return d.status();
    st = *d;
    return {};
  });
  if (s.err() == ENOENT) return TableState{};
  if (!s) return s;
  return st;
}

namespace {

Result<LayoutState> read_layout_once(netlink::Transport& transport, const LayoutOptions& opts);

}  // namespace

// The layout decides what the provider repairs, so it is not taken from a
// dump the kernel marks interrupted: the whole layout is read again, up to
// kLayoutReads times (each read is a handful of small dumps; a ruleset that
// changes under every one of them is reported, EINTR).
Result<LayoutState> read_layout(netlink::Transport& transport, const LayoutOptions& opts) {
  constexpr int kLayoutReads = 3;
  for (int n = 1;; ++n) {
    auto st = read_layout_once(transport, opts);
    if (st || st.err() != EINTR || n == kLayoutReads) {
      if (!st && st.err() == EINTR) {
        return st.status().with_context("table inet " + opts.table + " changed during each of " +
                                        std::to_string(kLayoutReads) + " reads");
      }
      return st;
    }
  }
}

namespace {

Result<LayoutState> read_layout_once(netlink::Transport& transport, const LayoutOptions& opts) {
  LayoutState out;
  auto table = read_table(transport, opts.table);
  if (!table) return table.status();
  out.table = *table;
  if (!out.table.exists) return out;
  auto req = std::make_unique<Request>();

  // Chains.
  {
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req->buf, NFT_MSG_GETCHAIN, NFPROTO_INET, NLM_F_DUMP, 0);
    netlink::ChainPtr c = netlink::make_chain();
    if (!c) return Status::error(ENOMEM, "out of memory");
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, opts.table.c_str());
    nftnl_chain_nlmsg_build_payload(nlh, c.get());
    Status s = query(transport, nlh, "list chains of table inet " + opts.table, [&](const nlmsghdr* m) -> Status {
      netlink::ChainPtr got = netlink::make_chain();
      if (!got || nftnl_chain_nlmsg_parse(m, got.get()) < 0) return Status::error(EBADMSG, "malformed chain message");
      const char* tn = nftnl_chain_get_str(got.get(), NFTNL_CHAIN_TABLE);
      const char* cn = nftnl_chain_get_str(got.get(), NFTNL_CHAIN_NAME);
      if (tn == nullptr || cn == nullptr || opts.table != tn) return {};
      if (kChainName == cn) {
        out.chain = true;
      } else {
        ++out.other_chains;
      }
      return {};
    });
    if (s.err() == ENOENT) return LayoutState{};  // The table went away meanwhile.
    if (!s) return s;
  }
  // Sets.
  {
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req->buf, NFT_MSG_GETSET, NFPROTO_INET, NLM_F_DUMP, 0);
    netlink::SetPtr set = netlink::make_set();
    if (!set) return Status::error(ENOMEM, "out of memory");
    nftnl_set_set_str(set.get(), NFTNL_SET_TABLE, opts.table.c_str());
    nftnl_set_nlmsg_build_payload(nlh, set.get());
    Status s = query(transport, nlh, "list sets of table inet " + opts.table, [&](const nlmsghdr* m) -> Status {
      netlink::SetPtr got = netlink::make_set();
      if (!got || nftnl_set_nlmsg_parse(m, got.get()) < 0) return Status::error(EBADMSG, "malformed set message");
      const char* tn = nftnl_set_get_str(got.get(), NFTNL_SET_TABLE);
      const char* sn = nftnl_set_get_str(got.get(), NFTNL_SET_NAME);
      if (tn != nullptr && sn != nullptr && opts.table == tn) out.sets.emplace_back(sn);
      return {};
    });
    if (s.err() == ENOENT) return LayoutState{};
    if (!s) return s;
  }
  // Flowtables.
  {
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req->buf, NFT_MSG_GETFLOWTABLE, NFPROTO_INET, NLM_F_DUMP, 0);
    netlink::FlowtablePtr f = netlink::make_flowtable();
    if (!f) return Status::error(ENOMEM, "out of memory");
    nftnl_flowtable_set_str(f.get(), NFTNL_FLOWTABLE_TABLE, opts.table.c_str());
    nftnl_flowtable_nlmsg_build_payload(nlh, f.get());
    Status s = query(transport, nlh, "list flowtables of table inet " + opts.table, [&](const nlmsghdr* m) -> Status {
      netlink::FlowtablePtr got = netlink::make_flowtable();
      if (!got || nftnl_flowtable_nlmsg_parse(m, got.get()) < 0) {
        return Status::error(EBADMSG, "malformed flowtable message");
      }
      const char* tn = nftnl_flowtable_get_str(got.get(), NFTNL_FLOWTABLE_TABLE);
      const char* fn = nftnl_flowtable_get_str(got.get(), NFTNL_FLOWTABLE_NAME);
      if (tn == nullptr || fn == nullptr || opts.table != tn) return {};
      FlowtableState ft;
      ft.name = fn;
      if (nftnl_flowtable_is_set(got.get(), NFTNL_FLOWTABLE_FLAGS)) {
        ft.flags = nftnl_flowtable_get_u32(got.get(), NFTNL_FLOWTABLE_FLAGS);
      }
      if (nftnl_flowtable_is_set(got.get(), NFTNL_FLOWTABLE_PRIO)) {
        ft.priority = nftnl_flowtable_get_s32(got.get(), NFTNL_FLOWTABLE_PRIO);
      }
      if (nftnl_flowtable_is_set(got.get(), NFTNL_FLOWTABLE_HOOKNUM)) {
        ft.hooknum = nftnl_flowtable_get_u32(got.get(), NFTNL_FLOWTABLE_HOOKNUM);
      }
      if (nftnl_flowtable_is_set(got.get(), NFTNL_FLOWTABLE_DEVICES)) {
        const char* const* devs = nftnl_flowtable_get_array(got.get(), NFTNL_FLOWTABLE_DEVICES);
        for (size_t i = 0; devs != nullptr && devs[i] != nullptr; ++i) ft.devices.emplace_back(devs[i]);
      }
      out.flowtables.push_back(std::move(ft));
      return {};
    });
    if (s.err() == ENOENT) return LayoutState{};
    // A kernel without flowtables still answers the dump (with nothing).
    if (!s && s.err() != EOPNOTSUPP) return s;
  }
  // Rules of our chain.
  if (out.chain) {
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req->buf, NFT_MSG_GETRULE, NFPROTO_INET, NLM_F_DUMP, 0);
    netlink::RulePtr r = netlink::make_rule();
    if (!r) return Status::error(ENOMEM, "out of memory");
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, opts.table.c_str());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, std::string(kChainName).c_str());
    nftnl_rule_nlmsg_build_payload(nlh, r.get());
    Status s =
        query(transport, nlh, "list rules of chain " + std::string(kChainName), [&](const nlmsghdr* m) -> Status {
          netlink::RulePtr got = netlink::make_rule();
          if (!got || nftnl_rule_nlmsg_parse(m, got.get()) < 0) return Status::error(EBADMSG, "malformed rule message");
          const char* tn = nftnl_rule_get_str(got.get(), NFTNL_RULE_TABLE);
          const char* cn = nftnl_rule_get_str(got.get(), NFTNL_RULE_CHAIN);
          if (tn == nullptr || cn == nullptr || opts.table != tn || kChainName != cn) return {};
          RuleState rs;
          rs.handle = nftnl_rule_get_u64(got.get(), NFTNL_RULE_HANDLE);
          if (nftnl_rule_is_set(got.get(), NFTNL_RULE_USERDATA)) {
            uint32_t len = 0;
            const void* ud = nftnl_rule_get_data(got.get(), NFTNL_RULE_USERDATA, &len);
            rs.comment = udata_string(ud, len, NFTNL_UDATA_RULE_COMMENT);
          }
          rs.id = parse_rule_comment(rs.comment);
          out.rules.push_back(std::move(rs));
          return {};
        });
    if (s.err() == ENOENT) {
      out.chain = false;
    } else if (!s) {
      return s;
    }
  }
  return out;
}

// Hands every element of set element message 'm' to 'visit'.
Status visit_elements(const nlmsghdr* m, const std::function<void(nftnl_set_elem*)>& visit) {
  netlink::SetPtr got = netlink::make_set();
  if (!got || nftnl_set_elems_nlmsg_parse(m, got.get()) < 0) {
    return Status::error(EBADMSG, "malformed set element message");
  }
  (void)nftnl_set_elem_foreach(
      got.get(),
      [](nftnl_set_elem* e, void* data) -> int {
        (*static_cast<const std::function<void(nftnl_set_elem*)>*>(data))(e);
        return 0;
      },
      const_cast<std::function<void(nftnl_set_elem*)>*>(&visit));
  return {};
}

}  // namespace

Status read_elements(netlink::Transport& transport, const LayoutOptions& opts, const SelKey& key,
                     const std::function<void(nftnl_set_elem*)>& visit) {
  auto req = std::make_unique<Request>();
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req->buf, NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, 0);
  netlink::SetPtr s = build_set_ref(opts, key);
  if (!s) return Status::error(ENOMEM, "out of memory");
  nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
  // A set being written to while it is dumped is listed as the kernel gave
  // it, as `nft list set` does: a consistent snapshot of a large set under
  // writes cannot be had, and 'visit' has seen its elements already.
  bool interrupted = false;
  return query(
      transport, nlh, "list elements of set " + set_name(key),
      [&](const nlmsghdr* m) -> Status { return visit_elements(m, visit); }, &interrupted);
}

Status read_element(netlink::Transport& transport, const LayoutOptions& opts, const SelKey& key, const Conn& conn,
                    const std::function<void(nftnl_set_elem*)>& visit) {
  auto req = std::make_unique<Request>();
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(req->buf, NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_ACK, 0);
  netlink::SetPtr s = build_set_ref(opts, key);
  netlink::SetElemPtr e = build_element(conn, {}, false);
  if (!s || !e) return Status::error(ENOMEM, "out of memory");
  nftnl_set_elem_add(s.get(), e.release());
  nftnl_set_elems_nlmsg_build_payload(nlh, s.get());
  return query(transport, nlh, "get element of set " + set_name(key),
               [&](const nlmsghdr* m) -> Status { return visit_elements(m, visit); });
}

}  // namespace ctoffload::nft
