// nft_txn.cc - building, sending and resolving nf_tables batches.
//
// The flow of one commit():
//   queue of work units (an op, or a range of an element op's elements)
//     -> plan_batch(): as many units as fit one kernel transaction, built as
//        netlink messages into an nftnl_batch
//     -> exchange(): one sendmsg, then read every ack (EAGAIN: resend)
//     -> resolve(): committed, or give failed messages their errors and put
//        the rest back at the front of the queue
//   until the queue is empty.
#include "netlink/nft_txn.h"

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/flowtable.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <ctime>
#include <deque>
#include <optional>
#include <utility>

#include "log.h"
#include "netlink/nft_socket.h"
#include "netlink/nl_error.h"
#include "netlink/request.h"

namespace ctoffload::netlink {

void NftnlFree::operator()(nftnl_table* t) const noexcept { nftnl_table_free(t); }
void NftnlFree::operator()(nftnl_chain* c) const noexcept { nftnl_chain_free(c); }
void NftnlFree::operator()(nftnl_set* s) const noexcept { nftnl_set_free(s); }
void NftnlFree::operator()(nftnl_set_elem* e) const noexcept { nftnl_set_elem_free(e); }
void NftnlFree::operator()(nftnl_flowtable* f) const noexcept { nftnl_flowtable_free(f); }
void NftnlFree::operator()(nftnl_rule* r) const noexcept { nftnl_rule_free(r); }

TablePtr make_table() { return TablePtr(nftnl_table_alloc()); }
ChainPtr make_chain() { return ChainPtr(nftnl_chain_alloc()); }
SetPtr make_set() { return SetPtr(nftnl_set_alloc()); }
SetElemPtr make_set_elem() { return SetElemPtr(nftnl_set_elem_alloc()); }
FlowtablePtr make_flowtable() { return FlowtablePtr(nftnl_flowtable_alloc()); }
RulePtr make_rule() { return RulePtr(nftnl_rule_alloc()); }

namespace {

// Batch pages: messages are written straight into them.  A page holds
// kPageSize bytes of whole messages; the overrun area behind it lets the
// message being written run past that (an element message is up to 64 KiB
// plus one element that did not fit).  malloc() maps such buffers lazily, so
// the generous overrun costs address space, not memory.
constexpr uint32_t kPageSize = 256u * 1024u;
constexpr uint32_t kPageOverrun = 4u * 1024u * 1024u;
// nla_len is 16 bits: an element-list nest, and each element in it, must
// stay within this many bytes.
constexpr size_t kMaxNestBytes = UINT16_MAX;
// The kernel refuses element user data longer than this (NFT_USERDATA_MAXLEN).
constexpr uint32_t kMaxElemUserdata = 256;
constexpr size_t kBatchEndBytes = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
// Big enough for any ack, even one echoing a whole request (no NETLINK_CAP_ACK).
constexpr size_t kReceiveBufferBytes = size_t{256} * 1024;
// A commit that needs more kernel transactions than this has met something
// that keeps changing under it (another writer); remaining ops get EBUSY.
constexpr size_t kMaxBatchesPerCommit = 100000;

enum class Kind : uint8_t { kTable, kChain, kSet, kFlowtable, kRule, kElements };

// Sequence numbers are unique per process so that a late ack for an older
// batch on the same socket can never be taken for one of ours.
std::atomic<uint32_t> g_next_seq{static_cast<uint32_t>(time(nullptr))};

struct BatchFree {
  void operator()(nftnl_batch* b) const noexcept { nftnl_batch_free(b); }
};
using BatchPtr = std::unique_ptr<nftnl_batch, BatchFree>;

const char* verb_of(uint16_t type) {
  switch (type) {
    case NFT_MSG_NEWTABLE:
    case NFT_MSG_NEWCHAIN:
    case NFT_MSG_NEWSET:
    case NFT_MSG_NEWRULE:
    case NFT_MSG_NEWFLOWTABLE:
    case NFT_MSG_NEWSETELEM:
      return "add";
    default:
      return "delete";
  }
}

bool type_fits(Kind kind, uint16_t type) {
  switch (kind) {
    case Kind::kTable:
      return type == NFT_MSG_NEWTABLE || type == NFT_MSG_DELTABLE;
    case Kind::kChain:
      return type == NFT_MSG_NEWCHAIN || type == NFT_MSG_DELCHAIN;
    case Kind::kSet:
      return type == NFT_MSG_NEWSET || type == NFT_MSG_DELSET;
    case Kind::kFlowtable:
      return type == NFT_MSG_NEWFLOWTABLE || type == NFT_MSG_DELFLOWTABLE;
    case Kind::kRule:
      return type == NFT_MSG_NEWRULE || type == NFT_MSG_DELRULE;
    case Kind::kElements:
      return type == NFT_MSG_NEWSETELEM || type == NFT_MSG_DELSETELEM;
  }
  return false;
}

std::string str_or(const char* s, const char* fallback) {
  return s != nullptr ? std::string(s) : std::string(fallback);
}

// One op as added by the caller.
struct Op {
  Kind kind = Kind::kTable;
  uint16_t type = 0;
  uint16_t flags = 0;
  uint16_t family = 0;
  std::string what;       // names the op in its Status
  std::string elem_what;  // names one element, before " (id N)"
  TablePtr table;
  ChainPtr chain;
  SetPtr set;
  FlowtablePtr flowtable;
  RulePtr rule;
  // Element ops: the set's elements (owned by 'set'), their ids, and where
  // the messages point.
  std::vector<nftnl_set_elem*> elems;
  std::vector<uint64_t> ids;
  const char* table_name = nullptr;
  const char* set_name = nullptr;
  std::optional<uint32_t> set_id;
  Status status;
  std::vector<ElementFailure> failures;
  bool unknown = false;  // some failure of this op has an unknown outcome
};

// A piece of work: a whole op (first == last == 0), or elements
// [first, last) of an element op, sent many per message or one per message.
struct Unit {
  uint32_t op = 0;
  uint32_t first = 0;
  uint32_t last = 0;
  bool singles = false;
};

// One op message in a planned batch; its sequence number is the batch's
// first op sequence number plus its index.
struct Msg {
  uint32_t op = 0;
  uint32_t first = 0;
  uint32_t last = 0;
  bool singles = false;
  const nlmsghdr* nlh = nullptr;  // inside the batch's pages
};

struct AckSlot {
  bool got = false;
  KernelAck ack;
};

// What came back for one batch.
struct Outcome {
  Status transport;                      // a failed send or receive
  bool sent = false;                     // the batch reached the kernel
  std::optional<KernelAck> batch_error;  // an error for BATCH_BEGIN/END: the whole batch failed
  size_t got = 0;
  bool any_error = false;
  bool enobufs = false;
  bool eagain = false;
};

}  // namespace

struct NftTxn::Impl {
  Impl(Transport& t, NftTxnOptions o) : transport(t), options(o), logger(log::get("netlink")) {}

  Transport& transport;
  NftTxnOptions options;
  std::shared_ptr<spdlog::logger> logger;
  std::vector<Op> ops;
  NftTxnStats stats;
  bool committed = false;

  // Per-batch state, reused across batches.
  BatchPtr batch;
  std::vector<Msg> msgs;
  std::vector<AckSlot> acks;
  std::vector<Unit> retry;
  std::vector<iovec> iov;
  std::vector<std::byte> rbuf;
  uint32_t begin_seq = 0;
  uint32_t end_seq = 0;
  size_t bytes = 0;

  OpId add(Op op);
  Status commit();

  size_t send_limit() const;
  size_t ack_limit() const;
  Status plan_batch(std::deque<Unit>& queue);
  nlmsghdr* build_object(Op& op, char* buf, uint32_t seq);
  Outcome exchange();
  Status send_batch();
  bool reopen_after(const Status& why);
  void read_acks(Outcome& out);
  void drain();
  void resolve(const Outcome& out, std::deque<Unit>& queue);
  void fail_msg(const Msg& m, const Status& proto, int err, std::string_view extack, bool unknown = false);
  void fail_element(Op& op, uint32_t index, int err, std::string_view extack);
  void fail_element_status(Op& op, uint32_t index, Status status, bool unknown = false);
  void finish_op(Op& op);
  static void push_front_merged(std::deque<Unit>& queue, const std::vector<Unit>& units);
};

namespace {

// Where in element message 'nlh' byte offset 'off' falls.
enum class OffsetPlace { kElement, kListHeader, kMessage };
struct OffsetHit {
  OffsetPlace place = OffsetPlace::kMessage;
  uint32_t index = 0;  // element within the message, for kElement
};

OffsetHit locate_offset(const nlmsghdr* nlh, uint32_t off) {
  const char* base = reinterpret_cast<const char*>(nlh);
  const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  auto* attr = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
  for (; mnl_attr_ok(attr, static_cast<int>(tail - reinterpret_cast<const char*>(attr))); attr = mnl_attr_next(attr)) {
    if (mnl_attr_get_type(attr) != NFTA_SET_ELEM_LIST_ELEMENTS) continue;
    const auto start = static_cast<uint32_t>(reinterpret_cast<const char*>(attr) - base);
    if (off < start || off >= start + attr->nla_len) continue;
    const char* nest_tail = reinterpret_cast<const char*>(attr) + attr->nla_len;
    uint32_t k = 0;
    for (auto* elem = static_cast<const nlattr*>(mnl_attr_get_payload(attr));
         mnl_attr_ok(elem, static_cast<int>(nest_tail - reinterpret_cast<const char*>(elem)));
         elem = mnl_attr_next(elem)) {
      const auto estart = static_cast<uint32_t>(reinterpret_cast<const char*>(elem) - base);
      if (off >= estart && off < estart + elem->nla_len) return {OffsetPlace::kElement, k};
      ++k;
    }
    return {OffsetPlace::kListHeader, 0};
  }
  return {OffsetPlace::kMessage, 0};
}

int collect_elem(nftnl_set_elem* e, void* data) {
  static_cast<std::vector<nftnl_set_elem*>*>(data)->push_back(e);
  return 0;
}

}  // namespace

NftTxn::NftTxn(Transport& transport, NftTxnOptions options) : impl_(std::make_unique<Impl>(transport, options)) {}
NftTxn::~NftTxn() = default;
NftTxn::NftTxn(NftTxn&&) noexcept = default;
NftTxn& NftTxn::operator=(NftTxn&&) noexcept = default;

OpId NftTxn::Impl::add(Op op) {
  if (committed) {
    op.status = Status::error(EALREADY, op.what + ": transaction already committed");
  } else if (!op.status.ok()) {
    // Already failed validation.
  } else if (!type_fits(op.kind, op.type)) {
    op.status =
        Status::error(EINVAL, op.what + ": message type " + std::to_string(op.type) + " does not fit the object");
  }
  ops.push_back(std::move(op));
  return ops.size() - 1;
}

OpId NftTxn::add_table(uint16_t msg_type, uint16_t flags, TablePtr table, std::string what) {
  Op op;
  op.kind = Kind::kTable;
  op.type = msg_type;
  op.flags = flags;
  if (table && what.empty()) {
    what = std::string(verb_of(msg_type)) + " table " + str_or(nftnl_table_get_str(table.get(), NFTNL_TABLE_NAME), "?");
  }
  op.what = what.empty() ? "table op" : std::move(what);
  if (!table) {
    op.status = Status::error(EINVAL, op.what + ": no table object");
  } else if (!nftnl_table_is_set(table.get(), NFTNL_TABLE_FAMILY)) {
    op.status = Status::error(EINVAL, op.what + ": table has no family");
  } else {
    op.family = static_cast<uint16_t>(nftnl_table_get_u32(table.get(), NFTNL_TABLE_FAMILY));
  }
  op.table = std::move(table);
  return impl_->add(std::move(op));
}

OpId NftTxn::add_chain(uint16_t msg_type, uint16_t flags, ChainPtr chain, std::string what) {
  Op op;
  op.kind = Kind::kChain;
  op.type = msg_type;
  op.flags = flags;
  if (chain && what.empty()) {
    what = std::string(verb_of(msg_type)) + " chain " + str_or(nftnl_chain_get_str(chain.get(), NFTNL_CHAIN_NAME), "?");
  }
  op.what = what.empty() ? "chain op" : std::move(what);
  if (!chain) {
    op.status = Status::error(EINVAL, op.what + ": no chain object");
  } else if (!nftnl_chain_is_set(chain.get(), NFTNL_CHAIN_FAMILY)) {
    op.status = Status::error(EINVAL, op.what + ": chain has no family");
  } else {
    op.family = static_cast<uint16_t>(nftnl_chain_get_u32(chain.get(), NFTNL_CHAIN_FAMILY));
  }
  op.chain = std::move(chain);
  return impl_->add(std::move(op));
}

OpId NftTxn::add_set(uint16_t msg_type, uint16_t flags, SetPtr set, std::string what) {
  Op op;
  op.kind = Kind::kSet;
  op.type = msg_type;
  op.flags = flags;
  if (set && what.empty()) {
    what = std::string(verb_of(msg_type)) + " set " + str_or(nftnl_set_get_str(set.get(), NFTNL_SET_NAME), "?");
  }
  op.what = what.empty() ? "set op" : std::move(what);
  if (!set) {
    op.status = Status::error(EINVAL, op.what + ": no set object");
  } else if (!nftnl_set_is_set(set.get(), NFTNL_SET_FAMILY)) {
    op.status = Status::error(EINVAL, op.what + ": set has no family");
  } else {
    op.family = static_cast<uint16_t>(nftnl_set_get_u32(set.get(), NFTNL_SET_FAMILY));
  }
  op.set = std::move(set);
  return impl_->add(std::move(op));
}

OpId NftTxn::add_flowtable(uint16_t msg_type, uint16_t flags, FlowtablePtr flowtable, std::string what) {
  Op op;
  op.kind = Kind::kFlowtable;
  op.type = msg_type;
  op.flags = flags;
  if (flowtable && what.empty()) {
    what = std::string(verb_of(msg_type)) + " flowtable " +
           str_or(nftnl_flowtable_get_str(flowtable.get(), NFTNL_FLOWTABLE_NAME), "?");
  }
  op.what = what.empty() ? "flowtable op" : std::move(what);
  if (!flowtable) {
    op.status = Status::error(EINVAL, op.what + ": no flowtable object");
  } else if (!nftnl_flowtable_is_set(flowtable.get(), NFTNL_FLOWTABLE_FAMILY)) {
    op.status = Status::error(EINVAL, op.what + ": flowtable has no family");
  } else {
    op.family = static_cast<uint16_t>(nftnl_flowtable_get_u32(flowtable.get(), NFTNL_FLOWTABLE_FAMILY));
  }
  op.flowtable = std::move(flowtable);
  return impl_->add(std::move(op));
}

OpId NftTxn::add_rule(uint16_t msg_type, uint16_t flags, RulePtr rule, std::string what) {
  Op op;
  op.kind = Kind::kRule;
  op.type = msg_type;
  op.flags = flags;
  if (rule && what.empty()) {
    what = std::string(verb_of(msg_type)) + " rule in chain " +
           str_or(nftnl_rule_get_str(rule.get(), NFTNL_RULE_CHAIN), "?");
  }
  op.what = what.empty() ? "rule op" : std::move(what);
  if (!rule) {
    op.status = Status::error(EINVAL, op.what + ": no rule object");
  } else if (!nftnl_rule_is_set(rule.get(), NFTNL_RULE_FAMILY)) {
    op.status = Status::error(EINVAL, op.what + ": rule has no family");
  } else {
    op.family = static_cast<uint16_t>(nftnl_rule_get_u32(rule.get(), NFTNL_RULE_FAMILY));
  }
  op.rule = std::move(rule);
  return impl_->add(std::move(op));
}

OpId NftTxn::add_elements(uint16_t msg_type, uint16_t flags, SetPtr set, std::vector<uint64_t> ids, std::string what) {
  Op op;
  op.kind = Kind::kElements;
  op.type = msg_type;
  op.flags = flags;
  const bool adding = msg_type == NFT_MSG_NEWSETELEM;
  std::string set_label = set ? str_or(nftnl_set_get_str(set.get(), NFTNL_SET_NAME), "?") : "?";
  if (what.empty()) {
    op.what = std::string(adding ? "add elements to set " : "delete elements from set ") + set_label;
    op.elem_what = std::string(adding ? "add element to set " : "delete element from set ") + set_label;
  } else {
    op.what = what;
    op.elem_what = std::move(what);
  }
  if (!set) {
    op.status = Status::error(EINVAL, op.what + ": no set object");
    return impl_->add(std::move(op));
  }
  if (!nftnl_set_is_set(set.get(), NFTNL_SET_FAMILY)) {
    op.status = Status::error(EINVAL, op.what + ": set has no family");
  } else {
    op.family = static_cast<uint16_t>(nftnl_set_get_u32(set.get(), NFTNL_SET_FAMILY));
  }
  if (nftnl_set_is_set(set.get(), NFTNL_SET_TABLE)) op.table_name = nftnl_set_get_str(set.get(), NFTNL_SET_TABLE);
  if (nftnl_set_is_set(set.get(), NFTNL_SET_NAME)) op.set_name = nftnl_set_get_str(set.get(), NFTNL_SET_NAME);
  if (nftnl_set_is_set(set.get(), NFTNL_SET_ID)) op.set_id = nftnl_set_get_u32(set.get(), NFTNL_SET_ID);
  if (op.status.ok() && (op.table_name == nullptr || (op.set_name == nullptr && !op.set_id))) {
    op.status = Status::error(EINVAL, op.what + ": set needs a table and a name or set id");
  }
  op.elems.reserve(ids.size());
  (void)nftnl_set_elem_foreach(set.get(), collect_elem, &op.elems);
  if (op.status.ok() && !ids.empty() && ids.size() != op.elems.size()) {
    op.status = Status::error(EINVAL, op.what + ": " + std::to_string(ids.size()) + " ids for " +
                                          std::to_string(op.elems.size()) + " elements");
  }
  if (op.status.ok() && op.elems.size() > UINT32_MAX - 1) {
    op.status = Status::error(E2BIG, op.what + ": too many elements");
  }
  // Bounded element size keeps every element within the batch page overrun.
  for (size_t i = 0; op.status.ok() && i < op.elems.size(); ++i) {
    if (!nftnl_set_elem_is_set(op.elems[i], NFTNL_SET_ELEM_USERDATA)) continue;
    uint32_t len = 0;
    (void)nftnl_set_elem_get(op.elems[i], NFTNL_SET_ELEM_USERDATA, &len);
    if (len > kMaxElemUserdata) {
      op.status = Status::error(EINVAL, op.what + ": element " + std::to_string(i) + " has more than " +
                                            std::to_string(kMaxElemUserdata) + " bytes of user data");
    }
  }
  op.ids = std::move(ids);
  op.set = std::move(set);
  return impl_->add(std::move(op));
}

size_t NftTxn::size() const { return impl_->ops.size(); }

const Status& NftTxn::status(OpId op) const {
  static const Status kNoSuchOp = Status::error(ERANGE, "no such op in this transaction");
  return op < impl_->ops.size() ? impl_->ops[op].status : kNoSuchOp;
}

std::span<const ElementFailure> NftTxn::element_failures(OpId op) const {
  if (op >= impl_->ops.size()) return {};
  return impl_->ops[op].failures;
}

size_t NftTxn::element_count(OpId op) const { return op < impl_->ops.size() ? impl_->ops[op].elems.size() : 0; }

bool NftTxn::outcome_unknown(OpId op) const { return op < impl_->ops.size() && impl_->ops[op].unknown; }

const NftTxnStats& NftTxn::stats() const { return impl_->stats; }

Status NftTxn::commit() { return impl_->commit(); }

size_t NftTxn::Impl::send_limit() const {
  size_t limit = transport.max_send_bytes();
  if (options.max_batch_bytes != 0) limit = std::min(limit, options.max_batch_bytes);
  return limit;
}

size_t NftTxn::Impl::ack_limit() const {
  const size_t per_ack = std::max<size_t>(options.ack_budget_bytes, 1);
  return std::max<size_t>(transport.receive_buffer_bytes() / per_ack, 1);
}

Status NftTxn::Impl::commit() {
  if (committed) return Status::error(EALREADY, "nf_tables transaction already committed");
  committed = true;
  std::deque<Unit> queue;
  for (size_t i = 0; i < ops.size(); ++i) {
    Op& op = ops[i];
    if (!op.status.ok()) continue;
    if (op.kind == Kind::kElements) {
      if (op.elems.empty()) continue;
      queue.push_back(Unit{static_cast<uint32_t>(i), 0, static_cast<uint32_t>(op.elems.size()), false});
    } else {
      queue.push_back(Unit{static_cast<uint32_t>(i), 0, 0, false});
    }
  }
  rbuf.resize(kReceiveBufferBytes);

  size_t batches = 0;
  while (!queue.empty()) {
    if (++batches > kMaxBatchesPerCommit) {
      logger->error("nf_tables commit gave up after {} batches", kMaxBatchesPerCommit);
      for (const Unit& u : queue) {
        Msg m{u.op, u.first, u.last, u.singles, nullptr};
        fail_msg(m, Status::error(EBUSY, "gave up after " + std::to_string(kMaxBatchesPerCommit) + " batches"), EBUSY,
                 {});
      }
      queue.clear();
      break;
    }
    if (Status st = plan_batch(queue); !st.ok()) {
      // Out of memory while building: nothing can be sent.
      for (const Unit& u : queue) fail_msg(Msg{u.op, u.first, u.last, u.singles, nullptr}, st, st.err(), {});
      for (const Msg& m : msgs) fail_msg(m, st, st.err(), {});
      queue.clear();
      break;
    }
    if (msgs.empty()) continue;  // Everything planned failed locally (EMSGSIZE).
    Outcome out = exchange();
    resolve(out, queue);
  }
  batch.reset();

  Status first_failure;
  for (Op& op : ops) {
    finish_op(op);
    if (first_failure.ok() && !op.status.ok()) first_failure = op.status;
  }
  return first_failure;
}

void NftTxn::Impl::finish_op(Op& op) {
  if (op.kind != Kind::kElements || op.failures.empty() || !op.status.ok()) return;
  std::sort(op.failures.begin(), op.failures.end(),
            [](const ElementFailure& a, const ElementFailure& b) { return a.index < b.index; });
  const ElementFailure& first = op.failures.front();
  op.status = Status::error(first.status.err(), op.what + ": " + std::to_string(op.failures.size()) + " of " +
                                                    std::to_string(op.elems.size()) +
                                                    " elements failed; first: " + first.status.message());
}

nlmsghdr* NftTxn::Impl::build_object(Op& op, char* buf, uint32_t seq) {
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, op.type, op.family, static_cast<uint16_t>(op.flags | NLM_F_ACK), seq);
  switch (op.kind) {
    case Kind::kTable:
      nftnl_table_nlmsg_build_payload(nlh, op.table.get());
      break;
    case Kind::kChain:
      nftnl_chain_nlmsg_build_payload(nlh, op.chain.get());
      break;
    case Kind::kSet:
      nftnl_set_nlmsg_build_payload(nlh, op.set.get());
      break;
    case Kind::kFlowtable:
      nftnl_flowtable_nlmsg_build_payload(nlh, op.flowtable.get());
      break;
    case Kind::kRule:
      nftnl_rule_nlmsg_build_payload(nlh, op.rule.get());
      break;
    case Kind::kElements:
      break;  // Built element by element in plan_batch().
  }
  return nlh;
}

Status NftTxn::Impl::plan_batch(std::deque<Unit>& queue) {
  msgs.clear();
  batch.reset(nftnl_batch_alloc(kPageSize, kPageOverrun));
  if (!batch) return errno_status(ENOMEM, "allocate nf_tables batch");

  const size_t limit = send_limit();
  const size_t max_msgs = ack_limit();
  // Reserve sequence numbers for the most messages this batch can hold.
  begin_seq = g_next_seq.fetch_add(static_cast<uint32_t>(std::min<size_t>(max_msgs, UINT32_MAX / 4) + 2));
  uint32_t seq = begin_seq;

  nlmsghdr* begin = nftnl_batch_begin(static_cast<char*>(nftnl_batch_buffer(batch.get())), seq++);
  bytes = begin->nlmsg_len;
  if (nftnl_batch_update(batch.get()) < 0) return errno_status(ENOMEM, "grow nf_tables batch");

  // Appends the message just written at 'nlh' to the batch; returns where it
  // now lives (nftnl_batch_update moves a message that crossed a page end).
  auto append = [&](nlmsghdr* nlh) -> const nlmsghdr* {
    const uint32_t len = nlh->nlmsg_len;
    if (nftnl_batch_update(batch.get()) < 0) return nullptr;
    bytes += len;
    return reinterpret_cast<const nlmsghdr*>(static_cast<char*>(nftnl_batch_buffer(batch.get())) - len);
  };

  bool full = false;
  while (!queue.empty() && !full && msgs.size() < max_msgs) {
    Unit& u = queue.front();
    Op& op = ops[u.op];

    if (op.kind != Kind::kElements) {
      nlmsghdr* nlh = build_object(op, static_cast<char*>(nftnl_batch_buffer(batch.get())), seq);
      if (bytes + nlh->nlmsg_len + kBatchEndBytes > limit) {
        if (!msgs.empty()) break;  // Next batch; the bytes written are overwritten.
        op.status = Status::error(EMSGSIZE, op.what + ": message of " + std::to_string(nlh->nlmsg_len) +
                                                " bytes exceeds the socket's send limit of " + std::to_string(limit));
        queue.pop_front();
        continue;
      }
      const nlmsghdr* placed = append(nlh);
      if (placed == nullptr) return errno_status(ENOMEM, "grow nf_tables batch");
      msgs.push_back(Msg{u.op, 0, 0, false, placed});
      ++seq;
      queue.pop_front();
      continue;
    }

    // An element unit: as many messages as it needs, each holding as many
    // elements as fit the nest (or one, for singles).
    while (u.first < u.last && msgs.size() < max_msgs) {
      nlmsghdr* nlh = nftnl_nlmsg_build_hdr(static_cast<char*>(nftnl_batch_buffer(batch.get())), op.type, op.family,
                                            static_cast<uint16_t>(op.flags | NLM_F_ACK), seq);
      if (op.table_name != nullptr) mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, op.table_name);
      if (op.set_name != nullptr) mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, op.set_name);
      if (op.set_id) mnl_attr_put_u32(nlh, NFTA_SET_ELEM_LIST_SET_ID, htonl(*op.set_id));
      nlattr* nest = mnl_attr_nest_start(nlh, NFTA_SET_ELEM_LIST_ELEMENTS);
      const char* nest_start = reinterpret_cast<const char*>(nest);

      const uint32_t max_count = u.singles ? 1 : UINT32_MAX;
      uint32_t count = 0;
      bool over_limit = false;  // the batch byte limit stopped this message
      bool too_big = false;     // one element cannot be encoded at all
      for (uint32_t i = u.first; i < u.last && count < max_count; ++i) {
        const uint32_t before = nlh->nlmsg_len;
        nftnl_set_elem_nlmsg_build(nlh, op.elems[i], NFTA_LIST_ELEM);
        const size_t elem_len = nlh->nlmsg_len - before;
        const size_t nest_len = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh)) - nest_start;
        if (elem_len > kMaxNestBytes) {
          nlh->nlmsg_len = before;
          too_big = count == 0;
          break;
        }
        if (nest_len > kMaxNestBytes) {
          nlh->nlmsg_len = before;
          too_big = count == 0;  // Alone and still too long for the list.
          break;
        }
        if (bytes + nlh->nlmsg_len + kBatchEndBytes > limit) {
          nlh->nlmsg_len = before;
          over_limit = true;
          break;
        }
        ++count;
      }
      if (count == 0) {
        if (too_big || msgs.empty()) {
          // This element fits no message, or no batch: it cannot be sent.
          const int err = EMSGSIZE;
          fail_element(op, u.first, err, {});
          op.failures.back().status = Status::error(
              err, op.failures.back().status.message() +
                       (too_big ? ": element longer than a netlink attribute can be"
                                : ": element does not fit the socket's send limit of " + std::to_string(limit)));
          ++u.first;
          continue;
        }
        full = true;  // The batch is full; this unit continues in the next one.
        break;
      }
      mnl_attr_nest_end(nlh, nest);
      const nlmsghdr* placed = append(nlh);
      if (placed == nullptr) return errno_status(ENOMEM, "grow nf_tables batch");
      msgs.push_back(Msg{u.op, u.first, u.first + count, u.singles, placed});
      ++seq;
      u.first += count;
      if (over_limit) {
        full = true;
        break;
      }
    }
    if (u.first >= u.last) queue.pop_front();
  }

  end_seq = seq;
  nlmsghdr* end = nftnl_batch_end(static_cast<char*>(nftnl_batch_buffer(batch.get())), end_seq);
  bytes += end->nlmsg_len;
  if (nftnl_batch_update(batch.get()) < 0) return errno_status(ENOMEM, "grow nf_tables batch");
  return Status();
}

Outcome NftTxn::Impl::exchange() {
  iov.resize(static_cast<size_t>(nftnl_batch_iovec_len(batch.get())));
  nftnl_batch_iovec(batch.get(), iov.data(), static_cast<uint32_t>(iov.size()));

  bool reopened = false;
  for (int attempt = 0;; ++attempt) {
    Outcome out;
    acks.assign(msgs.size(), AckSlot{});
    ++stats.batches_sent;
    stats.messages_sent += msgs.size();
    stats.bytes_sent += bytes;
    out.transport = send_batch();
    if (!out.transport.ok()) {
      if (socket_gone(out.transport.err()) && !reopened) {
        // Nothing of this batch reached the kernel: send it again on a new
        // socket (once; a socket that fails again stays failed).
        reopened = true;
        if (reopen_after(out.transport)) continue;
      }
      return out;
    }
    out.sent = true;
    read_acks(out);
    if (!out.transport.ok() && socket_gone(out.transport.err())) {
      // The batch went out and its acks went with the socket: the outcome
      // is unknown (resolve() says so), but what follows needs a socket.
      (void)reopen_after(out.transport);
    }
    if (out.eagain && out.transport.ok() && attempt < options.max_eagain_retries) {
      // The kernel asks for the same batch again (it loaded a module and
      // had to drop its locks); nothing of it was applied.
      ++stats.eagain_retries;
      logger->debug("nf_tables batch: EAGAIN, resending ({} of {})", attempt + 1, options.max_eagain_retries);
      drain();
      continue;
    }
    return out;
  }
}

Status NftTxn::Impl::send_batch() { return send_retrying_eintr(transport, iov); }

// Reopens the transport's socket after 'why'; true when it worked.
bool NftTxn::Impl::reopen_after(const Status& why) {
  Status r = transport.reopen();
  if (!r) {
    logger->warn("nf_tables socket failed ({}) and cannot be reopened: {}", why.message(), r.message());
    return false;
  }
  ++stats.reopens;
  logger->warn("nf_tables socket failed ({}); reopened it", why.message());
  return true;
}

void NftTxn::Impl::read_acks(Outcome& out) {
  const size_t n = msgs.size();
  const uint32_t first_seq = begin_seq + 1;

  struct Ctx {
    Impl* self;
    Outcome* out;
    uint32_t first_seq;
    size_t n;
  } ctx{this, &out, first_seq, n};

  auto on_error = [](const nlmsghdr* nlh, void* data) -> int {
    auto* c = static_cast<Ctx*>(data);
    Result<KernelAck> parsed = parse_kernel_ack(nlh, nlh->nlmsg_len);
    if (!parsed.ok()) return MNL_CB_OK;  // Nothing we can attribute.
    KernelAck& ack = parsed.value();
    const uint32_t idx = ack.seq - c->first_seq;  // Wraps for seqs before ours.
    if (idx < c->n) {
      AckSlot& slot = c->self->acks[idx];
      if (!slot.got) {
        slot.got = true;
        ++c->out->got;
        if (ack.err != 0) {
          c->out->any_error = true;
          if (ack.err == EAGAIN) c->out->eagain = true;
        }
        slot.ack = std::move(ack);
      }
    } else if (ack.seq == c->self->begin_seq || ack.seq == c->self->end_seq) {
      if (ack.err != 0) {
        if (ack.err == EAGAIN) c->out->eagain = true;
        c->out->batch_error = std::move(ack);
      }
    }
    // Anything else is a late ack for an older batch: ignored.
    return MNL_CB_OK;
  };
  auto ignore = [](const nlmsghdr*, void*) -> int { return MNL_CB_OK; };
  mnl_cb_t ctl[NLMSG_MIN_TYPE] = {};
  ctl[NLMSG_NOOP] = ignore;
  ctl[NLMSG_ERROR] = on_error;
  ctl[NLMSG_DONE] = ignore;
  ctl[NLMSG_OVERRUN] = ignore;

  const uint32_t portid = transport.portid();
  int eintr = 0;
  while (out.got < n && !out.batch_error) {
    Result<size_t> r = transport.receive(rbuf, out.enobufs ? 0 : options.ack_timeout_ms);
    if (!r.ok()) {
      if (r.err() == EINTR && ++eintr < kMaxEintr) continue;  // Nothing was read.
      if (r.err() == ENOBUFS) {
        out.enobufs = true;
        continue;
      }
      if (r.err() != ETIMEDOUT) out.transport = r.status();  // ETIMEDOUT: acks missing, counted below.
      break;
    }
    // libmnl compares a message's length with the datagram's as signed ints:
    // frame the datagram ourselves first, so a length the datagram cannot
    // hold (2 GiB and more included) is refused instead of walked.
    if (!well_framed(rbuf.data(), *r)) {
      logger->warn("nf_tables batch: dropping a {}-byte netlink datagram whose message lengths do not add up", *r);
      continue;
    }
    // Sequence numbers are checked above, per batch, not by libmnl.
    if (mnl_cb_run2(rbuf.data(), *r, 0, portid, nullptr, &ctx, ctl, NLMSG_MIN_TYPE) < 0) {
      logger->debug("nf_tables batch: ignoring a malformed or foreign netlink message");
    }
  }
  if (out.batch_error || out.got < n) drain();
}

void NftTxn::Impl::drain() {
  // Everything the kernel will say about a batch is queued before sendmsg
  // returns; read what is left so stale acks do not fill the buffer.
  for (int i = 0; i < 1000000; ++i) {
    Result<size_t> r = transport.receive(rbuf, 0);
    if (!r.ok() && r.err() != ENOBUFS && r.err() != EINTR) return;
  }
}

void NftTxn::Impl::fail_element_status(Op& op, uint32_t index, Status status, bool unknown) {
  const uint64_t id = op.ids.empty() ? index : op.ids[index];
  op.failures.push_back(ElementFailure{id, index, std::move(status), unknown});
  op.unknown = op.unknown || unknown;
}

void NftTxn::Impl::fail_element(Op& op, uint32_t index, int err, std::string_view extack) {
  const uint64_t id = op.ids.empty() ? index : op.ids[index];
  fail_element_status(op, index, kernel_status(err, op.elem_what + " (id " + std::to_string(id) + ")", extack));
}

// Gives every op or element of 'm' a failure: the kernel's 'err'/'extack'
// when 'proto' is ok, else 'proto''s errno and message.  'unknown': the
// message was sent and its verdict lost.
void NftTxn::Impl::fail_msg(const Msg& m, const Status& proto, int err, std::string_view extack, bool unknown) {
  Op& op = ops[m.op];
  if (op.kind != Kind::kElements) {
    if (!op.status.ok()) return;
    op.status =
        proto.ok() ? kernel_status(err, op.what, extack) : Status::error(proto.err(), op.what + ": " + proto.message());
    op.unknown = unknown;
    return;
  }
  for (uint32_t i = m.first; i < m.last; ++i) {
    if (proto.ok()) {
      fail_element(op, i, err, extack);
    } else {
      const uint64_t id = op.ids.empty() ? i : op.ids[i];
      fail_element_status(
          op, i, Status::error(proto.err(), op.elem_what + " (id " + std::to_string(id) + "): " + proto.message()),
          unknown);
    }
  }
}

void NftTxn::Impl::push_front_merged(std::deque<Unit>& queue, const std::vector<Unit>& units) {
  for (auto it = units.rbegin(); it != units.rend(); ++it) {
    const Unit& u = *it;
    if (!queue.empty()) {
      Unit& f = queue.front();
      const bool elements = u.last > u.first;
      if (elements && f.op == u.op && f.first == u.last && f.singles == u.singles) {
        f.first = u.first;
        continue;
      }
    }
    queue.push_front(u);
  }
}

void NftTxn::Impl::resolve(const Outcome& out, std::deque<Unit>& queue) {
  const size_t n = msgs.size();

  if (!out.transport.ok() && out.got == 0) {
    // Nothing came back (or the send itself failed): what the kernel did is
    // unknown (sent) or nothing (not sent); every message fails with the
    // transport's error.
    logger->warn("nf_tables batch of {} messages: {}{}", n, out.transport.message(),
                 out.sent ? " (sent: outcome unknown)" : "");
    const Status why =
        out.sent ? Status::error(out.transport.err(), "outcome unknown: " + out.transport.message()) : out.transport;
    for (const Msg& m : msgs) fail_msg(m, why, 0, {}, out.sent);
    return;
  }
  if (out.batch_error) {
    ++stats.failed_batches;
    const KernelAck& ack = *out.batch_error;
    logger->debug("nf_tables batch of {} messages failed as a whole: {} {}", n, errno_name(ack.err), ack.extack_msg);
    const Status proto = kernel_status(ack, "nf_tables transaction");
    for (const Msg& m : msgs) fail_msg(m, proto, 0, {});
    return;
  }
  if (!out.any_error && out.got == n && out.transport.ok()) return;  // Committed.

  if (out.any_error) ++stats.failed_batches;
  stats.acks_lost += n - out.got;
  retry.clear();
  auto retry_range = [&](uint32_t op, uint32_t first, uint32_t last, bool singles) {
    if (!retry.empty()) {
      Unit& b = retry.back();
      if (b.op == op && b.last == first && b.singles == singles && last > first) {
        b.last = last;
        return;
      }
    }
    retry.push_back(Unit{op, first, last, singles});
  };

  // When no ack carried an error but some are missing, the kernel may have
  // committed the batch or not: nobody in it gets a verdict it cannot back.
  const bool outcome_unknown = !out.any_error;
  const int lost_err = !out.transport.ok() ? out.transport.err() : (out.enobufs ? ENOBUFS : ETIMEDOUT);
  const std::string lost_why = !out.transport.ok()
                                   ? out.transport.message()
                                   : (out.enobufs ? "acknowledgement lost: the receive buffer overran (ENOBUFS)"
                                                  : "no acknowledgement from the kernel");

  for (size_t i = 0; i < n; ++i) {
    const Msg& m = msgs[i];
    const AckSlot& slot = acks[i];
    Op& op = ops[m.op];
    if (slot.got && slot.ack.err != 0) {
      const KernelAck& ack = slot.ack;
      if (op.kind != Kind::kElements || m.last - m.first == 1) {
        fail_msg(m, Status(), ack.err, ack.extack_msg);
        continue;
      }
      if (ack.extack_offset) {
        const OffsetHit hit = locate_offset(m.nlh, *ack.extack_offset);
        if (hit.place == OffsetPlace::kElement && hit.index < m.last - m.first) {
          // The kernel stopped at this element: those before it were fine,
          // those after it were never looked at.
          const uint32_t bad = m.first + hit.index;
          fail_element(op, bad, ack.err, ack.extack_msg);
          if (bad > m.first) retry_range(m.op, m.first, bad, false);
          if (bad + 1 < m.last) retry_range(m.op, bad + 1, m.last, true);
          continue;
        }
        if (hit.place == OffsetPlace::kMessage) {
          // The table or set itself is at fault: every element shares it.
          fail_msg(m, Status(), ack.err, ack.extack_msg);
          continue;
        }
      }
      // No way to tell which element failed: ask about each on its own.
      retry_range(m.op, m.first, m.last, true);
      continue;
    }
    if (outcome_unknown) {
      const std::string why = slot.got
                                  ? "outcome unknown: the kernel accepted this message, but acknowledgements of " +
                                        std::to_string(n - out.got) + " other messages of its transaction were lost (" +
                                        errno_name(lost_err) + ")"
                                  : "outcome unknown: " + lost_why;
      fail_msg(m, Status::error(lost_err, why), 0, {}, true);
      continue;
    }
    // The batch was aborted because of another message: this one was either
    // accepted (known good, resent many per message) or its ack was lost
    // (resent as it was).
    if (op.kind == Kind::kElements) {
      retry_range(m.op, m.first, m.last, slot.got ? false : m.singles);
    } else {
      retry.push_back(Unit{m.op, 0, 0, false});
    }
  }
  logger->debug("nf_tables batch of {} messages aborted by the kernel; resending {} units", n, retry.size());
  // Retried work goes first: a batch is finished before later ops are sent.
  push_front_merged(queue, retry);
}

}  // namespace ctoffload::netlink
