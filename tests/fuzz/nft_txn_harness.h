// nft_txn_harness.h - an nf_tables transaction against a fake kernel (the
// tests' FakeKernel, tests/support/fake_kernel.h) whose answers come from a
// fuzz input; shared by nft_txn_fuzz.cc and the seed generator
// (make_seeds.cc).
//
// Input: a 4-byte configuration, then records (fuzz_support.h).
//   byte 0: bits 0-3: 1 + n elements to add (NEWSETELEM); bits 4-6: n
//           elements to delete (DELSETELEM, none when 0).
//   byte 1: bits 0-2: the receive buffer holds 1 + n acks (messages per
//           batch); bit 3: a NEWTABLE op first; bit 4: a NEWSET op; bit 5:
//           32 bytes of user data on each element.
//   byte 2: 0: no batch byte limit of our own; else 200 + 16 * n bytes.
//   byte 3: bits 0-2: EAGAIN resends allowed.
// The records are the kernel's answers, batch by batch: those before the
// first kNextRequest record answer the first batch sent, and so on; a
// batch's answers not read by the time the next batch is sent are dropped
// (the transaction drains them itself), and a send error record is taken
// by the send() that starts its batch's answers.  Every message in a datagram
// gets the sequence number of the batch sent last plus its own nlmsg_seq
// (0 answers BATCH_BEGIN, 1 the first op message, ...), so that a fuzzed
// ack can hit the sequence numbers NftTxn chose.
#pragma once

#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <optional>
#include <set>
#include <vector>

#include "fuzz_support.h"
#include "netlink/nft_txn.h"
#include "netlink/nl_error.h"
#include "support/fake_kernel.h"

namespace ctoffload::fuzz {

inline constexpr uint32_t kFakePortid = 4242;
inline constexpr size_t kFakeMaxSend = size_t{1} << 20;
inline constexpr uint32_t kDelKeyBase = 1000;  // Keys of deleted elements start here.

struct TxnConfig {
  uint32_t n_add = 1;
  uint32_t n_del = 0;
  size_t max_acks = 1;
  bool table_op = false;
  bool set_op = false;
  bool userdata = false;
  size_t max_batch_bytes = 0;
  int eagain_retries = 0;

  static TxnConfig from(const uint8_t b[4]) {
    TxnConfig c;
    c.n_add = 1 + (b[0] & 15u);
    c.n_del = (b[0] >> 4) & 7u;
    c.max_acks = 1 + (b[1] & 7u);
    c.table_op = (b[1] & 8u) != 0;
    c.set_op = (b[1] & 16u) != 0;
    c.userdata = (b[1] & 32u) != 0;
    c.max_batch_bytes = b[2] == 0 ? 0 : 200 + size_t{16} * b[2];
    c.eagain_retries = b[3] & 7;
    return c;
  }
};

// One op message of a batch as the fake kernel received it.
struct SentMsg {
  uint32_t seq = 0;
  uint16_t type = 0;                   // NFT_MSG_* (subsystem bits removed)
  std::vector<uint32_t> keys;          // element keys, for element messages
  std::vector<uint32_t> elem_offsets;  // each element's offset from the message start
  std::vector<uint8_t> bytes;          // the whole message
};

struct SentBatch {
  uint32_t begin_seq = 0;
  uint32_t end_seq = 0;
  std::vector<SentMsg> msgs;
  size_t bytes = 0;
  // What the transaction could read back while this batch was the last one
  // sent: sequence numbers acknowledged with 0 and with an error.
  std::set<uint32_t> acked_ok;
  std::set<uint32_t> acked_any;
};

inline int send_errno(uint8_t code) {
  static constexpr int kErr[] = {EPERM, EMSGSIZE, ENOBUFS, ENOMEM};
  return kErr[code % 4];
}
inline int receive_errno(uint8_t code) {
  static constexpr int kErr[] = {ETIMEDOUT, ENOBUFS, EMSGSIZE, EIO};
  return kErr[code % 4];
}

// The kernel: the tests' FakeKernel, port kFakePortid, with a receive
// buffer of 1 KiB per ack, answering batch by batch from the records.
// Every send() starts the next batch's answers (on_send): the batch is
// checked and kept in 'batches', what is still queued of the last batch's
// answers is dropped, and a send error record makes this send fail
// (fail_next_send).  A batch that arrives (on_request) gets its answers
// queued, sequence numbers rewritten, up to the next kNextRequest or send
// error record; receive() hands them out, and after them says ETIMEDOUT.
// The acks the transaction reads (on_read) are noted in the batch.
class FakeNftKernel final : public testing::FakeKernel {
 public:
  explicit FakeNftKernel(size_t max_acks) {
    port = kFakePortid;
    max_send = kFakeMaxSend;
    rcvbuf = max_acks * 1024;
    on_send = [this](const testing::Bytes& datagram, FakeKernel&) { start_batch(datagram); };
    on_request = [this](const testing::Bytes&, FakeKernel&) { queue_answers(); };
    on_read = [this](const testing::Bytes& datagram, FakeKernel&) { note_acks(datagram); };
  }

  // Called when a batch is sent, before its answers are looked for (the
  // seed generator adds them here).
  std::function<void(const SentBatch&)> on_batch;
  std::vector<Record> records;
  std::vector<SentBatch> batches;  // every batch sent, the failed sends' too
  size_t max_batch_bytes = 0;

 private:
  void start_batch(const testing::Bytes& data) {
    FUZZ_CHECK(data.size() <= kFakeMaxSend, "a datagram of %zu bytes over max_send_bytes", data.size());
    if (max_batch_bytes != 0) {
      FUZZ_CHECK(data.size() <= max_batch_bytes, "a batch of %zu bytes over the limit of %zu", data.size(),
                 max_batch_bytes);
    }
    batches.push_back(parse_batch(data));
    if (on_batch) on_batch(batches.back());
    queue.clear();  // The last batch's answers not read by now are dropped.
    if (batches.size() > 1) {
      // The answers to this batch start after the next marker.
      while (pos_ < records.size() && records[pos_].kind != Record::kNextRequest) ++pos_;
      if (pos_ < records.size()) ++pos_;
    }
    if (pos_ < records.size() && records[pos_].kind == Record::kSendError) {
      fail_next_send = send_errno(records[pos_++].code);
    }
  }

  void queue_answers() {
    for (; pos_ < records.size(); ++pos_) {
      const Record& r = records[pos_];
      if (r.kind == Record::kSendError || r.kind == Record::kNextRequest) return;
      if (r.kind == Record::kReceiveError) {
        push_error(receive_errno(r.code));
        continue;
      }
      testing::Bytes d = r.bytes;
      rewrite_seqs(d);
      push(std::move(d));
    }
  }

  static SentBatch parse_batch(const std::vector<uint8_t>& data) {
    std::vector<uint32_t> aligned(data.size() / 4 + 1);
    std::memcpy(aligned.data(), data.data(), data.size());
    const auto* base = reinterpret_cast<const uint8_t*>(aligned.data());
    std::vector<const nlmsghdr*> all;
    int rem = static_cast<int>(data.size());
    for (auto* nlh = reinterpret_cast<const nlmsghdr*>(base); mnl_nlmsg_ok(nlh, rem); nlh = mnl_nlmsg_next(nlh, &rem)) {
      all.push_back(nlh);
    }
    FUZZ_CHECK(rem == 0, "the batch ends in %d bytes of a partial message", rem);
    FUZZ_CHECK(all.size() >= 3, "a batch of %zu messages (BEGIN, ops, END expected)", all.size());
    FUZZ_CHECK(all.front()->nlmsg_type == NFNL_MSG_BATCH_BEGIN && all.back()->nlmsg_type == NFNL_MSG_BATCH_END,
               "a batch not framed by BATCH_BEGIN/BATCH_END");
    SentBatch b;
    b.begin_seq = all.front()->nlmsg_seq;
    b.end_seq = all.back()->nlmsg_seq;
    b.bytes = data.size();
    FUZZ_CHECK(b.end_seq == static_cast<uint32_t>(b.begin_seq + all.size() - 1),
               "sequence numbers are not consecutive");
    std::set<uint32_t> keys_seen;
    for (size_t i = 1; i + 1 < all.size(); ++i) {
      const nlmsghdr* nlh = all[i];
      FUZZ_CHECK(nlh->nlmsg_seq == static_cast<uint32_t>(b.begin_seq + i), "message %zu has seq %u", i, nlh->nlmsg_seq);
      FUZZ_CHECK((nlh->nlmsg_flags & (NLM_F_REQUEST | NLM_F_ACK)) == (NLM_F_REQUEST | NLM_F_ACK),
                 "an op message without NLM_F_REQUEST|NLM_F_ACK");
      FUZZ_CHECK((nlh->nlmsg_type >> 8) == NFNL_SUBSYS_NFTABLES, "message type %#x", nlh->nlmsg_type);
      SentMsg m;
      m.seq = nlh->nlmsg_seq;
      m.type = nlh->nlmsg_type & 0xff;
      const auto* p = reinterpret_cast<const uint8_t*>(nlh);
      m.bytes.assign(p, p + nlh->nlmsg_len);
      if (m.type == NFT_MSG_NEWSETELEM || m.type == NFT_MSG_DELSETELEM) {
        collect_keys(nlh, &m);
        FUZZ_CHECK(!m.keys.empty(), "an element message without elements");
        for (uint32_t k : m.keys) FUZZ_CHECK(keys_seen.insert(k).second, "element %u twice in one batch", k);
      }
      b.msgs.push_back(std::move(m));
    }
    return b;
  }

  // Calls 'visit' for each attribute in [first, end).
  template <typename Visit>
  static void each_attr(const void* first, const void* end, Visit&& visit) {
    for (auto* a = static_cast<const nlattr*>(first);
         mnl_attr_ok(a, static_cast<int>(static_cast<const char*>(end) - reinterpret_cast<const char*>(a)));
         a = mnl_attr_next(a)) {
      visit(a);
    }
  }
  static const void* nest_end(const nlattr* a) { return reinterpret_cast<const char*>(a) + a->nla_len; }

  static void collect_keys(const nlmsghdr* nlh, SentMsg* m) {
    const auto* base = reinterpret_cast<const char*>(nlh);
    each_attr(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)), mnl_nlmsg_get_payload_tail(nlh),
              [&](const nlattr* list) {
                if (mnl_attr_get_type(list) != NFTA_SET_ELEM_LIST_ELEMENTS) return;
                each_attr(mnl_attr_get_payload(list), nest_end(list), [&](const nlattr* elem) {
                  uint32_t key = 0;
                  each_attr(mnl_attr_get_payload(elem), nest_end(elem), [&](const nlattr* a) {
                    if (mnl_attr_get_type(a) != NFTA_SET_ELEM_KEY) return;
                    each_attr(mnl_attr_get_payload(a), nest_end(a), [&](const nlattr* v) {
                      if (mnl_attr_get_type(v) == NFTA_DATA_VALUE && mnl_attr_get_payload_len(v) == 4) {
                        std::memcpy(&key, mnl_attr_get_payload(v), 4);
                      }
                    });
                  });
                  m->keys.push_back(ntohl(key));
                  m->elem_offsets.push_back(static_cast<uint32_t>(reinterpret_cast<const char*>(elem) - base));
                });
              });
  }

  void rewrite_seqs(std::vector<uint8_t>& bytes) const {
    const uint32_t base = batches.empty() ? 0 : batches.back().begin_seq;
    size_t off = 0;
    while (off + sizeof(nlmsghdr) <= bytes.size()) {
      nlmsghdr h;
      std::memcpy(&h, bytes.data() + off, sizeof h);
      h.nlmsg_seq += base;
      std::memcpy(bytes.data() + off, &h, sizeof h);
      if (h.nlmsg_len < sizeof h) break;
      off += align4(h.nlmsg_len);
    }
  }

  // Records the acks the transaction can see in this datagram: it reads
  // them with mnl_cb_run2() and parse_kernel_ack(), and so does this.
  void note_acks(const std::vector<uint8_t>& bytes) {
    if (batches.empty() || bytes.empty()) return;
    // mnl_cb_run2() misreads an nlmsg_len of 2 GiB or more (it compares it
    // as an int); only the messages before such a one are read here, so
    // that what the transaction does with it is reported against the
    // library, not this harness.  Up to there both read the same acks.
    size_t len = 0;
    while (len + sizeof(nlmsghdr) <= bytes.size()) {
      nlmsghdr h;
      std::memcpy(&h, bytes.data() + len, sizeof h);
      if (h.nlmsg_len > INT32_MAX) break;
      if (h.nlmsg_len < sizeof h) {
        len = bytes.size();
        break;
      }
      len = std::min(bytes.size(), len + align4(h.nlmsg_len));
    }
    if (len + sizeof(nlmsghdr) > bytes.size()) len = bytes.size();
    if (len == 0) return;
    std::vector<uint32_t> aligned(bytes.size() / 4 + 1);
    std::memcpy(aligned.data(), bytes.data(), bytes.size());
    auto on_error = [](const nlmsghdr* nlh, void* data) -> int {
      auto* b = static_cast<SentBatch*>(data);
      auto ack = netlink::parse_kernel_ack(nlh, nlh->nlmsg_len);
      if (!ack) return MNL_CB_OK;
      b->acked_any.insert(ack->seq);
      if (ack->err == 0) b->acked_ok.insert(ack->seq);
      return MNL_CB_OK;
    };
    auto ignore = [](const nlmsghdr*, void*) -> int { return MNL_CB_OK; };
    mnl_cb_t ctl[NLMSG_MIN_TYPE] = {};
    ctl[NLMSG_NOOP] = ignore;
    ctl[NLMSG_ERROR] = on_error;
    ctl[NLMSG_DONE] = ignore;
    ctl[NLMSG_OVERRUN] = ignore;
    (void)mnl_cb_run2(aligned.data(), len, 0, kFakePortid, nullptr, &batches.back(), ctl, NLMSG_MIN_TYPE);
  }

  size_t pos_ = 0;  // The next record to queue.
};

// The ops of one transaction, and what the checks need to know of them.
struct TxnOps {
  std::optional<netlink::OpId> table, set, add, del;
  std::vector<uint64_t> add_ids, del_ids;
};

inline netlink::SetPtr element_set(uint32_t first_key, uint32_t n, bool userdata) {
  netlink::SetPtr s = netlink::make_set();
  nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_IPV4);
  nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, "ctoffload");
  nftnl_set_set_str(s.get(), NFTNL_SET_NAME, "sel4");
  for (uint32_t i = 0; i < n; ++i) {
    nftnl_set_elem* e = nftnl_set_elem_alloc();
    const uint32_t key = htonl(first_key + i);
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, &key, sizeof key);
    if (userdata) {
      static const char kUser[32] = "user data of this element";
      nftnl_set_elem_set(e, NFTNL_SET_ELEM_USERDATA, kUser, sizeof kUser);
    }
    nftnl_set_elem_add(s.get(), e);
  }
  return s;
}

// Adds the configured ops to 'txn'.  Element keys: 1..n_add for the add,
// kDelKeyBase + 1.. for the delete; ids 100 + index / 200 + index.
inline TxnOps add_ops(netlink::NftTxn& txn, const TxnConfig& c) {
  TxnOps o;
  if (c.table_op) {
    netlink::TablePtr t = netlink::make_table();
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_IPV4);
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, "ctoffload");
    o.table = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, std::move(t));
  }
  if (c.set_op) {
    netlink::SetPtr s = netlink::make_set();
    nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_IPV4);
    nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, "ctoffload");
    nftnl_set_set_str(s.get(), NFTNL_SET_NAME, "sel4");
    nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, 4);
    nftnl_set_set_u32(s.get(), NFTNL_SET_ID, 1);
    o.set = txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE, std::move(s));
  }
  for (uint32_t i = 0; i < c.n_add; ++i) o.add_ids.push_back(100 + i);
  o.add =
      txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, element_set(1, c.n_add, c.userdata), o.add_ids);
  if (c.n_del > 0) {
    for (uint32_t i = 0; i < c.n_del; ++i) o.del_ids.push_back(200 + i);
    o.del = txn.add_elements(NFT_MSG_DELSETELEM, 0, element_set(kDelKeyBase + 1, c.n_del, c.userdata), o.del_ids);
  }
  return o;
}

inline netlink::NftTxnOptions txn_options(const TxnConfig& c) {
  netlink::NftTxnOptions opt;
  opt.max_batch_bytes = c.max_batch_bytes;
  opt.max_eagain_retries = c.eagain_retries;
  opt.ack_timeout_ms = 0;
  return opt;
}

}  // namespace ctoffload::fuzz
