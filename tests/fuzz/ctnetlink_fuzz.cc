// ctnetlink_fuzz.cc - fuzzes the decoding of conntrack entries and the
// ctnetlink client's reply reader.
//
// Feeds: byte 0 picks the request (bits 0-1: 0 dump, 1 get, 2 remove, 3
// dump with a filter the kernel is asked to apply; bits 2-6 choose that
// filter); the rest are records (fuzz_support.h) answering it.  Every
// message of every datagram goes to netlink::parse_ct_message()
// (src/netlink/ctnetlink.h), the function that turns one
// IPCTNL_MSG_CT_NEW message into a CtEntry.  Then a Ctnetlink client on a
// fake transport sends the request and reads the datagrams as the kernel's
// reply (Ctnetlink::transact(): sequence numbers, NLMSG_ERROR, NLMSG_DONE,
// truncated datagrams, ENOBUFS resyncs, a refused filter).  Every message
// gets the request's sequence number plus its own nlmsg_seq.
//
// Checks, beyond not crashing:
//   * parse_ct_message() gives the same result whether the buffer ends at
//     the message or runs on;
//   * an accepted entry has family AF_INET or AF_INET6 (IPv4 addresses
//     with zero bytes after the first four) and a TCP state only for TCP;
//   * round trip: the entry encoded again as a CT_NEW message (with
//     libmnl, not the decoder's code) decodes to the same entry;
//   * the requests sent are well formed (NLM_F_REQUEST, the ctnetlink
//     subsystem, nlmsg_len equal to the length sent);
//   * a dump hands over only entries that match its filter, counts them
//     in stats (entries <= messages, at most 8 resyncs, as many on_resync
//     calls as resyncs), and every error it returns is a positive errno.
#include <arpa/inet.h>
#include <endian.h>
#include <libmnl/libmnl.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <deque>
#include <memory>

#include "fuzz_support.h"
#include "netlink/ctnetlink.h"
#include "support/fake_kernel.h"

namespace {

using namespace ctoffload;
using namespace ctoffload::fuzz;
using netlink::CtEntry;

void put_tuple(nlmsghdr* nlh, uint16_t type, uint8_t family, uint8_t proto, const Tuple& t) {
  nlattr* tuple = mnl_attr_nest_start(nlh, type);
  nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
  const size_t alen = family == AF_INET ? 4 : 16;
  mnl_attr_put(nlh, family == AF_INET ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, alen, t.src.bytes);
  mnl_attr_put(nlh, family == AF_INET ? CTA_IP_V4_DST : CTA_IP_V6_DST, alen, t.dst.bytes);
  mnl_attr_nest_end(nlh, ip);
  nlattr* p = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
  mnl_attr_put_u8(nlh, CTA_PROTO_NUM, proto);
  mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(t.src_port));
  mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(t.dst_port));
  mnl_attr_nest_end(nlh, p);
  mnl_attr_nest_end(nlh, tuple);
}

void put_counters(nlmsghdr* nlh, uint16_t type, const netlink::CtCounters& c) {
  nlattr* n = mnl_attr_nest_start(nlh, type);
  mnl_attr_put_u64(nlh, CTA_COUNTERS_PACKETS, htobe64(c.packets));
  mnl_attr_put_u64(nlh, CTA_COUNTERS_BYTES, htobe64(c.bytes));
  mnl_attr_nest_end(nlh, n);
}

// A CT_NEW message carrying 'e', as the kernel would write it.
std::vector<uint32_t> encode(const CtEntry& e) {
  std::vector<uint32_t> buf(1024);
  nlmsghdr* nlh = mnl_nlmsg_put_header(buf.data());
  nlh->nlmsg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
  auto* nfg = static_cast<nfgenmsg*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nfgenmsg)));
  nfg->nfgen_family = e.conn.family;
  nfg->version = NFNETLINK_V0;
  put_tuple(nlh, CTA_TUPLE_ORIG, e.conn.family, e.conn.proto, e.conn.orig);
  put_tuple(nlh, CTA_TUPLE_REPLY, e.conn.family, e.conn.proto, e.conn.reply);
  mnl_attr_put_u32(nlh, CTA_STATUS, htonl(e.status));
  mnl_attr_put_u32(nlh, CTA_TIMEOUT, htonl(e.timeout));
  mnl_attr_put_u32(nlh, CTA_MARK, htonl(e.conn.mark));
  mnl_attr_put_u32(nlh, CTA_ID, htonl(e.id));
  mnl_attr_put_u16(nlh, CTA_ZONE, htons(e.conn.zone));
  if (e.orig_counters) put_counters(nlh, CTA_COUNTERS_ORIG, *e.orig_counters);
  if (e.reply_counters) put_counters(nlh, CTA_COUNTERS_REPLY, *e.reply_counters);
  if (e.conn.proto == IPPROTO_TCP) {
    nlattr* pi = mnl_attr_nest_start(nlh, CTA_PROTOINFO);
    nlattr* tcp = mnl_attr_nest_start(nlh, CTA_PROTOINFO_TCP);
    mnl_attr_put_u8(nlh, CTA_PROTOINFO_TCP_STATE, e.tcp_state);
    mnl_attr_nest_end(nlh, tcp);
    mnl_attr_nest_end(nlh, pi);
  }
  buf.resize((nlh->nlmsg_len + 3) / 4);
  return buf;
}

bool same_counters(const std::optional<netlink::CtCounters>& a, const std::optional<netlink::CtCounters>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->packets == b->packets && a->bytes == b->bytes);
}

bool same_entry(const CtEntry& a, const CtEntry& b) {
  return same_conn(a.conn, b.conn) && a.conn.mark == b.conn.mark && a.status == b.status && a.timeout == b.timeout &&
         a.id == b.id && a.tcp_state == b.tcp_state && same_counters(a.orig_counters, b.orig_counters) &&
         same_counters(a.reply_counters, b.reply_counters);
}

void check_entry_value(const CtEntry& e) {
  const Conn& c = e.conn;
  FUZZ_CHECK(c.family == AF_INET || c.family == AF_INET6, "entry of family %d", c.family);
  if (c.family == AF_INET) {
    for (const Tuple* t : {&c.orig, &c.reply}) {
      FUZZ_CHECK(t->src.words[1] == 0 && t->src.words[2] == 0 && t->src.words[3] == 0 && t->dst.words[1] == 0 &&
                     t->dst.words[2] == 0 && t->dst.words[3] == 0,
                 "IPv4 entry with bytes after the first four");
    }
  }
  if (c.proto != IPPROTO_TCP) FUZZ_CHECK(e.tcp_state == 0, "TCP state %d on protocol %d", e.tcp_state, c.proto);
  (void)netlink::format_ct_status(e.status);
}

void check_message(const nlmsghdr* nlh, size_t rest) {
  CtEntry a, b;
  const Status sa = netlink::parse_ct_message(nlh, rest, &a);
  const Status sb = netlink::parse_ct_message(nlh, nlh->nlmsg_len, &b);
  FUZZ_CHECK(sa.ok() == sb.ok() && sa.err() == sb.err(), "the result depends on bytes after the message");
  if (!sa) {
    FUZZ_CHECK(sa.err() == EBADMSG || sa.err() == EINVAL || sa.err() == EAFNOSUPPORT, "errno %d: %s", sa.err(),
               sa.message().c_str());
    return;
  }
  FUZZ_CHECK(same_entry(a, b), "the entry depends on bytes after the message");
  check_entry_value(a);
  const std::vector<uint32_t> again = encode(a);
  CtEntry c;
  const Status sc = netlink::parse_ct_message(again.data(), again.size() * 4, &c);
  FUZZ_CHECK(sc.ok(), "the entry encoded again does not decode: %s", sc.message().c_str());
  FUZZ_CHECK(same_entry(a, c), "the entry encoded again decodes to another entry: %s", format_conn(c.conn).c_str());
}

// The kernel: the tests' FakeKernel, answering with the records as they
// are read (one stream across requests and resyncs).
class FakeCtKernel final : public testing::FakeKernel {
 public:
  explicit FakeCtKernel(std::deque<Record> q) : records_(std::move(q)) {
    on_send = [this](const testing::Bytes& d, FakeKernel& k) { check_request(d, k); };
    on_receive = [this](FakeKernel&) { next_answer(); };
  }

 private:
  // Checks a request the client sends and takes its sequence number; a
  // send error record next fails this send.
  void check_request(const testing::Bytes& d, FakeKernel& k) {
    FUZZ_CHECK(d.size() >= sizeof(nlmsghdr), "a request of %zu bytes", d.size());
    nlmsghdr h;
    std::memcpy(&h, d.data(), sizeof h);
    FUZZ_CHECK(h.nlmsg_len == d.size(), "nlmsg_len %u for %zu bytes sent", h.nlmsg_len, d.size());
    FUZZ_CHECK((h.nlmsg_flags & NLM_F_REQUEST) != 0, "a request without NLM_F_REQUEST");
    FUZZ_CHECK((h.nlmsg_type >> 8) == NFNL_SUBSYS_CTNETLINK, "request type %#x", h.nlmsg_type);
    seq_ = h.nlmsg_seq;
    if (!records_.empty() && records_.front().kind == Record::kSendError) {
      static constexpr int kErr[] = {EPERM, ENOBUFS, EMSGSIZE, ECONNREFUSED};
      k.fail_next_send = kErr[records_.front().code % 4];
      records_.pop_front();
    }
  }

  // Queues the next record, unless a send error is next (then the kernel
  // says nothing until the send that takes it).
  void next_answer() {
    if (!queue.empty() || records_.empty() || records_.front().kind == Record::kSendError) return;
    Record r = std::move(records_.front());
    records_.pop_front();
    if (r.kind == Record::kReceiveError) {
      static constexpr int kErr[] = {ENOBUFS, ETIMEDOUT, EMSGSIZE, EIO};
      push_error(kErr[r.code % 4]);
      return;
    }
    size_t off = 0;
    while (off + sizeof(nlmsghdr) <= r.bytes.size()) {
      nlmsghdr h;
      std::memcpy(&h, r.bytes.data() + off, sizeof h);
      h.nlmsg_seq += seq_;
      std::memcpy(r.bytes.data() + off, &h, sizeof h);
      if (h.nlmsg_len < sizeof h) break;
      off += align4(h.nlmsg_len);
    }
    push(std::move(r.bytes));
  }

  std::deque<Record> records_;
  uint32_t seq_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 256 * 1024) return -1;
  const uint8_t mode = data[0];
  std::vector<Record> records = split_records({data + 1, size - 1});
  std::deque<Record> queue;
  for (Record& r : records) {
    if (r.kind == Record::kNextRequest) continue;  // One stream of answers here.
    if (r.kind == Record::kDatagram) {
      fuzz::for_each_message(r.bytes, [](const nlmsghdr* nlh, size_t rest) { check_message(nlh, rest); });
    }
    queue.push_back(std::move(r));
  }

  auto fake = std::make_unique<FakeCtKernel>(std::move(queue));
  netlink::Ctnetlink ct = netlink::Ctnetlink::with_transport(std::move(fake));
  switch (mode & 3) {
    case 1:
    case 2: {
      Conn key{};
      key.family = (mode & 4) ? AF_INET6 : AF_INET;
      key.proto = (mode & 8) ? IPPROTO_UDP : IPPROTO_TCP;
      key.orig.src.bytes[0] = 10;
      key.orig.src.bytes[3] = 1;
      key.orig.dst.bytes[0] = 10;
      key.orig.dst.bytes[3] = 2;
      key.orig.src_port = 40000;
      key.orig.dst_port = 80;
      if ((mode & 3) == 1) {
        auto e = ct.get(key);
        if (e) {
          check_entry_value(*e);
        } else {
          FUZZ_CHECK(e.err() > 0, "get failed with errno %d", e.err());
        }
      } else {
        const Status s = ct.remove(key);
        FUZZ_CHECK(s.ok() || s.err() > 0, "remove failed with errno %d", s.err());
      }
      break;
    }
    default: {
      netlink::CtFilter f;
      if ((mode & 3) == 3) {
        f.family = (mode & 4) ? AF_INET : ((mode & 8) ? AF_INET6 : 0);
        if (mode & 16) f.zone = static_cast<uint16_t>((mode >> 7) & 1);
        if (mode & 32) {
          f.mark = 0x10;
          f.mark_mask = 0xf0;
        }
        if (mode & 64) {
          f.status = netlink::ct_status::kOffload;
          f.status_mask = netlink::ct_status::kOffload | netlink::ct_status::kDying;
        }
      }
      size_t visited = 0, resyncs = 0;
      auto stats = ct.dump(
          f,
          [&](const CtEntry& e) {
            check_entry_value(e);
            FUZZ_CHECK(netlink::ct_filter_match(f, e), "a dump handed over an entry its filter refuses");
            ++visited;
          },
          [&] {
            ++resyncs;
            visited = 0;
          });
      if (stats) {
        FUZZ_CHECK(stats->entries == visited, "stats say %zu entries, %zu were visited", stats->entries, visited);
        FUZZ_CHECK(stats->entries <= stats->messages, "%zu entries of %zu messages", stats->entries, stats->messages);
        FUZZ_CHECK(stats->resyncs == resyncs && resyncs <= 8, "%zu resyncs, %zu on_resync calls", stats->resyncs,
                   resyncs);
      } else {
        FUZZ_CHECK(stats.err() > 0, "dump failed with errno %d", stats.err());
      }
      break;
    }
  }
  return 0;
}
