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
//       meta nfproto ipv4 ct zone 0 ct original ip saddr .
//         ct original ip daddr . ct protocol . ct original proto-src .
//         ct original proto-dst @sel4 counter flow add @ft_sw comment "sel4"
//     }
//   }
//
// A connection is one element: its conntrack ORIGINAL tuple (addresses,
// protocol, ports), which both directions of its packets share and which
// NAT does not change, so one element selects both directions, before and
// after SNAT/DNAT.  The element's comment keeps what the key does not (the
// input devices, and the reply tuple under NAT) so that a restarted process
// can adopt the connection.
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

// Which flowtable a device or connection uses.
enum class FtKind : uint8_t { kSw = 0, kHw = 1 };

// "ft_sw" / "ft_hw".
std::string_view flowtable_name(FtKind kind);

// Identifies one selection set (and its rule): the connections of one
// family in one conntrack zone that go to one flowtable.
struct SelKey {
  uint8_t family = 0;  // AF_INET or AF_INET6.
  uint16_t zone = 0;
  FtKind kind = FtKind::kSw;

  friend bool operator==(const SelKey&, const SelKey&) = default;
  friend bool operator<(const SelKey& a, const SelKey& b) {
    return std::tie(a.family, a.zone, a.kind) < std::tie(b.family, b.zone, b.kind);
  }
};

// "sel4", "sel6", "sel4_z7", "sel4_hw", "sel6_z7_hw".
std::string set_name(const SelKey& key);
// The inverse of set_name(); nullopt for any other name.
std::optional<SelKey> parse_set_name(std::string_view name);

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
netlink::FlowtablePtr build_flowtable(const LayoutOptions& opts, FtKind kind, const std::vector<std::string>& devices);
// The flowtable flags build_flowtable() uses for 'kind'.
uint32_t flowtable_flags(FtKind kind);
// The selection set of 'key' (no elements).
netlink::SetPtr build_set(const LayoutOptions& opts, const SelKey& key);
// The selection rule of 'key': nfproto, zone, the ct-tuple lookup in the
// set, a counter, and `flow add` to the key's flowtable (unless
// !opts.flowtables).  Its comment is the set's name.
netlink::RulePtr build_rule(const LayoutOptions& opts, const SelKey& key);
// A set object naming the set of 'key', to carry elements (add_elements).
netlink::SetPtr build_set_ref(const LayoutOptions& opts, const SelKey& key);

// Bytes of an element key: 20 for IPv4, 44 for IPv6.
size_t key_len(uint8_t family);
// The element key of 'conn': its original tuple as the rule's registers
// hold it (each field padded to 4 bytes, ports in network byte order).
// Returns the length written to 'out' (which holds at least 44 bytes).
size_t build_key(const Conn& conn, uint8_t* out);

// What a selection element's comment records.
struct ElemNote {
  std::string iif;        // Input device of the original direction.
  std::string reply_iif;  // Input device of the reply direction.
  // The reply tuple when it is not the mirror of the original (NAT).
  std::optional<Tuple> reply;
};

// "iif eth0 riif eth1" plus " reply 10.0.0.2:80 -> 192.0.2.1:4000" under
// NAT.  Device names are left out when the whole would exceed
// kMaxElemComment characters.
std::string format_note(const Conn& conn, const ElemNote& note);
// Parses format_note()'s output for a connection of 'family'.  Unknown words
// are ignored (a newer version may add some).  EINVAL for a malformed reply.
Result<ElemNote> parse_note(uint8_t family, std::string_view text);

// An element for 'conn' with its comment; 'with_note' false builds the key
// only (enough for deletion).
netlink::SetElemPtr build_element(const Conn& conn, const ElemNote& note, bool with_note = true);

// A decoded selection element.
struct DecodedElem {
  Conn conn{};  // family, proto, zone, orig; reply from the note or mirrored.
  ElemNote note;
  bool has_note = false;
};
// Decodes element 'e' of set 'key'.  EINVAL for a key of the wrong length.
Result<DecodedElem> decode_element(const SelKey& key, nftnl_set_elem* e);

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
};

struct LayoutState {
  TableState table;
  bool chain = false;  // kChainName exists.
  std::vector<std::string> sets;
  std::vector<FlowtableState> flowtables;
  std::vector<RuleState> rules;  // Rules of kChainName.
};

// The table 'name' (exists false when the kernel says ENOENT).
Result<TableState> read_table(netlink::Transport& transport, const std::string& name);
// Table, chain, sets, flowtables and rules of 'opts.table' in one go (one
// request each).  A missing table gives exists false and nothing else.
Result<LayoutState> read_layout(netlink::Transport& transport, const LayoutOptions& opts);
// Visits every element of set 'key'.  ENOENT when the set does not exist.
Status read_elements(netlink::Transport& transport, const LayoutOptions& opts, const SelKey& key,
                     const std::function<void(nftnl_set_elem*)>& visit);

// Decodes a table message (for tests and the reader).
Result<TableState> decode_table(const nlmsghdr* nlh);
// The comment in table user data 'data' ('len' bytes), or "".
std::string table_comment(const void* data, uint32_t len);

}  // namespace ctoffload::nft
