// nft_txn.h - nf_tables transactions with one result per operation.
//
// An NftTxn collects operations ("ops"): each is one thing whose outcome the
// caller wants to know - add a table, delete a chain, add these N set
// elements on behalf of connections 17, 18, ... - built from a libnftnl
// object plus a message type (NFT_MSG_NEWTABLE, ...) and netlink flags
// (NLM_F_CREATE, NLM_F_EXCL, ...).  commit() sends them to the kernel as
// nf_tables batches and gives every op, and every element of an element op,
// its own final Status.
//
// How commit() gets there:
//   * Ops become netlink messages between NFNL_MSG_BATCH_BEGIN and
//     NFNL_MSG_BATCH_END, with consecutive sequence numbers and NLM_F_ACK on
//     each op message; the whole batch goes out in one sendmsg, and every
//     ack is read back.
//   * An element op becomes as many NEWSETELEM/DELSETELEM messages as it
//     takes to keep each element list under the 64 KiB netlink attribute
//     limit.
//   * The kernel applies a batch all or nothing.  When some messages fail,
//     their ops get the kernel's error (errno and extended-ack text) and the
//     rest are sent again in a new batch, until a batch goes through.  When
//     a message carrying many elements fails, the element the kernel points
//     at (NLMSGERR_ATTR_OFFS) gets the error; the elements after it, which
//     the kernel never looked at, are resent one per message so each gets
//     its own verdict.  Without an offset, all of the message's elements are
//     resent one per message.
//   * EAGAIN from the kernel (module autoload) resends the same batch; EINTR
//     is retried by the transport, and again here should one get through.
//   * A socket that is gone (its descriptor closed or replaced under us:
//     EBADF, ENOTSOCK) is reopened (Transport::reopen).  A batch whose send
//     failed never reached the kernel and is sent again on the new socket;
//     a batch sent before the socket failed has an unknown outcome (below).
//   * ENOBUFS (acks dropped because the receive buffer was full): if another
//     ack of that batch carried an error, the batch was certainly aborted and
//     the ops whose acks were lost are simply resent.  Otherwise whether the
//     kernel committed the batch is unknown, and every op in it gets ENOBUFS
//     ("outcome unknown") - never a success that may be false.
//     outcome_unknown() and ElementFailure::outcome_unknown mark such
//     failures, so that the caller can find out from the kernel (read back,
//     or resend idempotently) instead of guessing.
//
// Atomicity the caller gets: ops that fit in one kernel transaction are
// applied together or not at all, failed ops excluded.  A commit whose
// messages exceed the socket's send limit (Transport::max_send_bytes) or
// whose acks would not fit its receive buffer is split, in op order, into
// several kernel transactions; each is atomic, the commit as a whole is
// not.  An element op may be split across transactions too.  Ops are never
// reordered: a retried transaction is finished before the next one starts.
//
// Results: 0-or-positive-errno Status values (see nl_error.h).  Nothing
// here throws.  An NftTxn is used by one thread at a time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ctoffload/result.h"

struct nftnl_table;
struct nftnl_chain;
struct nftnl_set;
struct nftnl_set_elem;
struct nftnl_flowtable;
struct nftnl_rule;

namespace ctoffload::netlink {

class Transport;

// Frees libnftnl objects with their own nftnl_*_free.
struct NftnlFree {
  void operator()(nftnl_table* t) const noexcept;
  void operator()(nftnl_chain* c) const noexcept;
  void operator()(nftnl_set* s) const noexcept;
  void operator()(nftnl_set_elem* e) const noexcept;
  void operator()(nftnl_flowtable* f) const noexcept;
  void operator()(nftnl_rule* r) const noexcept;
};
using TablePtr = std::unique_ptr<nftnl_table, NftnlFree>;
using ChainPtr = std::unique_ptr<nftnl_chain, NftnlFree>;
using SetPtr = std::unique_ptr<nftnl_set, NftnlFree>;
using SetElemPtr = std::unique_ptr<nftnl_set_elem, NftnlFree>;
using FlowtablePtr = std::unique_ptr<nftnl_flowtable, NftnlFree>;
using RulePtr = std::unique_ptr<nftnl_rule, NftnlFree>;

// Allocate empty libnftnl objects; null only when memory is exhausted.
TablePtr make_table();
ChainPtr make_chain();
SetPtr make_set();
SetElemPtr make_set_elem();
FlowtablePtr make_flowtable();
RulePtr make_rule();

// Index of an op in its transaction, in the order the ops were added.
using OpId = size_t;

// One element of an element op that failed.
struct ElementFailure {
  // The caller's id for the element (see NftTxn::add_elements).
  uint64_t id = 0;
  // The element's position in the op's set, from 0.
  uint32_t index = 0;
  Status status;
  // The element was sent but its verdict was lost (ENOBUFS, no ack in
  // time, the socket failed after the send): the kernel may have applied
  // it.  'status' says why.
  bool outcome_unknown = false;
};

// Tunables; the defaults fit the kernel as it is.
struct NftTxnOptions {
  // Upper bound for one kernel transaction in bytes; 0 means the
  // transport's max_send_bytes().
  size_t max_batch_bytes = 0;
  // Receive-buffer bytes budgeted per expected ack.  An ack is a separate
  // kernel buffer of well under 1 KiB even with an extended-ack message
  // (nftables budgets the same); a batch never expects more acks than
  // receive_buffer_bytes() / ack_budget_bytes.
  size_t ack_budget_bytes = 1024;
  // How long to wait for an ack that has not arrived.  The kernel queues
  // every ack before sendmsg returns, so this only matters if it did not.
  int ack_timeout_ms = 5000;
  // How many times one batch is resent because the kernel said EAGAIN.
  int max_eagain_retries = 8;
};

// What a commit did, for logs, tests and benchmarks.
struct NftTxnStats {
  size_t batches_sent = 0;   // sendmsg calls, EAGAIN resends included
  size_t messages_sent = 0;  // op messages (BATCH_BEGIN/END not counted)
  size_t bytes_sent = 0;
  size_t failed_batches = 0;  // batches the kernel aborted (some message failed)
  size_t eagain_retries = 0;
  size_t acks_lost = 0;  // acks the kernel dropped (ENOBUFS)
  size_t reopens = 0;    // sockets reopened after they failed (EBADF, ENOTSOCK)
};

class NftTxn {
 public:
  // 'transport' must outlive the transaction.
  explicit NftTxn(Transport& transport, NftTxnOptions options = {});
  ~NftTxn();
  NftTxn(NftTxn&&) noexcept;
  NftTxn& operator=(NftTxn&&) noexcept;
  NftTxn(const NftTxn&) = delete;
  NftTxn& operator=(const NftTxn&) = delete;

  // Each add_* takes ownership of the object and returns the new op's id.
  // 'msg_type' is an NFT_MSG_* value that fits the object (NEWTABLE or
  // DELTABLE for a table, ...); 'flags' are extra NLM_F_* flags (NLM_F_ACK is
  // always added).  The object's family attribute is required.  'what'
  // names the op in error messages ("add set sel4"); empty means one is
  // made up from the message type and the object's name.  A null object,
  // a missing family or a message type that does not fit makes the op fail
  // with EINVAL at commit() without sending it.
  OpId add_table(uint16_t msg_type, uint16_t flags, TablePtr table, std::string what = {});
  OpId add_chain(uint16_t msg_type, uint16_t flags, ChainPtr chain, std::string what = {});
  // The set itself (NEWSET/DELSET); elements attached to it are not sent.
  OpId add_set(uint16_t msg_type, uint16_t flags, SetPtr set, std::string what = {});
  OpId add_flowtable(uint16_t msg_type, uint16_t flags, FlowtablePtr flowtable, std::string what = {});
  OpId add_rule(uint16_t msg_type, uint16_t flags, RulePtr rule, std::string what = {});

  // Elements to add (NFT_MSG_NEWSETELEM) or delete (NFT_MSG_DELSETELEM):
  // 'set' names the target set (family, table and name, or an NFTNL_SET_ID
  // for a set made earlier in the same transaction) and holds the elements
  // (nftnl_set_elem_add).  'ids' gives the caller's id for each element, in
  // the set's element order (nftnl_set_elem_foreach order); empty means the
  // ids are the indexes 0..N-1.  A size mismatch fails the op with EINVAL.
  // Each element gets its own result (element_failures()); the op's status
  // is ok only if every element succeeded.  An op with no elements succeeds
  // without sending anything.
  OpId add_elements(uint16_t msg_type, uint16_t flags, SetPtr set, std::vector<uint64_t> ids = {},
                    std::string what = {});

  // Sends every op and waits for every result.  Returns ok when every op
  // succeeded, otherwise the Status of the first failed op (in the order
  // added); status(), element_failures() tell each op's fate.  A
  // transaction can be committed once; a second commit() returns EALREADY.
  Status commit();

  // The number of ops.
  size_t size() const;
  // Op 'op''s result: ok before commit() and for ops that succeeded.  For an
  // element op, the first failed element's errno with a count of failures.
  const Status& status(OpId op) const;
  // The failed elements of element op 'op', in element order; empty for
  // other ops and when all elements succeeded.
  std::span<const ElementFailure> element_failures(OpId op) const;
  // The number of elements of element op 'op' (0 for other ops).
  size_t element_count(OpId op) const;
  // Whether op 'op', or one of its elements, failed with an unknown
  // outcome: it was sent, its verdict was lost, and the kernel may have
  // applied it (see ElementFailure::outcome_unknown).
  bool outcome_unknown(OpId op) const;
  const NftTxnStats& stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ctoffload::netlink
