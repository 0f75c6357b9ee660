// make_seeds.cc - writes the seed corpus of every fuzz target.
//
//   fuzz_make_seeds DIR     writes DIR/<target>/<seed>
//
// Netlink seeds are real messages built with libmnl (and, for nf_tables,
// answers to the batches a real NftTxn sends, in the input format of
// nft_txn_harness.h); text seeds are endpoint strings and batch lines,
// good and bad.  The committed tests/fuzz/corpus/ was made with this
// program; it is not run by the build or by scripts/fuzz.sh.
#include <arpa/inet.h>
#include <endian.h>
#include <libmnl/libmnl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "fuzz_support.h"
#include "nft_txn_harness.h"

namespace {

using namespace ctoffload;
using namespace ctoffload::fuzz;
namespace fs = std::filesystem;

using Bytes = std::vector<uint8_t>;

fs::path g_dir;

void write(const std::string& target, const std::string& name, const Bytes& bytes) {
  fs::create_directories(g_dir / target);
  std::ofstream f(g_dir / target / name, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_text(const std::string& target, const std::string& name, const std::string& text) {
  write(target, name, Bytes(text.begin(), text.end()));
}

// A netlink message under construction, in aligned storage.
class Msg {
 public:
  explicit Msg(uint16_t type, uint16_t flags = 0, uint32_t seq = 0, uint32_t pid = 0) : buf_(16384) {
    nlh_ = mnl_nlmsg_put_header(buf_.data());
    nlh_->nlmsg_type = type;
    nlh_->nlmsg_flags = flags;
    nlh_->nlmsg_seq = seq;
    nlh_->nlmsg_pid = pid;
  }
  nlmsghdr* nlh() { return nlh_; }
  template <typename T>
  T* extra() {
    return static_cast<T*>(mnl_nlmsg_put_extra_header(nlh_, sizeof(T)));
  }
  Bytes bytes() const {
    const auto* p = reinterpret_cast<const uint8_t*>(nlh_);
    return Bytes(p, p + nlh_->nlmsg_len);
  }

 private:
  std::vector<uint32_t> buf_;
  nlmsghdr* nlh_;
};

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) {
    out.insert(out.end(), p.begin(), p.end());
    while (out.size() % 4) out.push_back(0);
  }
  return out;
}

// An NLMSG_ERROR answering 'request' with 'err' (0 or negative).  Capped:
// only the request's header is echoed; otherwise all of it.  With 'msg'
// and/or 'offset', the extended-ack TLVs follow.
Bytes ack(const Bytes& request, int err, bool capped, const char* msg = nullptr, int64_t offset = -1, uint32_t seq = 0,
          uint32_t pid = kFakePortid) {
  // The echoed request carries 'seq' too, so that seeds do not depend on
  // the (time-based) sequence numbers of the run that made them.
  Bytes echoed = request;
  nlmsghdr req;
  std::memcpy(&req, echoed.data(), sizeof req);
  req.nlmsg_seq = seq;
  std::memcpy(echoed.data(), &req, sizeof req);
  uint16_t flags = capped ? NLM_F_CAPPED : 0;
  if (msg != nullptr || offset >= 0) flags |= NLM_F_ACK_TLVS;
  Msg m(NLMSG_ERROR, flags, seq, pid);
  auto* e = m.extra<int>();
  *e = err;
  if (capped) {
    std::memcpy(mnl_nlmsg_put_extra_header(m.nlh(), sizeof req), &req, sizeof req);
  } else {
    std::memcpy(mnl_nlmsg_put_extra_header(m.nlh(), echoed.size()), echoed.data(), echoed.size());
  }
  if (msg != nullptr) mnl_attr_put_strz(m.nlh(), NLMSGERR_ATTR_MSG, msg);
  if (offset >= 0) mnl_attr_put_u32(m.nlh(), NLMSGERR_ATTR_OFFS, static_cast<uint32_t>(offset));
  return m.bytes();
}

// ---- endpoint ----

void endpoint_seeds() {
  const char* const seeds[][2] = {
      {"v4", "10.0.0.1:80"},
      {"v4-max-port", "192.0.2.254:65535"},
      {"v6", "[fd00::1]:443"},
      {"v6-full", "[2001:db8:85a3:0:0:8a2e:370:7334]:40000"},
      {"v4-mapped", "[::ffff:192.0.2.1]:8080"},
      {"v6-no-brackets", "fd00::1:80"},
      {"no-port", "10.0.0.1"},
      {"port-too-big", "10.0.0.1:65536"},
      {"port-sign", "10.0.0.1:+80"},
      {"scope-id", "[fe80::1%eth0]:22"},
      {"v4-in-brackets", "[10.0.0.1]:80"},
      {"unclosed", "[fd00::1:80"},
      {"pair-v4", "10.0.0.1:40000 10.0.0.2:80"},
      {"pair-v6", "[fd00::1]:5000 [fd00::2]:53"},
      {"pair-mixed", "10.0.0.1:1 [fd00::2]:2"},
      {"pair-multicast", "10.0.0.1:1 224.0.0.1:2"},
      {"proto-tcp", "tcp"},
      {"proto-17", "17"},
      {"unspecified", "0.0.0.0:1"},
  };
  for (const auto& s : seeds) write_text("endpoint", s[0], s[1]);
}

// ---- batch files ----

const char* const kGoodLines =
    "# offload two flows, refresh one, drop one\n"
    "add --iif veth0 --proto tcp --src 10.0.0.1:40000 --dst 10.0.0.2:80\n"
    "add --iif=veth1 --proto=udp --src=[fd00::1]:5000 --dst=[fd00::2]:53 --zone=7\n"
    "update --proto tcp --src 10.0.0.1:40000 --dst 10.0.0.2:80\n"
    "del --proto udp --src [fd00::1]:5000 --dst [fd00::2]:53 --zone 7\n"
    "\n"
    "   flush   # and everything else\n";

const char* const kNatLine =
    "add --iif eth1 --proto tcp --src 192.168.1.10:5555 --dst 203.0.113.5:443 "
    "--reply-src 203.0.113.5:443 --reply-dst 198.51.100.1:61000\n";

const char* const kBadLines =
    "add --proto tcp --src 10.0.0.1:1 --dst 10.0.0.2:2\n"
    "add --iif veth0 --proto icmp --src 10.0.0.1:1 --dst 10.0.0.2:2\n"
    "add --iif veth0 --proto tcp --src fd00::1:80 --dst [fd00::2]:80\n"
    "del --proto tcp --src 10.0.0.1:0 --dst 10.0.0.2:80\n"
    "add --iif veth0 --proto tcp --src 10.0.0.1:1 --dst 10.0.0.2:2 --zone 70000\n"
    "add --iif veth0 --proto tcp --src 10.0.0.1:1 --dst [fd00::2]:2\n"
    "add --iif averyveryverylongname --proto tcp --src 10.0.0.1:1 --dst 10.0.0.2:2\n"
    "update --proto udp --src 10.0.0.1:1 --dst 10.0.0.2:2 --reply-src 10.0.0.2:2\n"
    "flush now\n"
    "frobnicate --all\n"
    "del --proto tcp --src 10.0.0.1:1 --dst\n";

void batch_seeds() {
  write_text("batch_line", "good", kGoodLines);
  write_text("batch_line", "nat", kNatLine);
  write_text("batch_line", "bad", kBadLines);
  write_text("batch_line", "crlf", "add --iif veth0 --proto tcp --src 10.0.0.1:1 --dst 10.0.0.2:2\r\nflush\r\n");
  write_text("batch_line", "tabs", "del\t--proto\ttcp\t--src\t10.0.0.1:1\t--dst\t10.0.0.2:2");

  // cli_batch runs the file with -j when its first byte is odd.
  write_text("cli_batch", "good", std::string("\n") + kGoodLines);            // '\n' even: text
  write_text("cli_batch", "good-json", std::string("#json\n") + kGoodLines);  // '#' odd: JSON
  write_text("cli_batch", "mixed", std::string("\n") + kGoodLines + kNatLine + kBadLines);
  write_text("cli_batch", "mixed-json", std::string("#json\n") + kBadLines + kNatLine);
  std::string dup = "\n";
  for (int i = 0; i < 3; ++i) dup += "add --iif veth0 --proto tcp --src 10.0.0.1:1 --dst 10.0.0.2:2\n";
  dup += "update --proto tcp --src 10.0.0.1:1 --dst 10.0.0.2:2\ndel --proto tcp --src 10.0.0.1:1 --dst 10.0.0.2:2\n";
  dup += "del --proto tcp --src 10.0.0.1:1 --dst 10.0.0.2:2\n";
  write_text("cli_batch", "duplicates", dup);
  write_text("cli_batch", "long-line", "\nflush\n" + std::string(5000, 'x') + "\nflush");
}

// ---- nl_ack ----

Bytes newsetelem_request(uint32_t seq) {
  Msg m((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, seq);
  auto* nfg = m.extra<nfgenmsg>();
  nfg->nfgen_family = NFPROTO_IPV4;
  mnl_attr_put_strz(m.nlh(), NFTA_SET_ELEM_LIST_TABLE, "ctoffload");
  mnl_attr_put_strz(m.nlh(), NFTA_SET_ELEM_LIST_SET, "sel4");
  nlattr* list = mnl_attr_nest_start(m.nlh(), NFTA_SET_ELEM_LIST_ELEMENTS);
  for (uint32_t k = 1; k <= 3; ++k) {
    nlattr* e = mnl_attr_nest_start(m.nlh(), NFTA_LIST_ELEM);
    nlattr* key = mnl_attr_nest_start(m.nlh(), NFTA_SET_ELEM_KEY);
    mnl_attr_put_u32(m.nlh(), NFTA_DATA_VALUE, htonl(k));
    mnl_attr_nest_end(m.nlh(), key);
    mnl_attr_nest_end(m.nlh(), e);
  }
  mnl_attr_nest_end(m.nlh(), list);
  return m.bytes();
}

void nl_ack_seeds() {
  const Bytes req = newsetelem_request(1000);
  write("nl_ack", "ack-capped", ack(req, 0, true, nullptr, -1, 1000));
  write("nl_ack", "eexist-extack", ack(req, -EEXIST, true, "Could not process rule: File exists\n", 68, 1000));
  write("nl_ack", "enoent-uncapped", ack(req, -ENOENT, false, "No such file or directory", 36, 1000));
  write("nl_ack", "eperm-plain", ack(req, -EPERM, false, nullptr, -1, 1000));
  write("nl_ack", "three-acks",
        cat({ack(req, 0, true, nullptr, -1, 999), ack(req, -EEXIST, true, "File exists", 68, 1000),
             ack(req, 0, true, nullptr, -1, 1001)}));
  Msg done(NLMSG_DONE, NLM_F_MULTI, 1000);
  *done.extra<int>() = 0;
  write("nl_ack", "done-then-ack", cat({done.bytes(), ack(req, -EBUSY, true, nullptr, -1, 1000)}));
  Bytes cut = ack(req, -EINVAL, true, "Invalid argument", -1, 1000);
  cut.resize(20);
  write("nl_ack", "truncated", cut);
}

// ---- nft_txn ----

// What the scripted kernel does with each batch.
enum class Script {
  kAllOk,             // acks every message with 0
  kElementOffset,     // fails the element message at its 2nd element (offset), then all ok
  kElementNoOffset,   // fails the element message without an offset, then key 3 alone fails
  kBatchError,        // an EPERM for BATCH_BEGIN
  kEnobufsWithError,  // one error ack, then ENOBUFS (others lost), then all ok
  kEnobufsUnknown,    // some acks, then ENOBUFS: outcome unknown
  kEagain,            // every message EAGAIN once, then all ok
  kTableEnoent,       // the table op fails with an uncapped ack and extack
  kSendFails,         // the first send fails with EPERM
  kForeignAcks,       // acks of other sequence numbers and a NOOP mixed in
};

Bytes scripted_seed(const uint8_t cfg_bytes[4], Script script) {
  const TxnConfig cfg = TxnConfig::from(cfg_bytes);
  FakeNftKernel k(cfg.max_acks);
  k.max_batch_bytes = cfg.max_batch_bytes;
  Bytes seed(cfg_bytes, cfg_bytes + 4);
  int batch_no = 0;
  auto queue = [&](const Bytes& datagram) {
    put_datagram(seed, datagram);
    k.records.push_back(Record{Record::kDatagram, datagram, 0});
  };
  auto queue_error = [&](uint32_t bit, uint8_t code) {
    put_error(seed, bit, code);
    const Record::Kind kind = bit == kNextRequestBits ? Record::kNextRequest
                              : bit == kSendErrorBit  ? Record::kSendError
                                                      : Record::kReceiveError;
    k.records.push_back(Record{kind, {}, code});
  };
  k.on_batch = [&](const SentBatch& b) {
    const int n = batch_no++;
    if (n > 0) queue_error(kNextRequestBits, 0);
    // Sequence numbers relative to BATCH_BEGIN (see nft_txn_harness.h).
    auto rel = [&](const SentMsg& m) { return m.seq - b.begin_seq; };
    auto ok_all = [&](size_t from = 0) {
      Bytes d;
      for (size_t i = from; i < b.msgs.size(); ++i)
        d = cat({d, ack(b.msgs[i].bytes, 0, true, nullptr, -1, rel(b.msgs[i]))});
      if (!d.empty()) queue(d);
    };
    auto first_of = [&](uint16_t type) -> const SentMsg* {
      for (const SentMsg& m : b.msgs) {
        if (m.type == type) return &m;
      }
      return nullptr;
    };
    switch (script) {
      case Script::kAllOk:
        ok_all();
        return;
      case Script::kElementOffset: {
        const SentMsg* m = first_of(NFT_MSG_NEWSETELEM);
        if (n > 0 || m == nullptr || m->keys.size() < 2) return ok_all();
        Bytes d;
        for (const SentMsg& x : b.msgs) {
          d = cat({d, &x == m ? ack(x.bytes, -EEXIST, true, "Could not process rule: File exists",
                                    x.elem_offsets[1] + 4, rel(x))
                              : ack(x.bytes, 0, true, nullptr, -1, rel(x))});
        }
        queue(d);
        return;
      }
      case Script::kElementNoOffset: {
        Bytes d;
        for (const SentMsg& x : b.msgs) {
          const bool elem = x.type == NFT_MSG_NEWSETELEM;
          const bool bad = elem && (n == 0 || (x.keys.size() == 1 && x.keys[0] == 3));
          d = cat({d, ack(x.bytes, bad ? -EEXIST : 0, true, bad ? "File exists" : nullptr, -1, rel(x))});
        }
        queue(d);
        return;
      }
      case Script::kBatchError: {
        if (n > 0) return ok_all();
        Bytes begin(16, 0);
        nlmsghdr h{16, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, b.begin_seq, 0};
        std::memcpy(begin.data(), &h, sizeof h);
        queue(ack(begin, -EPERM, true, "Operation not permitted", -1, 0));
        return;
      }
      case Script::kEnobufsWithError:
        if (n > 0) return ok_all();
        queue(ack(b.msgs[0].bytes, -ENOENT, true, "No such file or directory", -1, rel(b.msgs[0])));
        queue_error(kReceiveErrorBit, 1);  // ENOBUFS
        return;
      case Script::kEnobufsUnknown:
        queue(ack(b.msgs[0].bytes, 0, true, nullptr, -1, rel(b.msgs[0])));
        queue_error(kReceiveErrorBit, 1);  // ENOBUFS
        return;
      case Script::kEagain: {
        if (n > 0) return ok_all();
        Bytes d;
        for (const SentMsg& x : b.msgs) d = cat({d, ack(x.bytes, -EAGAIN, true, nullptr, -1, rel(x))});
        queue(d);
        return;
      }
      case Script::kTableEnoent: {
        const SentMsg* t = first_of(NFT_MSG_NEWTABLE);
        if (t == nullptr) return ok_all();
        Bytes d;
        for (const SentMsg& x : b.msgs) {
          d = cat({d, &x == t ? ack(x.bytes, -ENOENT, false, "Could not process rule: No such file or directory", 20,
                                    rel(x))
                              : ack(x.bytes, 0, true, nullptr, -1, rel(x))});
        }
        queue(d);
        return;
      }
      case Script::kSendFails:
        if (n == 0) return queue_error(kSendErrorBit, 0);  // EPERM
        return ok_all();
      case Script::kForeignAcks: {
        Msg noop(NLMSG_NOOP, 0, 0, kFakePortid);
        Bytes d = cat({noop.bytes(), ack(b.msgs[0].bytes, -EEXIST, true, nullptr, -1, 0x7fff0000u)});
        queue(d);
        ok_all();
        return;
      }
    }
  };
  netlink::NftTxn txn(k, txn_options(cfg));
  (void)add_ops(txn, cfg);
  (void)txn.commit();
  return seed;
}

void nft_txn_seeds() {
  // cfg: {elements, acks per batch | ops, batch byte limit, EAGAIN resends}
  const uint8_t basic[4] = {0x03, 0x07 | 8 | 16, 0, 2};  // 4 adds, table + set, 8 acks
  const uint8_t dels[4] = {0x35, 0x07 | 16, 0, 2};       // 6 adds, 3 dels, set
  const uint8_t small[4] = {0x0f, 0x01 | 32, 4, 0};      // 16 adds with user data, 2 acks, 264-byte batches
  const uint8_t table[4] = {0x02, 0x07 | 8, 0, 0};       // 3 adds, table
  write("nft_txn", "all-ok", scripted_seed(basic, Script::kAllOk));
  write("nft_txn", "all-ok-small-batches", scripted_seed(small, Script::kAllOk));
  write("nft_txn", "element-offset", scripted_seed(dels, Script::kElementOffset));
  write("nft_txn", "element-no-offset", scripted_seed(basic, Script::kElementNoOffset));
  write("nft_txn", "batch-eperm", scripted_seed(basic, Script::kBatchError));
  write("nft_txn", "enobufs-with-error", scripted_seed(dels, Script::kEnobufsWithError));
  write("nft_txn", "enobufs-unknown", scripted_seed(basic, Script::kEnobufsUnknown));
  write("nft_txn", "eagain", scripted_seed(basic, Script::kEagain));
  write("nft_txn", "table-enoent-uncapped", scripted_seed(table, Script::kTableEnoent));
  write("nft_txn", "send-eperm", scripted_seed(table, Script::kSendFails));
  write("nft_txn", "foreign-acks", scripted_seed(dels, Script::kForeignAcks));
}

// ---- ctnetlink ----

struct Tup {
  const char* src;
  const char* dst;
  uint16_t sport, dport;
};

void put_addr(nlmsghdr* nlh, uint8_t family, uint16_t type4, uint16_t type6, const char* text) {
  uint8_t a[16] = {};
  inet_pton(family, text, a);
  mnl_attr_put(nlh, family == AF_INET ? type4 : type6, family == AF_INET ? 4 : 16, a);
}

void put_tuple(nlmsghdr* nlh, uint16_t type, uint8_t family, uint8_t proto, const Tup& t, int tuple_zone = -1) {
  nlattr* tuple = mnl_attr_nest_start(nlh, type);
  nlattr* ip = mnl_attr_nest_start(nlh, CTA_TUPLE_IP);
  put_addr(nlh, family, CTA_IP_V4_SRC, CTA_IP_V6_SRC, t.src);
  put_addr(nlh, family, CTA_IP_V4_DST, CTA_IP_V6_DST, t.dst);
  mnl_attr_nest_end(nlh, ip);
  nlattr* p = mnl_attr_nest_start(nlh, CTA_TUPLE_PROTO);
  mnl_attr_put_u8(nlh, CTA_PROTO_NUM, proto);
  if (proto == IPPROTO_ICMP) {
    mnl_attr_put_u16(nlh, CTA_PROTO_ICMP_ID, htons(7));
    mnl_attr_put_u8(nlh, CTA_PROTO_ICMP_TYPE, 8);
    mnl_attr_put_u8(nlh, CTA_PROTO_ICMP_CODE, 0);
  } else {
    mnl_attr_put_u16(nlh, CTA_PROTO_SRC_PORT, htons(t.sport));
    mnl_attr_put_u16(nlh, CTA_PROTO_DST_PORT, htons(t.dport));
  }
  mnl_attr_nest_end(nlh, p);
  if (tuple_zone >= 0) mnl_attr_put_u16(nlh, CTA_TUPLE_ZONE, htons(static_cast<uint16_t>(tuple_zone)));
  mnl_attr_nest_end(nlh, tuple);
}

struct CtSpec {
  uint8_t family = AF_INET;
  uint8_t proto = IPPROTO_TCP;
  Tup orig, reply;
  uint32_t status = 0x4e;  // SEEN_REPLY|ASSURED|CONFIRMED|SEQ_ADJUST
  int zone = -1;           // CTA_ZONE
  int orig_zone = -1;      // CTA_TUPLE_ZONE in the original tuple
  bool counters = true;
  bool counters32 = false;
  uint32_t mark = 0;
};

Bytes ct_new(const CtSpec& s, uint32_t seq = 0, uint16_t flags = NLM_F_MULTI) {
  Msg m((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW, flags, seq);
  auto* nfg = m.extra<nfgenmsg>();
  nfg->nfgen_family = s.family;
  nfg->version = NFNETLINK_V0;
  put_tuple(m.nlh(), CTA_TUPLE_ORIG, s.family, s.proto, s.orig, s.orig_zone);
  put_tuple(m.nlh(), CTA_TUPLE_REPLY, s.family, s.proto, s.reply);
  if (s.zone >= 0) mnl_attr_put_u16(m.nlh(), CTA_ZONE, htons(static_cast<uint16_t>(s.zone)));
  if (s.counters) {
    for (uint16_t dir : {uint16_t{CTA_COUNTERS_ORIG}, uint16_t{CTA_COUNTERS_REPLY}}) {
      nlattr* c = mnl_attr_nest_start(m.nlh(), dir);
      if (s.counters32) {
        mnl_attr_put_u32(m.nlh(), CTA_COUNTERS32_PACKETS, htonl(12));
        mnl_attr_put_u32(m.nlh(), CTA_COUNTERS32_BYTES, htonl(3400));
      } else {
        mnl_attr_put_u64(m.nlh(), CTA_COUNTERS_PACKETS, htobe64(1234));
        mnl_attr_put_u64(m.nlh(), CTA_COUNTERS_BYTES, htobe64(567890));
      }
      mnl_attr_nest_end(m.nlh(), c);
    }
  }
  mnl_attr_put_u32(m.nlh(), CTA_STATUS, htonl(s.status));
  mnl_attr_put_u32(m.nlh(), CTA_TIMEOUT, htonl(431999));
  mnl_attr_put_u32(m.nlh(), CTA_MARK, htonl(s.mark));
  mnl_attr_put_u32(m.nlh(), CTA_USE, htonl(1));  // Not decoded.
  mnl_attr_put_u32(m.nlh(), CTA_ID, htonl(0x5eed));
  if (s.proto == IPPROTO_TCP) {
    nlattr* pi = mnl_attr_nest_start(m.nlh(), CTA_PROTOINFO);
    nlattr* tcp = mnl_attr_nest_start(m.nlh(), CTA_PROTOINFO_TCP);
    mnl_attr_put_u8(m.nlh(), CTA_PROTOINFO_TCP_STATE, 3);
    mnl_attr_put_u8(m.nlh(), CTA_PROTOINFO_TCP_WSCALE_ORIGINAL, 7);
    mnl_attr_nest_end(m.nlh(), tcp);
    mnl_attr_nest_end(m.nlh(), pi);
  }
  return m.bytes();
}

Bytes nl_done(uint32_t seq = 0, int err = 0) {
  Msg m(NLMSG_DONE, NLM_F_MULTI, seq);
  *m.extra<int>() = err;
  return m.bytes();
}

Bytes nl_error(int err, uint32_t seq = 0, const char* msg = nullptr) {
  Msg req((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_ACK, seq);
  return ack(req.bytes(), err, true, msg, -1, seq, 0);
}

Bytes with_records(uint8_t mode, std::initializer_list<Bytes> datagrams) {
  Bytes seed{mode};
  for (const Bytes& d : datagrams) put_datagram(seed, d);
  return seed;
}

void ctnetlink_seeds() {
  CtSpec tcp4;
  tcp4.orig = {"10.0.0.1", "10.0.0.2", 40000, 80};
  tcp4.reply = {"10.0.0.2", "10.0.0.1", 80, 40000};
  tcp4.status = 0x400e;  // SEEN_REPLY|ASSURED|CONFIRMED|OFFLOAD
  CtSpec udp6;
  udp6.family = AF_INET6;
  udp6.proto = IPPROTO_UDP;
  udp6.orig = {"fd00::1", "fd00::2", 5000, 53};
  udp6.reply = {"fd00::2", "fd00::1", 53, 5000};
  udp6.zone = 7;
  udp6.counters = false;
  CtSpec nat;
  nat.orig = {"192.168.1.10", "203.0.113.5", 5555, 443};
  nat.reply = {"203.0.113.5", "198.51.100.1", 443, 61000};
  nat.status = 0x19e;  // ... plus SRC_NAT|SRC_NAT_DONE|DST_NAT_DONE
  nat.orig_zone = 3;
  nat.counters32 = true;
  nat.mark = 0x10;
  CtSpec icmp;
  icmp.proto = IPPROTO_ICMP;
  icmp.orig = {"10.0.0.1", "10.0.0.2", 0, 0};
  icmp.reply = {"10.0.0.2", "10.0.0.1", 0, 0};

  write("ctnetlink", "dump",
        with_records(0, {cat({ct_new(tcp4), ct_new(udp6)}), cat({ct_new(nat), ct_new(icmp), nl_done()})}));
  write("ctnetlink", "dump-filtered", with_records(3 | 4 | 32, {cat({ct_new(tcp4), ct_new(nat), nl_done()})}));
  Bytes enobufs{0};
  put_datagram(enobufs, ct_new(tcp4));
  put_error(enobufs, kReceiveErrorBit, 0);  // ENOBUFS
  put_datagram(enobufs, cat({ct_new(tcp4), ct_new(udp6), nl_done()}));
  write("ctnetlink", "dump-enobufs-resync", enobufs);
  write("ctnetlink", "dump-filter-refused",
        with_records(3 | 16 | 128 | 64, {nl_error(-EINVAL, 0, "Invalid argument"), cat({ct_new(udp6), nl_done()})}));
  write("ctnetlink", "dump-error", with_records(0, {cat({ct_new(tcp4), nl_done(0, -EPERM)})}));
  write("ctnetlink", "get", with_records(1, {cat({ct_new(tcp4, 0, 0), nl_error(0)})}));
  write("ctnetlink", "get-enoent", with_records(1 | 4, {nl_error(-ENOENT, 0, "No such file or directory")}));
  write("ctnetlink", "remove", with_records(2, {nl_error(0)}));
  write("ctnetlink", "stale-reply",
        with_records(1, {cat({ct_new(udp6, 0xfffffff0u), nl_error(-ENOENT, 0xfffffff0u)}),
                         cat({ct_new(tcp4, 0, 0), nl_error(0)})}));
  Bytes cut = cat({ct_new(tcp4), ct_new(udp6)});
  cut.resize(cut.size() - 10);
  write("ctnetlink", "truncated", with_records(0, {cut, nl_done()}));
}

// ---- link ----

Bytes link_msg(uint16_t type, int ifindex, const char* name, uint32_t flags, uint8_t family = AF_UNSPEC) {
  Msg m(type, 0, 0);
  auto* ifi = m.extra<ifinfomsg>();
  ifi->ifi_family = family;
  ifi->ifi_type = 1;  // ARPHRD_ETHER
  ifi->ifi_index = ifindex;
  ifi->ifi_flags = flags;
  ifi->ifi_change = 0xffffffff;
  if (name != nullptr) mnl_attr_put_strz(m.nlh(), IFLA_IFNAME, name);
  mnl_attr_put_u32(m.nlh(), IFLA_MTU, 1500);
  mnl_attr_put_u8(m.nlh(), IFLA_OPERSTATE, 6);  // IF_OPER_UP
  const uint8_t mac[6] = {0x02, 0, 0, 0, 0, 0x01};
  mnl_attr_put(m.nlh(), IFLA_ADDRESS, sizeof mac, mac);
  nlattr* info = mnl_attr_nest_start(m.nlh(), IFLA_LINKINFO);
  mnl_attr_put_strz(m.nlh(), IFLA_INFO_KIND, "veth");
  mnl_attr_nest_end(m.nlh(), info);
  return m.bytes();
}

void link_seeds() {
  write("link", "newlink", link_msg(RTM_NEWLINK, 5, "veth0", IFF_UP | IFF_RUNNING | IFF_BROADCAST | IFF_MULTICAST));
  write("link", "dellink", link_msg(RTM_DELLINK, 5, "veth0", 0));
  write("link", "bridge-port", link_msg(RTM_NEWLINK, 7, "br-port0", IFF_UP, AF_BRIDGE));
  write("link", "no-name", link_msg(RTM_NEWLINK, 9, nullptr, IFF_UP));
  write("link", "longest-name", link_msg(RTM_NEWLINK, 12, "abcdefghijklmno", IFF_UP));
  write("link", "three",
        cat({link_msg(RTM_NEWLINK, 5, "veth0", IFF_UP), link_msg(RTM_NEWLINK, 6, "veth1", 0),
             link_msg(RTM_DELLINK, 5, "veth0", 0)}));
  // IFLA_IFNAME without its NUL, and an attribute cut short.
  Msg bad(RTM_NEWLINK);
  auto* ifi = bad.extra<ifinfomsg>();
  ifi->ifi_index = 3;
  mnl_attr_put(bad.nlh(), IFLA_IFNAME, 4, "eth0");
  write("link", "name-without-nul", bad.bytes());
  Bytes cut = link_msg(RTM_NEWLINK, 4, "eth1", IFF_UP);
  cut.resize(cut.size() - 3);
  {
    nlmsghdr h;
    std::memcpy(&h, cut.data(), sizeof h);
    h.nlmsg_len = static_cast<uint32_t>(cut.size());
    std::memcpy(cut.data(), &h, sizeof h);
  }
  write("link", "cut-attribute", cut);
  write("link", "zero-ifindex", link_msg(RTM_NEWLINK, 0, "lo", IFF_UP | IFF_LOOPBACK));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  g_dir = argv[1];
  endpoint_seeds();
  batch_seeds();
  nl_ack_seeds();
  nft_txn_seeds();
  ctnetlink_seeds();
  link_seeds();
  return 0;
}
