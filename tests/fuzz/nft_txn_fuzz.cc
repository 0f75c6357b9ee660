// nft_txn_fuzz.cc - fuzzes how an nf_tables transaction reads the kernel's
// acknowledgements and errors.
//
// Feeds: a transaction (a table, a set, elements to add and to delete; see
// nft_txn_harness.h for the 4-byte configuration) committed through
// netlink::NftTxn (src/netlink/nft_txn.cc) to a fake kernel that answers
// each batch with the input's datagrams: NLMSG_ERROR acks with or without
// NLM_F_CAPPED, extended-ack messages and offsets, acks for other sequence
// numbers, garbage, and injected ENOBUFS/ETIMEDOUT/EMSGSIZE/EIO receive errors
// and failed sends.  This covers read_acks() (mnl_cb_run2 and
// parse_kernel_ack), locate_offset() on the kernel's NLMSGERR_ATTR_OFFS, and
// the retry logic of resolve().
//
// Checks, beyond not crashing and finishing:
//   * every batch sent is well framed: BATCH_BEGIN, op messages with
//     consecutive sequence numbers and NLM_F_REQUEST|NLM_F_ACK, BATCH_END;
//     within the byte limit; no element twice in one batch;
//   * stats(): batches, messages and bytes sent are what the kernel got;
//   * commit() returns the first failed op's status, ok when none failed;
//   * element failures: sorted, one per element at most, in range, with
//     the caller's id and a non-zero errno; an element op is ok exactly
//     when it has no failures, else it carries the first failure's errno;
//   * never a success that was not acknowledged: an op or element reported
//     ok was in a batch of which the transaction saw an ack for every op
//     message, its own with error 0.
#include <cstring>
#include <set>

#include "fuzz_support.h"
#include "nft_txn_harness.h"

namespace {

using namespace ctoffload;
using namespace ctoffload::fuzz;

// Whether some batch acknowledged everything in it, and 'pick''s message
// with error 0.
template <typename Pick>
bool acknowledged(const FakeNftKernel& k, Pick&& pick) {
  for (const SentBatch& b : k.batches) {
    bool all = true;
    for (const SentMsg& m : b.msgs) all = all && b.acked_any.count(m.seq) != 0;
    if (!all) continue;
    for (const SentMsg& m : b.msgs) {
      if (pick(m) && b.acked_ok.count(m.seq) != 0) return true;
    }
  }
  return false;
}

void check_elements(const netlink::NftTxn& txn, netlink::OpId op, const std::vector<uint64_t>& ids, uint16_t type,
                    uint32_t first_key, const FakeNftKernel& k) {
  const Status& st = txn.status(op);
  auto failures = txn.element_failures(op);
  FUZZ_CHECK(txn.element_count(op) == ids.size(), "element count %zu for %zu", txn.element_count(op), ids.size());
  std::set<uint32_t> failed;
  for (size_t i = 0; i < failures.size(); ++i) {
    const netlink::ElementFailure& f = failures[i];
    FUZZ_CHECK(f.index < ids.size(), "failure for element %u of %zu", f.index, ids.size());
    FUZZ_CHECK(f.id == ids[f.index], "element %u has id %llu", f.index, static_cast<unsigned long long>(f.id));
    FUZZ_CHECK(!f.status.ok() && f.status.err() != 0, "a failure without an errno");
    FUZZ_CHECK(failed.insert(f.index).second, "element %u failed twice: %s", f.index, f.status.message().c_str());
    if (i > 0) FUZZ_CHECK(failures[i - 1].index < f.index, "failures not in element order");
  }
  FUZZ_CHECK(st.ok() == failures.empty(), "op status %s with %zu failures", st.ok() ? "ok" : "failed", failures.size());
  if (!failures.empty()) FUZZ_CHECK(st.err() == failures[0].status.err(), "op errno is not the first failure's");
  for (uint32_t i = 0; i < ids.size(); ++i) {
    if (failed.count(i) != 0) continue;
    const uint32_t key = first_key + i;
    FUZZ_CHECK(acknowledged(k,
                            [&](const SentMsg& m) {
                              return m.type == type && std::find(m.keys.begin(), m.keys.end(), key) != m.keys.end();
                            }),
               "element %u (key %u) reported ok but never acknowledged", i, key);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4 || size > 64 * 1024) return -1;
  const TxnConfig cfg = TxnConfig::from(data);
  FakeNftKernel k(cfg.max_acks);
  k.max_batch_bytes = cfg.max_batch_bytes;
  k.records = split_records({data + 4, size - 4});

  netlink::NftTxn txn(k, txn_options(cfg));
  const TxnOps ops = add_ops(txn, cfg);
  const Status result = txn.commit();

  // What was sent.
  const netlink::NftTxnStats& stats = txn.stats();
  size_t msgs = 0, bytes = 0;
  for (const SentBatch& b : k.batches) {
    msgs += b.msgs.size();
    bytes += b.bytes;
    FUZZ_CHECK(b.msgs.size() <= cfg.max_acks, "%zu messages in a batch for a buffer of %zu acks", b.msgs.size(),
               cfg.max_acks);
  }
  FUZZ_CHECK(stats.batches_sent == k.batches.size(), "stats say %zu batches, the kernel got %zu", stats.batches_sent,
             k.batches.size());
  FUZZ_CHECK(stats.messages_sent == msgs && stats.bytes_sent == bytes, "stats disagree with what was sent");

  // The results.
  Status first;
  for (netlink::OpId i = 0; i < txn.size(); ++i) {
    if (first.ok() && !txn.status(i).ok()) first = txn.status(i);
  }
  FUZZ_CHECK(result.ok() == first.ok() && result.err() == first.err() && result.message() == first.message(),
             "commit() returned '%s', the first failed op says '%s'", result.message().c_str(),
             first.message().c_str());
  if (ops.table && txn.status(*ops.table).ok()) {
    FUZZ_CHECK(acknowledged(k, [](const SentMsg& m) { return m.type == NFT_MSG_NEWTABLE; }),
               "the table op reported ok but never acknowledged");
  }
  if (ops.set && txn.status(*ops.set).ok()) {
    FUZZ_CHECK(acknowledged(k, [](const SentMsg& m) { return m.type == NFT_MSG_NEWSET; }),
               "the set op reported ok but never acknowledged");
  }
  check_elements(txn, *ops.add, ops.add_ids, NFT_MSG_NEWSETELEM, 1, k);
  if (ops.del) check_elements(txn, *ops.del, ops.del_ids, NFT_MSG_DELSETELEM, kDelKeyBase + 1, k);
  return 0;
}
