// nft_layout.h - the nf_tables objects the nft_flowtable provider owns,
// built and read back with libnftnl.
//
// Everything lives in one inet table (docs/LAYOUT.md shows it as `nft list
// ruleset` prints it, and says why it is built this way):
//
//   table inet ctoffload {                       comment names the owner
//     flowtable ft_sw { hook ingress priority filter; devices = {...};
//                       counter }                software fast path
//     flowtable ft_hw { ... flags offload; counter }   only when hardware
//                                                      offload was asked for
//     set sel4        { type ipv4_addr . ipv4_addr . inet_proto .
//                       inet_service . inet_service }  zone 0, software
//     set sel6_z7_hw  { ... }                    one set per family, zone
//                                                and flowtable in use
//     chain forward {
//       type filter hook forward priority filter + 100;
//       meta nfproto ipv4 ct zone 0 ip saddr . ip daddr . meta l4proto .
//         th sport . th dport @sel4 counter flow add @ft_sw
//         comment "sel4 original"
//       meta nfproto ipv4 ct zone 0 ip daddr . ip saddr . meta l4proto .
//         th dport . th sport @sel4 counter flow add @ft_sw
//         comment "sel4 reply"
//     }
//   }
//
// A connection is one element: the header fields its original-direction
// packets carry at the forward hook, where DNAT has happened and SNAT has
// not: original source, reply source (the DNAT target), protocol, original
// source port, reply source port.  The reply direction's packets carry the
// same fields swapped, so the second rule, which reads them swapped, finds
// the same element: one element selects both directions, with and without
// NAT.  The element's comment keeps what the key does not (the input
// devices, the original destination before DNAT, the source after SNAT) so
// that a restarted process can adopt the connection.
//
// Layout 1 (ctoffload before this layout) keyed the element on the
// conntrack original tuple and read it with `ct original proto-src`, which
// nft lists but cannot read back (`nft list ruleset > f; nft -f f` fails).
// Its rules are recognised (comment = the set's name) so that the provider
// migrates such a table; the legacy builders exist for that and its tests.
//
// This module only builds and decodes objects and talks to the kernel for
// reads (GET requests); writes go through netlink::NftTxn.  Return
// convention: Status/Result with a positive errno (nl_error.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "ctoffload/conn.h"
#include "ctoffload/result.h"
#include "netlink/nft_txn.h"
#include "providers/ft_mode.h"

struct nftnl_set_elem;
struct nlmsghdr;

namespace ctoffload::netlink {
class Transport;
}

namespace ctoffload::nft {

// The table comment: says who owns the table.  A table of the configured
// name without it is not ours and is never adopted or changed.
inline constexpr std::string_view kTableComment = "managed by ctoffload; do not edit";
// The base chain with the selection rules.  ("fwd" is an nft keyword.)
inline constexpr std::string_view kChainName = "forward";
// The chain runs after the usual filter-priority chains of other tables, so
// a packet another table drops is not offloaded by us first.
inline constexpr int32_t kChainPriority = 100;
// The flowtables' ingress hook priority (nft's "filter").
inline constexpr int32_t kFlowtablePriority = 0;
// Longest table name nft users can type comfortably; the kernel allows more.
inline constexpr size_t kMaxTableName = 31;
// Longest element comment written (nft's own limit for comments).
inline constexpr size_t kMaxElemComment = 127;

// "ft_sw" / "ft_hw".
std::string_view flowtable_name(FtMode kind);

// Identifies one selection set (and its rule): the connections of one
// family in one conntrack zone that go to one flowtable.
struct SelKey {
  uint8_t family = 0;  // AF_INET or AF_INET6.
  uint16_t zone = 0;
  FtMode kind = FtMode::kSw;

  friend bool operator==(const SelKey&, const SelKey&) = default;
  friend bool operator<(const SelKey& a, const SelKey& b) {
    return std::tie(a.family, a.zone, a.kind) < std::tie(b.family, b.zone, b.kind);
  }
};

// "sel4", "sel6", "sel4_z7", "sel4_hw", "sel6_z7_hw".
std::string set_name(const SelKey& key);
// The inverse of set_name(); nullopt for any other name.
std::optional<SelKey> parse_set_name(std::string_view name);

// The two selection rules of a set: one reads the fields of original-
// direction packets, the other the same fields of reply-direction packets.
enum class RuleDir : uint8_t { kOriginal = 0, kReply = 1 };

// How an element's key is made (and so how its set's rules read packets).
enum class Selector : uint8_t {
  // Layout 2: packet header fields at the forward hook (build_key()).
  kPacket = 0,
  // Layout 1: the conntrack original tuple (build_legacy_key()); only read
  // back, to migrate.
  kLegacyCtOriginal = 1,
};

// "sel4 original", "sel6_z7_hw reply": the comment that names a rule.
std::string rule_comment(const SelKey& key, RuleDir dir);

// What a rule's comment says it is.
struct RuleId {
  SelKey key;
  Selector selector = Selector::kPacket;
  RuleDir dir = RuleDir::kOriginal;  // Layout 1 had one rule per set.
};
// The inverse of rule_comment(), and layout 1's rule comment (the set's
// name alone); nullopt for any other comment.
std::optional<RuleId> parse_rule_comment(std::string_view comment);

// True for a valid table name: 1..31 characters, a letter first, then
// letters, digits, '_' or '-' (what nft accepts as an identifier there).
bool valid_table_name(std::string_view name);

// How the objects are built.
struct LayoutOptions {
  std::string table = "ctoffload";
  // False builds the layout without flowtables: the selection rules then
  // end in `counter` only (no `flow add`).  For kernels without flowtables
  // (tests on this machine's kernel); never the provider's default.
  bool flowtables = true;
  // Table flags: NFT_TABLE_F_OWNER makes the table go with the socket that
  // created it (the probe uses that so a crash leaves nothing behind).
  uint32_t table_flags = 0;
  // Overrides the table comment (the probe's temporary table).
  std::string comment{kTableComment};
};

// ---- Builders: each returns a libnftnl object ready for NftTxn, null only
// ---- when memory is exhausted.

// The table with its comment (NFTNL_TABLE_USERDATA, nft's comment TLV).
netlink::TablePtr build_table(const LayoutOptions& opts);
// Only the table's family and name (for DELTABLE).
netlink::TablePtr build_table_ref(const LayoutOptions& opts);
// The forward-hook base chain.
netlink::ChainPtr build_chain(const LayoutOptions& opts);
// A flowtable with the ingress hook, flags `counter` (plus `offload` for
// kHw) and 'devices' (possibly none).  Sent as NEWFLOWTABLE for an
// existing flowtable it adds 'devices'; as DELFLOWTABLE it removes them.
netlink::FlowtablePtr build_flowtable(const LayoutOptions& opts, FtMode kind, const std::vector<std::string>& devices);
// Only the flowtable's table and name (for DELFLOWTABLE of all of it).
netlink::FlowtablePtr build_flowtable_ref(const LayoutOptions& opts, FtMode kind);
// The flowtable flags build_flowtable() uses for 'kind'.
uint32_t flowtable_flags(FtMode kind);
// The selection set of 'key' (no elements).
netlink::SetPtr build_set(const LayoutOptions& opts, const SelKey& key);
// A selection rule of 'key': nfproto, zone, the lookup of the packet's
// header fields in the set (swapped for kReply), a counter, and `flow add`
// to the key's flowtable (unless !opts.flowtables).  Its comment is
// rule_comment(key, dir).
netlink::RulePtr build_rule(const LayoutOptions& opts, const SelKey& key, RuleDir dir);
// Layout 1's selection rule of 'key' (ct original tuple; comment = set
// name).  Only for migration tests: the provider never builds it.
netlink::RulePtr build_legacy_rule(const LayoutOptions& opts, const SelKey& key);
// A rule naming only table, chain and 'handle' (for DELRULE).
netlink::RulePtr build_rule_ref(const LayoutOptions& opts, uint64_t handle);
// A set object naming the set of 'key', to carry elements (add_elements).
netlink::SetPtr build_set_ref(const LayoutOptions& opts, const SelKey& key);

// Bytes of an element key: 20 for IPv4, 44 for IPv6.
size_t key_len(uint8_t family);
// The element key of 'conn' as the rules' registers hold it (each field
// padded to 4 bytes, ports in network byte order): orig.src . reply.src .
// proto . orig.src_port . reply.src_port, which is what an original-
// direction packet carries at the forward hook (DNAT done, SNAT not yet).
// Returns the length written to 'out' (which holds at least 44 bytes).
size_t build_key(const Conn& conn, uint8_t* out);
// Layout 1's key: the original tuple (orig.src . orig.dst . proto .
// orig.src_port . orig.dst_port).  Without NAT both keys are the same bytes.
size_t build_legacy_key(const Conn& conn, uint8_t* out);
// The key of 'conn' for 'selector'.
size_t build_key(const Conn& conn, Selector selector, uint8_t* out);

// What a selection element's comment records.
struct ElemNote {
  std::string iif;        // Input device of the original direction.
  std::string reply_iif;  // Input device of the reply direction.
  // Read back only (format_note() derives them from the connection): the
  // original destination when DNAT changed it ("dnat-from"), the source
  // after SNAT when SNAT changed it ("snat-to"), and layout 1's reply tuple
  // ("reply A -> B").
  std::optional<Endpoint> dnat_from;
  std::optional<Endpoint> snat_to;
  std::optional<Tuple> reply;
};

// "iif eth0 riif eth1", plus " dnat-from 192.0.2.1:80" when DNAT changed
// the destination and " snat-to 198.51.100.1:4000" when SNAT changed the
// source: with the key, exactly both tuples.  Device names are left out
// when the whole would exceed kMaxElemComment characters.
std::string format_note(const Conn& conn, const ElemNote& note);
// Parses a comment for a connection of 'family': format_note()'s words and
// layout 1's "reply A -> B".  Unknown words are ignored (a newer version may
// add some).  EINVAL for a malformed address or a device name too long.
Result<ElemNote> parse_note(uint8_t family, std::string_view text);

// An element for 'conn' with its comment; 'with_note' false builds the key
// only (enough for deletion and for a GET).
netlink::SetElemPtr build_element(const Conn& conn, const ElemNote& note, bool with_note = true,
                                  Selector selector = Selector::kPacket);

// A decoded selection element.
struct DecodedElem {
  Conn conn{};  // family, proto, zone and both tuples, from the key and the note.
  ElemNote note;
  bool has_note = false;
};
// Decodes element 'e' of set 'key' built for 'selector'.  EINVAL for a key
// of the wrong length or a malformed comment.
Result<DecodedElem> decode_element(const SelKey& key, nftnl_set_elem* e, Selector selector = Selector::kPacket);

// ---- Reading the kernel's copy (GET requests over 'transport').

struct TableState {
  bool exists = false;
  uint64_t handle = 0;
  uint32_t flags = 0;
  uint32_t use = 0;     // Objects in the table (chains, sets, flowtables).
  std::string comment;  // Empty when it has none.
};

struct FlowtableState {
  std::string name;
  uint32_t flags = 0;
  int32_t priority = 0;
  uint32_t hooknum = 0;
  std::vector<std::string> devices;
};

struct RuleState {
  uint64_t handle = 0;
  std::string comment;
  std::optional<RuleId> id;  // parse_rule_comment(comment).
};

struct LayoutState {
  TableState table;
  bool chain = false;       // kChainName exists.
  size_t other_chains = 0;  // Chains of the table other than kChainName.
  std::vector<std::string> sets;
  std::vector<FlowtableState> flowtables;
  std::vector<RuleState> rules;  // Rules of kChainName.
};

// Whether the table in 'st' is ours: it carries our comment, or - because
// nft 1.0.6 drops table comments from its JSON output, so that `nft -j
// list ruleset > f; nft -j -f f` restores the table without one - it has no
// comment and holds only objects of ours (our chain with at least one
// selection rule, selection sets, ft_sw/ft_hw).
bool is_ours(const LayoutState& st);

// The table 'name' (exists false when the kernel says ENOENT).
Result<TableState> read_table(netlink::Transport& transport, const std::string& name);
// Table, chain, sets, flowtables and rules of 'opts.table' in one go (one
// request each).  A missing table gives exists false and nothing else.
Result<LayoutState> read_layout(netlink::Transport& transport, const LayoutOptions& opts);
// Visits every element of set 'key'.  ENOENT when the set does not exist.
Status read_elements(netlink::Transport& transport, const LayoutOptions& opts, const SelKey& key,
                     const std::function<void(nftnl_set_elem*)>& visit);
// Looks up the element of 'conn' in set 'key' (one GET, whatever the set's
// size) and hands it to 'visit'.  ENOENT when the set or the element does
// not exist.
Status read_element(netlink::Transport& transport, const LayoutOptions& opts, const SelKey& key, const Conn& conn,
                    const std::function<void(nftnl_set_elem*)>& visit);

// Decodes a table message (for tests and the reader).
Result<TableState> decode_table(const nlmsghdr* nlh);
// The comment in table user data 'data' ('len' bytes), or "".
std::string table_comment(const void* data, uint32_t len);

}  // namespace ctoffload::nft
