// nft_txn_test.cc - the nf_tables netlink layer against a fake kernel.
//
// FakeNfTables sits behind the Transport seam, on the tests' FakeKernel
// (support/fake_kernel.h): it records every datagram the transaction sends,
// decodes the batch, and answers each message the way
// nfnetlink does (one NLMSG_ERROR per NLM_F_ACK message, error + extended ack
// attributes, all-or-nothing commit).  It keeps a set of element keys so the
// element tests see real EEXIST/ENOENT semantics, and it can be told to fail
// a message, refuse a batch, ask for a replay (EAGAIN) or drop acks
// (ENOBUFS).  What the transaction built is decoded back with libnftnl and
// checked attribute by attribute.
#include "netlink/nft_txn.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/flowtable.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <climits>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "netlink/nft_socket.h"
#include "netlink/nl_error.h"
#include "support/fake_kernel.h"

namespace ctoffload::netlink {
namespace {

constexpr const char* kTable = "ctoffload";
constexpr const char* kSet = "sel4";
// nft's datatype ids (ipv4_addr 7, inet_proto 12, inet_service 13), combined
// the way nft combines a concatenation's types: 6 bits per field.
constexpr uint32_t kConcatKeyType = ((((((7u << 6) | 7u) << 6) | 12u) << 6 | 13u) << 6) | 13u;
constexpr uint32_t kKeyLen = 20;  // 4 + 4 + 4 (proto, padded) + 4 + 4 (ports, padded)

using Key = std::array<uint8_t, kKeyLen>;

// The selector key of test connection 'i': 10.x.y.z -> 10.128.0.1, TCP,
// a port pair; unique for every i below 2^24.
Key conn_key(uint32_t i) {
  Key k{};
  const uint32_t saddr = htonl(0x0a000000u | (i & 0xffffffu));
  const uint32_t daddr = htonl(0x0a800001u);
  const uint16_t sport = htons(static_cast<uint16_t>(1024 + i % 60000));
  const uint16_t dport = htons(80);
  std::memcpy(&k[0], &saddr, 4);
  std::memcpy(&k[4], &daddr, 4);
  k[8] = IPPROTO_TCP;
  std::memcpy(&k[12], &sport, 2);
  std::memcpy(&k[16], &dport, 2);
  return k;
}

std::string key_str(const void* p, size_t len) { return std::string(static_cast<const char*>(p), len); }
std::string key_str(const Key& k) { return key_str(k.data(), k.size()); }

TablePtr make_test_table(const char* name = kTable) {
  TablePtr t = make_table();
  nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, name);
  nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, NFPROTO_INET);
  nftnl_table_set_u32(t.get(), NFTNL_TABLE_FLAGS, 0);
  return t;
}

SetPtr make_test_set(const char* name = kSet) {
  SetPtr s = make_set();
  nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, kTable);
  nftnl_set_set_str(s.get(), NFTNL_SET_NAME, name);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_TYPE, kConcatKeyType);
  nftnl_set_set_u32(s.get(), NFTNL_SET_KEY_LEN, kKeyLen);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FLAGS, NFT_SET_TIMEOUT);
  nftnl_set_set_u32(s.get(), NFTNL_SET_ID, 7);
  return s;
}

// A set naming kTable/kSet and holding the keys of connections 'conns'.
SetPtr elements_of(const std::vector<uint32_t>& conns, const char* set_name = kSet) {
  SetPtr s = make_set();
  nftnl_set_set_str(s.get(), NFTNL_SET_TABLE, kTable);
  nftnl_set_set_str(s.get(), NFTNL_SET_NAME, set_name);
  nftnl_set_set_u32(s.get(), NFTNL_SET_FAMILY, NFPROTO_INET);
  for (uint32_t c : conns) {
    nftnl_set_elem* e = nftnl_set_elem_alloc();
    const Key k = conn_key(c);
    nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, k.data(), k.size());
    nftnl_set_elem_add(s.get(), e);
  }
  return s;
}

std::vector<uint32_t> range(uint32_t first, uint32_t count) {
  std::vector<uint32_t> v(count);
  for (uint32_t i = 0; i < count; ++i) v[i] = first + i;
  return v;
}

std::vector<uint64_t> ids_of(const std::vector<uint32_t>& conns) { return {conns.begin(), conns.end()}; }

// One message of a sent batch.
struct Sent {
  std::vector<char> bytes;  // the whole nlmsghdr
  const nlmsghdr* nlh() const { return reinterpret_cast<const nlmsghdr*>(bytes.data()); }
  uint16_t nft_type() const { return static_cast<uint16_t>(nlh()->nlmsg_type & 0xff); }
  uint16_t subsys() const { return static_cast<uint16_t>(nlh()->nlmsg_type >> 8); }
};

// Splits a datagram into its messages.
std::vector<Sent> split_batch(const ctoffload::testing::Bytes& data) {
  std::vector<Sent> out;
  int len = static_cast<int>(data.size());
  auto* nlh = reinterpret_cast<const nlmsghdr*>(data.data());
  while (mnl_nlmsg_ok(nlh, len)) {
    const char* p = reinterpret_cast<const char*>(nlh);
    out.push_back(Sent{std::vector<char>(p, p + nlh->nlmsg_len)});
    nlh = mnl_nlmsg_next(nlh, &len);
  }
  EXPECT_EQ(len, 0) << "trailing bytes in batch";
  return out;
}

// The keys of an element message, with each element's offset from the
// message start (as NLMSGERR_ATTR_OFFS counts).
struct ElemAt {
  std::string key;
  uint32_t offset;
};
std::vector<ElemAt> elements_in(const nlmsghdr* nlh, uint32_t* list_set_offset = nullptr) {
  std::vector<ElemAt> out;
  const char* base = reinterpret_cast<const char*>(nlh);
  const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  auto* attr = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
  for (; mnl_attr_ok(attr, static_cast<int>(tail - reinterpret_cast<const char*>(attr))); attr = mnl_attr_next(attr)) {
    if (mnl_attr_get_type(attr) == NFTA_SET_ELEM_LIST_SET && list_set_offset != nullptr) {
      *list_set_offset = static_cast<uint32_t>(reinterpret_cast<const char*>(attr) - base);
    }
    if (mnl_attr_get_type(attr) != NFTA_SET_ELEM_LIST_ELEMENTS) continue;
    const char* nest_end = reinterpret_cast<const char*>(attr) + attr->nla_len;
    for (auto* e = static_cast<const nlattr*>(mnl_attr_get_payload(attr));
         mnl_attr_ok(e, static_cast<int>(nest_end - reinterpret_cast<const char*>(e))); e = mnl_attr_next(e)) {
      const char* e_end = reinterpret_cast<const char*>(e) + e->nla_len;
      for (auto* a = static_cast<const nlattr*>(mnl_attr_get_payload(e));
           mnl_attr_ok(a, static_cast<int>(e_end - reinterpret_cast<const char*>(a))); a = mnl_attr_next(a)) {
        if (mnl_attr_get_type(a) != NFTA_SET_ELEM_KEY) continue;
        auto* v = static_cast<const nlattr*>(mnl_attr_get_payload(a));
        out.push_back(ElemAt{key_str(mnl_attr_get_payload(v), mnl_attr_get_payload_len(v)),
                             static_cast<uint32_t>(reinterpret_cast<const char*>(e) - base)});
      }
    }
  }
  return out;
}

// The length of the element-list nest of an element message.
size_t element_nest_len(const nlmsghdr* nlh) {
  const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(nlh));
  auto* attr = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(nlh, sizeof(nfgenmsg)));
  for (; mnl_attr_ok(attr, static_cast<int>(tail - reinterpret_cast<const char*>(attr))); attr = mnl_attr_next(attr)) {
    if (mnl_attr_get_type(attr) == NFTA_SET_ELEM_LIST_ELEMENTS) return attr->nla_len;
  }
  return 0;
}

// What the fake answers for one message.
struct Reply {
  int err = 0;
  std::string extack;
  std::optional<uint32_t> offset;
};

// A fake nfnetlink for nf_tables on the tests' FakeKernel (the socket and
// its faults: max_send, rcvbuf, send_error, gone, gone_after_send, EINTR,
// reopens; every batch received is in 'requests').
class FakeNfTables final : public ctoffload::testing::FakeKernel {
 public:
  // --- knobs ---
  // Acks the receive queue holds for a batch before dropping (ENOBUFS);
  // applies to batch number 'drop_in_batch' only.
  size_t ack_capacity = SIZE_MAX;
  size_t drop_in_batch = 0;
  // Whether element errors carry NLMSGERR_ATTR_OFFS.
  bool report_offsets = true;
  // Adds an attribute type the code does not know to every error ack.
  bool unknown_ack_attr = true;
  // Takes batches but never answers them.
  bool silent = false;
  // Batches answered with EAGAIN on their first message (replay requests).
  int eagain_batches = 0;
  // An error for BATCH_BEGIN of the next batch (the whole batch refused).
  std::optional<Reply> refuse_next_batch;
  // Forced failures: called for every op message as (batch number, index
  // of the op message in the batch); a Reply with err != 0 fails it.
  std::function<Reply(size_t batch, size_t k, const Sent& msg)> force;

  // --- state ---
  std::set<std::string> keys;  // committed set elements

  FakeNfTables() {
    port = 4242;
    max_send = 64u << 20;
    rcvbuf = 64u << 20;
    on_request = [this](const ctoffload::testing::Bytes&, FakeKernel&) {
      if (!silent) process(requests.size() - 1);
    };
  }

  // Queues an ack for 'req' as if the kernel had sent it earlier.
  void inject_ack(const nlmsghdr* req, const Reply& r) { queue_ack(req, r); }

  // The op messages (between BEGIN and END) of batch 'b'.
  std::vector<Sent> op_messages(size_t b) const {
    std::vector<Sent> all = split_batch(requests.at(b));
    if (all.size() < 2) return {};
    return std::vector<Sent>(all.begin() + 1, all.end() - 1);
  }

 private:
  void queue_ack(const nlmsghdr* req, const Reply& r) {
    if (queue.size() >= ack_capacity && batch_no_ == drop_in_batch) {
      overrun = true;
      return;
    }
    ctoffload::testing::Bytes buf(MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = NLMSG_ERROR;
    nlh->nlmsg_flags = NLM_F_CAPPED;
    nlh->nlmsg_seq = req->nlmsg_seq;
    nlh->nlmsg_pid = portid();
    auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
    e->error = -r.err;
    e->msg = *req;
    if (r.err != 0 && (!r.extack.empty() || r.offset || unknown_ack_attr)) {
      nlh->nlmsg_flags |= NLM_F_ACK_TLVS;
      if (unknown_ack_attr) mnl_attr_put_u32(nlh, 99, 0xdeadbeef);
      if (!r.extack.empty()) mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, r.extack.c_str());
      if (r.offset) mnl_attr_put_u32(nlh, NLMSGERR_ATTR_OFFS, *r.offset);
    }
    buf.resize(nlh->nlmsg_len);
    push(std::move(buf));
  }

  // Element semantics of nf_tables: elements are processed in order and the
  // first failing one stops the message, pointed at by the offset.
  Reply apply_elements(const Sent& m, std::set<std::string>& pending_add, std::set<std::string>& pending_del) {
    uint32_t set_attr_off = 0;
    const std::vector<ElemAt> elems = elements_in(m.nlh(), &set_attr_off);
    const bool add = m.nft_type() == NFT_MSG_NEWSETELEM;
    std::vector<std::string> added;
    for (const ElemAt& e : elems) {
      const bool present = (keys.count(e.key) != 0 && pending_del.count(e.key) == 0) || pending_add.count(e.key) != 0;
      if (add && present && (m.nlh()->nlmsg_flags & NLM_F_EXCL) != 0) {
        Reply r{EEXIST, "", std::nullopt};
        if (report_offsets) r.offset = e.offset;
        return r;
      }
      if (!add && !present) {
        Reply r{ENOENT, "", std::nullopt};
        if (report_offsets) r.offset = e.offset;
        return r;
      }
      if (add) {
        pending_add.insert(e.key);
        pending_del.erase(e.key);
      } else {
        pending_add.erase(e.key);
        if (keys.count(e.key) != 0) pending_del.insert(e.key);
      }
    }
    return Reply{};
  }

  void process(size_t b) {
    batch_no_ = b;
    std::vector<Sent> all = split_batch(requests[b]);
    if (all.size() < 2 || all.front().nlh()->nlmsg_type != NFNL_MSG_BATCH_BEGIN ||
        all.back().nlh()->nlmsg_type != NFNL_MSG_BATCH_END) {
      ADD_FAILURE() << "batch not framed by BATCH_BEGIN/END";
      return;
    }
    if (refuse_next_batch) {
      queue_ack(all.front().nlh(), *refuse_next_batch);
      refuse_next_batch.reset();
      return;
    }
    const bool replay = eagain_batches > 0;
    if (replay) --eagain_batches;
    std::set<std::string> pending_add, pending_del;
    std::vector<Reply> replies;
    bool failed = false;
    for (size_t k = 1; k + 1 < all.size(); ++k) {
      const Sent& m = all[k];
      Reply r;
      if (replay && k == 1) r.err = EAGAIN;
      if (r.err == 0 && force) r = force(b, k - 1, m);
      if (r.err == 0 && (m.nft_type() == NFT_MSG_NEWSETELEM || m.nft_type() == NFT_MSG_DELSETELEM)) {
        // A failed message's partial effects stay until the batch aborts.
        r = apply_elements(m, pending_add, pending_del);
      }
      failed = failed || r.err != 0;
      replies.push_back(r);
    }
    if (!failed) {
      for (const std::string& k : pending_del) keys.erase(k);
      keys.insert(pending_add.begin(), pending_add.end());
    }
    for (size_t k = 1; k + 1 < all.size(); ++k) {
      if ((all[k].nlh()->nlmsg_flags & NLM_F_ACK) != 0 || replies[k - 1].err != 0) {
        queue_ack(all[k].nlh(), replies[k - 1]);
      }
    }
  }

  size_t batch_no_ = 0;
};

// ---------------------------------------------------------------- nl_error

std::vector<char> make_error_ack(int err, const char* extack, std::optional<uint32_t> offset, bool capped,
                                 bool unknown_attr) {
  std::vector<char> buf(8192);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = NLMSG_ERROR;
  nlh->nlmsg_seq = 77;
  auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
  e->error = -err;
  e->msg.nlmsg_len = NLMSG_HDRLEN;  // the echoed request: a bare header
  e->msg.nlmsg_seq = 77;
  if (capped) {
    nlh->nlmsg_flags |= NLM_F_CAPPED;
  } else {
    // Uncapped: the whole request is echoed; make it 24 bytes of payload.
    e->msg.nlmsg_len = NLMSG_HDRLEN + 24;
    std::memset(mnl_nlmsg_put_extra_header(nlh, 24), 0xab, 24);
  }
  nlh->nlmsg_flags |= NLM_F_ACK_TLVS;
  if (unknown_attr) mnl_attr_put_u32(nlh, 200, 1);
  if (extack != nullptr) mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, extack);
  if (offset) mnl_attr_put_u32(nlh, NLMSGERR_ATTR_OFFS, *offset);
  buf.resize(nlh->nlmsg_len);
  return buf;
}

TEST(NlError, KernelAckParsesErrnoExtackMessageAndOffset) {
  std::vector<char> m = make_error_ack(EEXIST, "Set element exists", 48u, true, false);
  Result<KernelAck> ack = parse_kernel_ack(reinterpret_cast<const nlmsghdr*>(m.data()), m.size());
  ASSERT_TRUE(ack.ok()) << ack.message();
  EXPECT_EQ(ack->seq, 77u);
  EXPECT_EQ(ack->err, EEXIST);
  EXPECT_EQ(ack->extack_msg, "Set element exists");
  ASSERT_TRUE(ack->extack_offset.has_value());
  EXPECT_EQ(*ack->extack_offset, 48u);
}

TEST(NlError, KernelAckIgnoresUnknownExtackAttributes) {
  std::vector<char> m = make_error_ack(ENOENT, "No such set", std::nullopt, true, true);
  Result<KernelAck> ack = parse_kernel_ack(reinterpret_cast<const nlmsghdr*>(m.data()), m.size());
  ASSERT_TRUE(ack.ok()) << ack.message();
  EXPECT_EQ(ack->err, ENOENT);
  EXPECT_EQ(ack->extack_msg, "No such set");
  EXPECT_FALSE(ack->extack_offset.has_value());
}

TEST(NlError, UncappedAckTlvsAreFoundAfterTheEchoedRequest) {
  std::vector<char> m = make_error_ack(EINVAL, "bad key length", 20u, false, false);
  Result<KernelAck> ack = parse_kernel_ack(reinterpret_cast<const nlmsghdr*>(m.data()), m.size());
  ASSERT_TRUE(ack.ok()) << ack.message();
  EXPECT_EQ(ack->err, EINVAL);
  EXPECT_EQ(ack->extack_msg, "bad key length");
  EXPECT_EQ(ack->extack_offset.value_or(0), 20u);
}

TEST(NlError, PlainAckHasZeroErrnoAndNoText) {
  std::vector<char> buf(256);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = NLMSG_ERROR;
  nlh->nlmsg_flags = NLM_F_CAPPED;
  nlh->nlmsg_seq = 5;
  auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
  e->error = 0;
  Result<KernelAck> ack = parse_kernel_ack(nlh, nlh->nlmsg_len);
  ASSERT_TRUE(ack.ok());
  EXPECT_EQ(ack->err, 0);
  EXPECT_TRUE(ack->extack_msg.empty());
  EXPECT_TRUE(kernel_status(*ack, "add table t").ok());
}

TEST(NlError, TruncatedOrWrongTypeMessageIsEbadmsg) {
  std::vector<char> buf(256);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = NLMSG_ERROR;  // no nlmsgerr behind the header
  EXPECT_EQ(parse_kernel_ack(nlh, nlh->nlmsg_len).err(), EBADMSG);
  nlh->nlmsg_type = NLMSG_DONE;
  nlh->nlmsg_len = NLMSG_HDRLEN + sizeof(nlmsgerr);
  EXPECT_EQ(parse_kernel_ack(nlh, nlh->nlmsg_len).err(), EBADMSG);
  EXPECT_EQ(parse_kernel_ack(nullptr, 0).err(), EBADMSG);
}

TEST(NlError, AnErrorCodeNoErrnoCanHaveIsEbadmsg) {
  // INT_MIN cannot be negated; nothing beyond MAX_ERRNO is a kernel errno.
  for (int code : {INT_MIN, -4096, 4096, INT_MAX}) {
    std::vector<char> buf(256);
    nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
    nlh->nlmsg_type = NLMSG_ERROR;
    auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
    e->error = code;
    EXPECT_EQ(parse_kernel_ack(nlh, nlh->nlmsg_len).err(), EBADMSG) << code;
  }
}

TEST(NlError, KernelStatusNamesTheOpTheErrnoAndTheKernelsText) {
  Status st = kernel_status(EEXIST, "add element to set sel4", "Set element exists");
  EXPECT_EQ(st.err(), EEXIST);
  EXPECT_EQ(st.message(), "add element to set sel4: File exists (EEXIST) \u2014 kernel: Set element exists");
  Status bare = kernel_status(ENOENT, "delete table t");
  EXPECT_EQ(bare.message(), "delete table t: No such file or directory (ENOENT)");
  EXPECT_EQ(errno_name(EAGAIN), "EAGAIN");
  EXPECT_EQ(errno_name(99999), "errno 99999");
}

// ---------------------------------------------------------------- NftSocket

TEST(NftSocket, OpenGivesCloexecSocketWithExtAckAndCapAck) {
  Result<NftSocket> sock = NftSocket::open();
  ASSERT_TRUE(sock.ok()) << sock.message();
  const int fd = sock->borrow_fd_do_not_close();
  ASSERT_GE(fd, 0);
  EXPECT_NE(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  int v = 0;
  socklen_t len = sizeof(v);
  ASSERT_EQ(getsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &v, &len), 0);
  EXPECT_EQ(v, 1);
  EXPECT_TRUE(sock->ext_ack());
  EXPECT_TRUE(sock->cap_ack());
  EXPECT_NE(sock->portid(), 0u);
  EXPECT_GT(sock->receive_buffer_bytes(), 0u);
  EXPECT_GT(sock->max_send_bytes(), 0u);
}

TEST(NftSocket, MovedFromSocketOwnsNothingAndRefusesIo) {
  Result<NftSocket> sock = NftSocket::open();
  ASSERT_TRUE(sock.ok()) << sock.message();
  const int fd = sock->borrow_fd_do_not_close();
  NftSocket moved = std::move(*sock);
  EXPECT_EQ(moved.borrow_fd_do_not_close(), fd);
  EXPECT_EQ(sock->borrow_fd_do_not_close(), -1);
  std::array<std::byte, 64> buf{};
  EXPECT_EQ(sock->receive(buf, 0).err(), EBADF);
  EXPECT_EQ(moved.receive(buf, 0).err(), ETIMEDOUT);  // nothing sent, nothing to read
}

// ---------------------------------------------------------------- building

TEST(NftTxnBuild, CommitFramesOpsInBatchBeginEndWithConsecutiveSeqsAndAcks) {
  FakeNfTables k;
  NftTxn txn(k);
  txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, make_test_set());
  txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements_of(range(0, 3)));
  ASSERT_TRUE(txn.commit().ok());
  ASSERT_EQ(k.requests.size(), 1u);
  std::vector<Sent> all = split_batch(k.requests[0]);
  ASSERT_EQ(all.size(), 5u);
  const Sent& begin = all.front();
  const Sent& end = all.back();
  EXPECT_EQ(begin.nlh()->nlmsg_type, NFNL_MSG_BATCH_BEGIN);
  EXPECT_EQ(end.nlh()->nlmsg_type, NFNL_MSG_BATCH_END);
  auto* nfg = static_cast<const nfgenmsg*>(mnl_nlmsg_get_payload(begin.nlh()));
  EXPECT_EQ(ntohs(nfg->res_id), NFNL_SUBSYS_NFTABLES);
  for (size_t i = 1; i < all.size(); ++i) {
    EXPECT_EQ(all[i].nlh()->nlmsg_seq, begin.nlh()->nlmsg_seq + i) << "message " << i;
  }
  for (size_t i = 1; i + 1 < all.size(); ++i) {
    EXPECT_EQ(all[i].subsys(), NFNL_SUBSYS_NFTABLES);
    EXPECT_NE(all[i].nlh()->nlmsg_flags & NLM_F_ACK, 0) << "message " << i;
    EXPECT_NE(all[i].nlh()->nlmsg_flags & NLM_F_REQUEST, 0) << "message " << i;
  }
  EXPECT_EQ(all[1].nft_type(), NFT_MSG_NEWTABLE);
  EXPECT_EQ(all[2].nft_type(), NFT_MSG_NEWSET);
  EXPECT_EQ(all[3].nft_type(), NFT_MSG_NEWSETELEM);
  EXPECT_NE(all[2].nlh()->nlmsg_flags & NLM_F_EXCL, 0);
  EXPECT_EQ(all[1].nlh()->nlmsg_flags & NLM_F_EXCL, 0);
  EXPECT_EQ(txn.stats().batches_sent, 1u);
  EXPECT_EQ(txn.stats().messages_sent, 3u);
}

TEST(NftTxnBuild, TableMessageDecodesToNameFamilyAndFlags) {
  FakeNfTables k;
  NftTxn txn(k);
  TablePtr t = make_test_table("owned");
  nftnl_table_set_u32(t.get(), NFTNL_TABLE_FLAGS, NFT_TABLE_F_DORMANT);
  txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, std::move(t));
  ASSERT_TRUE(txn.commit().ok());
  std::vector<Sent> msgs = k.op_messages(0);
  ASSERT_EQ(msgs.size(), 1u);
  TablePtr got = make_table();
  ASSERT_EQ(nftnl_table_nlmsg_parse(msgs[0].nlh(), got.get()), 0);
  EXPECT_STREQ(nftnl_table_get_str(got.get(), NFTNL_TABLE_NAME), "owned");
  EXPECT_EQ(nftnl_table_get_u32(got.get(), NFTNL_TABLE_FAMILY), static_cast<uint32_t>(NFPROTO_INET));
  EXPECT_EQ(nftnl_table_get_u32(got.get(), NFTNL_TABLE_FLAGS), static_cast<uint32_t>(NFT_TABLE_F_DORMANT));
}

TEST(NftTxnBuild, ChainMessageDecodesToHookPriorityTypeAndPolicy) {
  FakeNfTables k;
  NftTxn txn(k);
  ChainPtr c = make_chain();
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, "forward");
  nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
  nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, NF_INET_FORWARD);
  nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, -10);
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, "filter");
  nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
  txn.add_chain(NFT_MSG_NEWCHAIN, NLM_F_CREATE, std::move(c));
  ASSERT_TRUE(txn.commit().ok());
  std::vector<Sent> msgs = k.op_messages(0);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].nft_type(), NFT_MSG_NEWCHAIN);
  ChainPtr got = make_chain();
  ASSERT_EQ(nftnl_chain_nlmsg_parse(msgs[0].nlh(), got.get()), 0);
  EXPECT_STREQ(nftnl_chain_get_str(got.get(), NFTNL_CHAIN_TABLE), kTable);
  EXPECT_STREQ(nftnl_chain_get_str(got.get(), NFTNL_CHAIN_NAME), "forward");
  EXPECT_EQ(nftnl_chain_get_u32(got.get(), NFTNL_CHAIN_HOOKNUM), static_cast<uint32_t>(NF_INET_FORWARD));
  EXPECT_EQ(nftnl_chain_get_s32(got.get(), NFTNL_CHAIN_PRIO), -10);
  EXPECT_STREQ(nftnl_chain_get_str(got.get(), NFTNL_CHAIN_TYPE), "filter");
  EXPECT_EQ(nftnl_chain_get_u32(got.get(), NFTNL_CHAIN_POLICY), static_cast<uint32_t>(NF_ACCEPT));
}

TEST(NftTxnBuild, SetMessageDecodesToConcatKeyTypeLengthFlagsAndId) {
  FakeNfTables k;
  NftTxn txn(k);
  txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, make_test_set());
  ASSERT_TRUE(txn.commit().ok());
  std::vector<Sent> msgs = k.op_messages(0);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].nft_type(), NFT_MSG_NEWSET);
  SetPtr got = make_set();
  ASSERT_EQ(nftnl_set_nlmsg_parse(msgs[0].nlh(), got.get()), 0);
  EXPECT_STREQ(nftnl_set_get_str(got.get(), NFTNL_SET_TABLE), kTable);
  EXPECT_STREQ(nftnl_set_get_str(got.get(), NFTNL_SET_NAME), kSet);
  EXPECT_EQ(nftnl_set_get_u32(got.get(), NFTNL_SET_FAMILY), static_cast<uint32_t>(NFPROTO_INET));
  EXPECT_EQ(nftnl_set_get_u32(got.get(), NFTNL_SET_KEY_TYPE), kConcatKeyType);
  EXPECT_EQ(nftnl_set_get_u32(got.get(), NFTNL_SET_KEY_LEN), kKeyLen);
  EXPECT_EQ(nftnl_set_get_u32(got.get(), NFTNL_SET_FLAGS), static_cast<uint32_t>(NFT_SET_TIMEOUT));
  EXPECT_EQ(nftnl_set_get_u32(got.get(), NFTNL_SET_ID), 7u);
}

TEST(NftTxnBuild, ElementMessageDecodesToKeysDataAndTimeoutInOrder) {
  FakeNfTables k;
  NftTxn txn(k);
  SetPtr s = elements_of(range(100, 4));
  // Give the elements data and a timeout, as a map with per-element expiry would.
  uint32_t n = 0;
  (void)nftnl_set_elem_foreach(
      s.get(),
      [](nftnl_set_elem* e, void* data) {
        uint32_t& i = *static_cast<uint32_t*>(data);
        const uint32_t v = htonl(0x1000 + i++);
        nftnl_set_elem_set(e, NFTNL_SET_ELEM_DATA, &v, sizeof(v));
        nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, 30000);
        return 0;
      },
      &n);
  txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, std::move(s), {17, 18, 19, 20});
  ASSERT_TRUE(txn.commit().ok());
  std::vector<Sent> msgs = k.op_messages(0);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].nft_type(), NFT_MSG_NEWSETELEM);
  EXPECT_NE(msgs[0].nlh()->nlmsg_flags & NLM_F_EXCL, 0);
  SetPtr got = make_set();
  ASSERT_EQ(nftnl_set_elems_nlmsg_parse(msgs[0].nlh(), got.get()), 0);
  EXPECT_STREQ(nftnl_set_get_str(got.get(), NFTNL_SET_TABLE), kTable);
  EXPECT_STREQ(nftnl_set_get_str(got.get(), NFTNL_SET_NAME), kSet);
  EXPECT_EQ(nftnl_set_get_u32(got.get(), NFTNL_SET_FAMILY), static_cast<uint32_t>(NFPROTO_INET));
  struct Seen {
    std::vector<std::string> keys;
    std::vector<uint32_t> data;
    std::vector<uint64_t> timeouts;
  } seen;
  (void)nftnl_set_elem_foreach(
      got.get(),
      [](nftnl_set_elem* e, void* d) {
        auto* s2 = static_cast<Seen*>(d);
        uint32_t len = 0;
        const void* key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &len);
        s2->keys.push_back(key_str(key, len));
        uint32_t v = 0;
        std::memcpy(&v, nftnl_set_elem_get(e, NFTNL_SET_ELEM_DATA, &len), sizeof(v));
        s2->data.push_back(ntohl(v));
        s2->timeouts.push_back(nftnl_set_elem_get_u64(e, NFTNL_SET_ELEM_TIMEOUT));
        return 0;
      },
      &seen);
  ASSERT_EQ(seen.keys.size(), 4u);
  for (uint32_t i = 0; i < 4; ++i) {
    EXPECT_EQ(seen.keys[i], key_str(conn_key(100 + i))) << i;
    EXPECT_EQ(seen.data[i], 0x1000 + i) << i;
    EXPECT_EQ(seen.timeouts[i], 30000u) << i;
  }
}

TEST(NftTxnBuild, FlowtableMessageDecodesToHookPriorityDevicesAndHwOffloadFlag) {
  FakeNfTables k;
  NftTxn txn(k);
  FlowtablePtr ft = make_flowtable();
  nftnl_flowtable_set_str(ft.get(), NFTNL_FLOWTABLE_TABLE, kTable);
  nftnl_flowtable_set_str(ft.get(), NFTNL_FLOWTABLE_NAME, "ft");
  nftnl_flowtable_set_u32(ft.get(), NFTNL_FLOWTABLE_FAMILY, NFPROTO_INET);
  nftnl_flowtable_set_u32(ft.get(), NFTNL_FLOWTABLE_HOOKNUM, NF_NETDEV_INGRESS);
  nftnl_flowtable_set_s32(ft.get(), NFTNL_FLOWTABLE_PRIO, -5);
  nftnl_flowtable_set_u32(ft.get(), NFTNL_FLOWTABLE_FLAGS, NFT_FLOWTABLE_HW_OFFLOAD);
  const char* devs[] = {"veth0", "veth1", nullptr};
  ASSERT_EQ(nftnl_flowtable_set_array(ft.get(), NFTNL_FLOWTABLE_DEVICES, devs), 0);
  txn.add_flowtable(NFT_MSG_NEWFLOWTABLE, NLM_F_CREATE, std::move(ft));
  ASSERT_TRUE(txn.commit().ok());
  std::vector<Sent> msgs = k.op_messages(0);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].nft_type(), NFT_MSG_NEWFLOWTABLE);
  FlowtablePtr got = make_flowtable();
  ASSERT_EQ(nftnl_flowtable_nlmsg_parse(msgs[0].nlh(), got.get()), 0);
  EXPECT_STREQ(nftnl_flowtable_get_str(got.get(), NFTNL_FLOWTABLE_NAME), "ft");
  EXPECT_STREQ(nftnl_flowtable_get_str(got.get(), NFTNL_FLOWTABLE_TABLE), kTable);
  EXPECT_EQ(nftnl_flowtable_get_u32(got.get(), NFTNL_FLOWTABLE_HOOKNUM), static_cast<uint32_t>(NF_NETDEV_INGRESS));
  EXPECT_EQ(nftnl_flowtable_get_s32(got.get(), NFTNL_FLOWTABLE_PRIO), -5);
  EXPECT_EQ(nftnl_flowtable_get_u32(got.get(), NFTNL_FLOWTABLE_FLAGS) & NFT_FLOWTABLE_HW_OFFLOAD,
            static_cast<uint32_t>(NFT_FLOWTABLE_HW_OFFLOAD));
  const char* const* got_devs = nftnl_flowtable_get_array(got.get(), NFTNL_FLOWTABLE_DEVICES);
  ASSERT_NE(got_devs, nullptr);
  std::vector<std::string> names;
  for (size_t i = 0; got_devs[i] != nullptr; ++i) names.emplace_back(got_devs[i]);
  EXPECT_EQ(names, (std::vector<std::string>{"veth0", "veth1"}));
}

TEST(NftTxnBuild, RuleMessageDecodesToItsExpressionsInOrder) {
  FakeNfTables k;
  NftTxn txn(k);
  RulePtr r = make_rule();
  nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, kTable);
  nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, "forward");
  nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, NFPROTO_INET);
  nftnl_expr* meta = nftnl_expr_alloc("meta");
  nftnl_expr_set_u32(meta, NFTNL_EXPR_META_KEY, NFT_META_L4PROTO);
  nftnl_expr_set_u32(meta, NFTNL_EXPR_META_DREG, NFT_REG_1);
  nftnl_rule_add_expr(r.get(), meta);
  nftnl_expr* lookup = nftnl_expr_alloc("lookup");
  nftnl_expr_set_str(lookup, NFTNL_EXPR_LOOKUP_SET, kSet);
  nftnl_expr_set_u32(lookup, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
  nftnl_rule_add_expr(r.get(), lookup);
  nftnl_expr* flow = nftnl_expr_alloc("flow_offload");
  nftnl_expr_set_str(flow, NFTNL_EXPR_FLOW_TABLE_NAME, "ft");
  nftnl_rule_add_expr(r.get(), flow);
  txn.add_rule(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, std::move(r));
  ASSERT_TRUE(txn.commit().ok());
  std::vector<Sent> msgs = k.op_messages(0);
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].nft_type(), NFT_MSG_NEWRULE);
  EXPECT_NE(msgs[0].nlh()->nlmsg_flags & NLM_F_APPEND, 0);
  RulePtr got = make_rule();
  ASSERT_EQ(nftnl_rule_nlmsg_parse(msgs[0].nlh(), got.get()), 0);
  EXPECT_STREQ(nftnl_rule_get_str(got.get(), NFTNL_RULE_CHAIN), "forward");
  std::vector<std::string> names;
  (void)nftnl_expr_foreach(
      got.get(),
      [](nftnl_expr* e, void* d) {
        static_cast<std::vector<std::string>*>(d)->emplace_back(nftnl_expr_get_str(e, NFTNL_EXPR_NAME));
        return 0;
      },
      &names);
  EXPECT_EQ(names, (std::vector<std::string>{"meta", "lookup", "flow_offload"}));
}

TEST(NftTxnBuild, ElementListsOver64KiBAreSplitAcrossMessagesOfOneBatch) {
  FakeNfTables k;
  NftTxn txn(k);
  const std::vector<uint32_t> conns = range(0, 10000);  // ~360 KB of elements
  OpId op = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements_of(conns), ids_of(conns));
  ASSERT_TRUE(txn.commit().ok());
  EXPECT_EQ(txn.element_count(op), 10000u);
  ASSERT_EQ(k.requests.size(), 1u) << "one sendmsg for the whole transaction";
  std::vector<Sent> msgs = k.op_messages(0);
  ASSERT_GT(msgs.size(), 4u);
  std::vector<std::string> keys;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const size_t nest = element_nest_len(msgs[i].nlh());
    EXPECT_LE(nest, 65535u) << "message " << i;
    if (i + 1 < msgs.size()) {
      // Filled: one more element (32 bytes with this key) would overflow.
      EXPECT_GT(nest + 32, 65535u) << "message " << i << " was split early";
    }
    for (const ElemAt& e : elements_in(msgs[i].nlh())) keys.push_back(e.key);
  }
  ASSERT_EQ(keys.size(), conns.size());
  for (uint32_t i = 0; i < conns.size(); ++i) ASSERT_EQ(keys[i], key_str(conn_key(i))) << i;
  EXPECT_EQ(k.keys.size(), 10000u);
}

TEST(NftTxnBuild, WrongMessageTypeOrMissingFamilyFailsWithEinvalWithoutSending) {
  FakeNfTables k;
  NftTxn txn(k);
  OpId wrong = txn.add_table(NFT_MSG_NEWSET, 0, make_test_table());
  TablePtr nofam = make_table();
  nftnl_table_set_str(nofam.get(), NFTNL_TABLE_NAME, "x");
  OpId missing = txn.add_table(NFT_MSG_NEWTABLE, 0, std::move(nofam));
  OpId null = txn.add_chain(NFT_MSG_NEWCHAIN, 0, nullptr);
  OpId bad_ids = txn.add_elements(NFT_MSG_NEWSETELEM, 0, elements_of(range(0, 3)), {1, 2});
  OpId good = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  Status st = txn.commit();
  EXPECT_EQ(st.err(), EINVAL);
  EXPECT_EQ(txn.status(wrong).err(), EINVAL);
  EXPECT_EQ(txn.status(missing).err(), EINVAL);
  EXPECT_EQ(txn.status(null).err(), EINVAL);
  EXPECT_EQ(txn.status(bad_ids).err(), EINVAL);
  EXPECT_TRUE(txn.status(good).ok());
  ASSERT_EQ(k.requests.size(), 1u);
  EXPECT_EQ(k.op_messages(0).size(), 1u);
  EXPECT_EQ(txn.commit().err(), EALREADY);
}

// ---------------------------------------------------------------- errors

TEST(NftTxnErrors, FailedMessageGetsKernelErrnoAndTextAndTheOthersAreResubmitted) {
  FakeNfTables k;
  k.force = [](size_t batch, size_t idx, const Sent&) {
    return batch == 0 && idx == 2 ? Reply{EEXIST, "Set exists", std::nullopt} : Reply{};
  };
  NftTxn txn(k);
  OpId table = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  OpId other = txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, make_test_set("other"));
  OpId set = txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL, make_test_set(), "add set sel4");
  OpId elems = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements_of(range(0, 10), "other"));
  Status st = txn.commit();
  EXPECT_EQ(st.err(), EEXIST);
  EXPECT_EQ(txn.status(set).err(), EEXIST);
  EXPECT_EQ(txn.status(set).message(), "add set sel4: File exists (EEXIST) \u2014 kernel: Set exists");
  EXPECT_TRUE(txn.status(table).ok());
  EXPECT_TRUE(txn.status(other).ok());
  EXPECT_TRUE(txn.status(elems).ok()) << txn.status(elems).message();
  ASSERT_EQ(k.requests.size(), 2u);
  std::vector<Sent> second = k.op_messages(1);
  ASSERT_EQ(second.size(), 3u);
  EXPECT_EQ(second[0].nft_type(), NFT_MSG_NEWTABLE);
  EXPECT_EQ(second[1].nft_type(), NFT_MSG_NEWSET);
  EXPECT_EQ(second[2].nft_type(), NFT_MSG_NEWSETELEM);
  SetPtr resent = make_set();
  ASSERT_EQ(nftnl_set_nlmsg_parse(second[1].nlh(), resent.get()), 0);
  EXPECT_STREQ(nftnl_set_get_str(resent.get(), NFTNL_SET_NAME), "other");
  EXPECT_EQ(k.keys.size(), 10u);
  EXPECT_EQ(txn.stats().failed_batches, 1u);
}

TEST(NftTxnErrors, DuplicateElementsInsideBigMessagesFailAloneAndKeyedByCallerIds) {
  FakeNfTables k;
  k.keys.insert(key_str(conn_key(17)));
  k.keys.insert(key_str(conn_key(4242)));
  NftTxn txn(k);
  const std::vector<uint32_t> conns = range(0, 5000);
  std::vector<uint64_t> ids(conns.size());
  for (size_t i = 0; i < conns.size(); ++i) ids[i] = 1000000 + conns[i];
  OpId op = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, elements_of(conns), ids);
  Status st = txn.commit();
  EXPECT_EQ(st.err(), EEXIST);
  std::span<const ElementFailure> failed = txn.element_failures(op);
  ASSERT_EQ(failed.size(), 2u);
  EXPECT_EQ(failed[0].id, 1000017u);
  EXPECT_EQ(failed[0].index, 17u);
  EXPECT_EQ(failed[0].status.err(), EEXIST);
  EXPECT_EQ(failed[0].status.message(), "add element to set sel4 (id 1000017): File exists (EEXIST)");
  EXPECT_EQ(failed[1].id, 1004242u);
  EXPECT_EQ(failed[1].status.err(), EEXIST);
  EXPECT_EQ(txn.status(op).err(), EEXIST);
  EXPECT_NE(txn.status(op).message().find("2 of 5000 elements failed"), std::string::npos) << txn.status(op).message();
  EXPECT_EQ(k.keys.size(), 5000u) << "every other element landed";
  // First pass fails, the second finds the rest of the tails one by one,
  // the third commits: bounded, not one pass per element.
  EXPECT_LE(k.requests.size(), 3u);
}

TEST(NftTxnErrors, WithoutAnOffsetFailingElementsAreFoundByResendingOnePerMessage) {
  FakeNfTables k;
  k.report_offsets = false;
  k.keys.insert(key_str(conn_key(3)));
  NftTxn txn(k);
  const std::vector<uint32_t> conns = range(0, 8);
  OpId op = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE | NLM_F_EXCL, elements_of(conns), ids_of(conns));
  EXPECT_EQ(txn.commit().err(), EEXIST);
  std::span<const ElementFailure> failed = txn.element_failures(op);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].id, 3u);
  EXPECT_EQ(failed[0].status.err(), EEXIST);
  ASSERT_EQ(k.requests.size(), 3u);
  EXPECT_EQ(k.op_messages(0).size(), 1u);  // all 8 in one message
  EXPECT_EQ(k.op_messages(1).size(), 8u);  // one per element
  for (const Sent& m : k.op_messages(1)) EXPECT_EQ(elements_in(m.nlh()).size(), 1u);
  EXPECT_EQ(k.keys.size(), 8u);
}

TEST(NftTxnErrors, DeletingMissingElementsFailsThoseWithEnoent) {
  FakeNfTables k;
  for (uint32_t c : {1u, 2u, 4u}) k.keys.insert(key_str(conn_key(c)));
  NftTxn txn(k);
  const std::vector<uint32_t> conns = {1, 2, 3, 4};
  OpId op = txn.add_elements(NFT_MSG_DELSETELEM, 0, elements_of(conns), {101, 102, 103, 104});
  EXPECT_EQ(txn.commit().err(), ENOENT);
  std::span<const ElementFailure> failed = txn.element_failures(op);
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].id, 103u);
  EXPECT_EQ(failed[0].status.err(), ENOENT);
  EXPECT_EQ(failed[0].status.message().rfind("delete element from set sel4 (id 103): ", 0), 0u)
      << failed[0].status.message();
  EXPECT_TRUE(k.keys.empty());
}

TEST(NftTxnErrors, ErrorAtTheSetAttributeFailsEveryElementWithoutResendingThem) {
  FakeNfTables k;
  k.force = [](size_t, size_t, const Sent& m) {
    uint32_t set_off = 0;
    (void)elements_in(m.nlh(), &set_off);
    return Reply{ENOENT, "No such set", set_off};
  };
  NftTxn txn(k);
  OpId op = txn.add_elements(NFT_MSG_NEWSETELEM, 0, elements_of(range(0, 50)));
  EXPECT_EQ(txn.commit().err(), ENOENT);
  EXPECT_EQ(txn.element_failures(op).size(), 50u);
  for (const ElementFailure& f : txn.element_failures(op)) {
    EXPECT_EQ(f.status.err(), ENOENT);
    EXPECT_NE(f.status.message().find("kernel: No such set"), std::string::npos);
  }
  EXPECT_EQ(k.requests.size(), 1u);
}

TEST(NftTxnErrors, EagainFromTheKernelResendsTheSameBatch) {
  FakeNfTables k;
  k.eagain_batches = 1;
  NftTxn txn(k);
  OpId t = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  OpId e = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements_of(range(0, 5)));
  EXPECT_TRUE(txn.commit().ok());
  EXPECT_TRUE(txn.status(t).ok());
  EXPECT_TRUE(txn.status(e).ok());
  ASSERT_EQ(k.requests.size(), 2u);
  EXPECT_EQ(k.requests[0], k.requests[1]);
  EXPECT_EQ(txn.stats().eagain_retries, 1u);
  EXPECT_EQ(k.keys.size(), 5u);
}

TEST(NftTxnErrors, EagainThatNeverStopsEndsInEagain) {
  FakeNfTables k;
  k.eagain_batches = 1000;
  NftTxnOptions o;
  o.max_eagain_retries = 3;
  NftTxn txn(k, o);
  OpId t = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  EXPECT_EQ(txn.commit().err(), EAGAIN);
  EXPECT_EQ(txn.status(t).err(), EAGAIN);
  EXPECT_EQ(k.requests.size(), 4u);
}

TEST(NftTxnErrors, AcksLostToEnobufsGiveEnobufsNeverSuccess) {
  FakeNfTables k;
  k.ack_capacity = 2;
  NftTxn txn(k);
  std::vector<OpId> ops;
  ops.reserve(5);
  for (int i = 0; i < 5; ++i) {
    ops.push_back(txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table(("t" + std::to_string(i)).c_str())));
  }
  EXPECT_EQ(txn.commit().err(), ENOBUFS);
  for (int i = 2; i < 5; ++i) {
    EXPECT_EQ(txn.status(ops[i]).err(), ENOBUFS) << i;
    EXPECT_NE(txn.status(ops[i]).message().find("acknowledgement lost"), std::string::npos);
  }
  // Acked, but whether their transaction committed is unknown.
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(txn.status(ops[i]).err(), ENOBUFS) << i;
    EXPECT_NE(txn.status(ops[i]).message().find("outcome unknown"), std::string::npos);
  }
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(txn.outcome_unknown(ops[i])) << i;
  EXPECT_EQ(txn.stats().acks_lost, 3u);
}

TEST(NftTxnErrors, AcksLostAfterAnErrorAckAreResentBecauseTheBatchWasAborted) {
  FakeNfTables k;
  k.ack_capacity = 2;
  k.force = [](size_t batch, size_t idx, const Sent&) {
    return batch == 0 && idx == 0 ? Reply{EEXIST, "", std::nullopt} : Reply{};
  };
  NftTxn txn(k);
  std::vector<OpId> ops;
  ops.reserve(5);
  for (int i = 0; i < 5; ++i) {
    ops.push_back(txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table(("t" + std::to_string(i)).c_str())));
  }
  EXPECT_EQ(txn.commit().err(), EEXIST);
  EXPECT_EQ(txn.status(ops[0]).err(), EEXIST);
  for (int i = 1; i < 5; ++i) EXPECT_TRUE(txn.status(ops[i]).ok()) << i << ": " << txn.status(ops[i]).message();
  ASSERT_EQ(k.requests.size(), 2u);
  EXPECT_EQ(k.op_messages(1).size(), 4u);
}

TEST(NftTxnErrors, KernelRefusingTheWholeBatchFailsEveryOpWithItsErrno) {
  FakeNfTables k;
  k.refuse_next_batch = Reply{EPERM, "", std::nullopt};
  NftTxn txn(k);
  OpId t = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  OpId e = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements_of(range(0, 3)), {7, 8, 9});
  EXPECT_EQ(txn.commit().err(), EPERM);
  EXPECT_EQ(txn.status(t).err(), EPERM);
  ASSERT_EQ(txn.element_failures(e).size(), 3u);
  EXPECT_EQ(txn.element_failures(e)[2].id, 9u);
  EXPECT_EQ(txn.element_failures(e)[2].status.err(), EPERM);
  EXPECT_FALSE(txn.element_failures(e)[2].outcome_unknown) << "a refused batch is known not applied";
  EXPECT_FALSE(txn.outcome_unknown(t));
  EXPECT_EQ(k.requests.size(), 1u);
}

TEST(NftTxnErrors, MessageLargerThanTheSendLimitFailsWithEmsgsize) {
  FakeNfTables k;
  k.max_send = 200;
  NftTxn txn(k);
  ChainPtr c = make_chain();
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, kTable);
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, std::string(200, 'c').c_str());
  nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, NFPROTO_INET);
  OpId big = txn.add_chain(NFT_MSG_NEWCHAIN, NLM_F_CREATE, std::move(c));
  OpId small = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  EXPECT_EQ(txn.commit().err(), EMSGSIZE);
  EXPECT_EQ(txn.status(big).err(), EMSGSIZE);
  EXPECT_TRUE(txn.status(small).ok());
  ASSERT_EQ(k.requests.size(), 1u);
  EXPECT_EQ(k.op_messages(0).size(), 1u);
}

TEST(NftTxnErrors, FailedSendFailsEveryOpWithTheSendErrno) {
  FakeNfTables k;
  k.send_error = Status::error(ECONNREFUSED, "send to nfnetlink: fake failure");
  NftTxn txn(k);
  OpId t = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  OpId e = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements_of(range(0, 2)), {5, 6});
  EXPECT_EQ(txn.commit().err(), ECONNREFUSED);
  EXPECT_EQ(txn.status(t).err(), ECONNREFUSED);
  EXPECT_EQ(txn.status(t).message(), "add table ctoffload: send to nfnetlink: fake failure");
  ASSERT_EQ(txn.element_failures(e).size(), 2u);
  EXPECT_EQ(txn.element_failures(e)[1].id, 6u);
  EXPECT_EQ(txn.element_failures(e)[1].status.err(), ECONNREFUSED);
  EXPECT_FALSE(txn.outcome_unknown(t)) << "nothing was sent";
  EXPECT_FALSE(txn.outcome_unknown(e));
  EXPECT_EQ(k.reopens, 0u) << "ECONNREFUSED is no sign of a closed socket";
}

TEST(NftTxnErrors, SendOnASocketThatIsGoneReopensItAndSendsTheBatchAgain) {
  for (int err : {EBADF, ENOTSOCK}) {
    FakeNfTables k;
    k.gone = err;
    NftTxn txn(k);
    OpId t = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
    OpId e = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements_of(range(0, 2)), {5, 6});
    EXPECT_TRUE(txn.commit().ok()) << err;
    EXPECT_TRUE(txn.status(t).ok());
    EXPECT_TRUE(txn.status(e).ok());
    EXPECT_EQ(k.reopens, 1u);
    EXPECT_EQ(txn.stats().reopens, 1u);
    EXPECT_EQ(k.requests.size(), 1u) << "the failed send never reached the kernel";
    EXPECT_EQ(k.keys.size(), 2u);
  }
}

TEST(NftTxnErrors, ReceiveOnASocketThatIsGoneAfterTheSendIsAnUnknownOutcome) {
  FakeNfTables k;
  k.gone_after_send = ENOTSOCK;
  NftTxn txn(k);
  OpId t = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  OpId e = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements_of(range(0, 2)), {5, 6});
  EXPECT_EQ(txn.commit().err(), ENOTSOCK);
  EXPECT_EQ(txn.status(t).err(), ENOTSOCK);
  EXPECT_NE(txn.status(t).message().find("outcome unknown"), std::string::npos) << txn.status(t).message();
  EXPECT_TRUE(txn.outcome_unknown(t));
  EXPECT_TRUE(txn.outcome_unknown(e));
  ASSERT_EQ(txn.element_failures(e).size(), 2u);
  EXPECT_TRUE(txn.element_failures(e)[0].outcome_unknown);
  EXPECT_EQ(k.keys.size(), 2u) << "the kernel did commit: the verdict, not the batch, was lost";
  EXPECT_EQ(k.reopens, 1u) << "the socket is reopened for what follows";
  EXPECT_EQ(k.requests.size(), 1u) << "a batch that may have been applied is never sent blindly again";
}

TEST(NftTxnErrors, EintrThatGetsThroughTheTransportIsRetried) {
  FakeNfTables k;
  k.eintr_send = true;
  k.eintr_receive = true;
  NftTxn txn(k);
  OpId e = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements_of(range(0, 3)));
  EXPECT_TRUE(txn.commit().ok()) << txn.status(e).message();
  EXPECT_FALSE(k.eintr_send);
  EXPECT_FALSE(k.eintr_receive);
  EXPECT_EQ(k.requests.size(), 1u);
  EXPECT_EQ(k.keys.size(), 3u);
}

TEST(NftTxnErrors, KernelThatNeverAnswersGivesEtimedoutNotSuccess) {
  FakeNfTables k;
  k.silent = true;
  NftTxn txn(k);
  OpId t = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  EXPECT_EQ(txn.commit().err(), ETIMEDOUT);
  EXPECT_EQ(txn.status(t).err(), ETIMEDOUT);
  EXPECT_NE(txn.status(t).message().find("outcome unknown"), std::string::npos) << txn.status(t).message();
  EXPECT_EQ(k.requests.size(), 1u);
}

// ---------------------------------------------------------------- sizing

TEST(NftTxnSizing, BatchOverTheSendLimitIsSplitIntoSeveralFramedTransactions) {
  FakeNfTables k;
  k.max_send = 8192;
  NftTxn txn(k);
  const std::vector<uint32_t> conns = range(0, 2000);  // ~72 KB
  OpId t = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  OpId e = txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements_of(conns), ids_of(conns));
  ASSERT_TRUE(txn.commit().ok());
  EXPECT_TRUE(txn.status(t).ok());
  EXPECT_TRUE(txn.status(e).ok());
  ASSERT_GE(k.requests.size(), 8u);
  uint32_t last_seq = 0;
  size_t elements = 0;
  for (size_t b = 0; b < k.requests.size(); ++b) {
    EXPECT_LE(k.requests[b].size(), 8192u);
    // Filled: one more 32-byte element would have crossed the limit.
    if (b + 1 < k.requests.size()) {
      EXPECT_GT(k.requests[b].size() + 32, 8192u) << "batch " << b;
    }
    std::vector<Sent> all = split_batch(k.requests[b]);
    EXPECT_EQ(all.front().nlh()->nlmsg_type, NFNL_MSG_BATCH_BEGIN);
    EXPECT_EQ(all.back().nlh()->nlmsg_type, NFNL_MSG_BATCH_END);
    if (b > 0) {
      EXPECT_GT(all.front().nlh()->nlmsg_seq, last_seq);
    }
    last_seq = all.back().nlh()->nlmsg_seq;
    for (const Sent& m : k.op_messages(b)) elements += elements_in(m.nlh()).size();
  }
  EXPECT_EQ(elements, 2000u);
  EXPECT_EQ(k.keys.size(), 2000u);
}

TEST(NftTxnSizing, AcksThatWouldNotFitTheReceiveBufferSplitTheBatch) {
  FakeNfTables k;
  k.rcvbuf = size_t{10} * 1024;  // ten acks at the default budget of 1 KiB each
  NftTxn txn(k);
  for (int i = 0; i < 25; ++i) {
    txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table(("t" + std::to_string(i)).c_str()));
  }
  ASSERT_TRUE(txn.commit().ok());
  ASSERT_EQ(k.requests.size(), 3u);
  EXPECT_EQ(k.op_messages(0).size(), 10u);
  EXPECT_EQ(k.op_messages(1).size(), 10u);
  EXPECT_EQ(k.op_messages(2).size(), 5u);
}

TEST(NftTxnErrors, DatagramsWhoseLengthsDoNotAddUpAreDroppedNotWalked) {
  // libmnl compares lengths as signed ints: 2 GiB and more would be walked
  // (a crash), a length that aligns to 0 loops forever.  Such datagrams are
  // dropped and the real acks behind them still count.
  FakeNfTables k;
  for (uint32_t len : {0x98000024u, 0xffffffffu, 0xfffffffdu, 8u, 37u}) {
    ctoffload::testing::Bytes d(36, 0);
    nlmsghdr h{};
    h.nlmsg_len = len;
    h.nlmsg_type = NLMSG_ERROR;
    std::memcpy(d.data(), &h, sizeof h);
    k.push(std::move(d));
  }
  NftTxn txn(k);
  OpId t = txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
  EXPECT_TRUE(txn.commit().ok());
  EXPECT_TRUE(txn.status(t).ok()) << txn.status(t).message();
}

TEST(NftTxnSizing, StaleAcksFromAnEarlierBatchAreIgnored) {
  // An ack left in the socket by an earlier transaction (one that gave up
  // waiting) must not be taken for an answer to a later one.
  FakeNfTables k;
  {
    NftTxn first(k);
    first.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table());
    ASSERT_TRUE(first.commit().ok());
  }
  const std::vector<Sent> old = k.op_messages(0);
  ASSERT_EQ(old.size(), 1u);
  k.inject_ack(old[0].nlh(), Reply{EEXIST, "stale", std::nullopt});
  NftTxn second(k);
  OpId t = second.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, make_test_table("fresh"));
  EXPECT_TRUE(second.commit().ok());
  EXPECT_TRUE(second.status(t).ok()) << second.status(t).message();
}

}  // namespace
}  // namespace ctoffload::netlink
