// request_test.cc - the request engine (request.h), and that every client
// on it reports what the kernel's last message says.
//
// The kernel is the tests' FakeKernel (support/fake_kernel.h): each request
// sent is handed to a function that queues the datagrams of its answer.
#include "netlink/request.h"

#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>
// after <netinet/in.h>, whose definitions <linux/in.h> then defers to
#include <linux/netfilter.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "netlink/ctnetlink.h"
#include "netlink/route.h"
#include "providers/nft_layout.h"
#include "support/fake_kernel.h"

namespace ctoffload::netlink {
namespace {

using ctoffload::testing::Bytes;
using ctoffload::testing::dump_interrupted;

// The kernel: each request sent goes to 'answer', which queues the
// datagrams of its answer.
class ScriptKernel final : public ctoffload::testing::FakeKernel {
 public:
  std::function<void(const nlmsghdr* req, ScriptKernel& k)> answer;

  ScriptKernel() {
    port = 4242;
    rcvbuf = size_t{1} << 20;
    on_request = [this](const Bytes& d, FakeKernel&) {
      if (answer) answer(reinterpret_cast<const nlmsghdr*>(d.data()), *this);
    };
  }
};

// One message: header, then 'payload'; 'pid' is the answer's port id.
Bytes message(uint16_t type, uint32_t seq, uint32_t pid, const void* payload, size_t len, uint16_t flags = 0) {
  Bytes b(MNL_NLMSG_HDRLEN + MNL_ALIGN(len) + 256, 0);
  nlmsghdr* nlh = mnl_nlmsg_put_header(b.data());
  nlh->nlmsg_type = type;
  nlh->nlmsg_seq = seq;
  nlh->nlmsg_pid = pid;
  nlh->nlmsg_flags = flags;
  if (len > 0) std::memcpy(mnl_nlmsg_put_extra_header(nlh, len), payload, len);
  b.resize(nlh->nlmsg_len);
  return b;
}

// NLMSG_DONE carrying -'err', with 'extack' as NLMSGERR_ATTR_MSG when set.
Bytes done(uint32_t seq, uint32_t pid, int err, const char* extack = nullptr) {
  Bytes b(512, 0);
  nlmsghdr* nlh = mnl_nlmsg_put_header(b.data());
  nlh->nlmsg_type = NLMSG_DONE;
  nlh->nlmsg_seq = seq;
  nlh->nlmsg_pid = pid;
  nlh->nlmsg_flags = NLM_F_MULTI | (extack != nullptr ? NLM_F_ACK_TLVS : 0);
  *static_cast<int*>(mnl_nlmsg_put_extra_header(nlh, sizeof(int))) = -err;
  if (extack != nullptr) mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, extack);
  b.resize(nlh->nlmsg_len);
  return b;
}

// NLMSG_ERROR answering 'req' with -'err' (0: an ack), capped.
Bytes ack(const nlmsghdr* req, uint32_t pid, int err, const char* extack = nullptr) {
  Bytes b(512, 0);
  nlmsghdr* nlh = mnl_nlmsg_put_header(b.data());
  nlh->nlmsg_type = NLMSG_ERROR;
  nlh->nlmsg_seq = req->nlmsg_seq;
  nlh->nlmsg_pid = pid;
  nlh->nlmsg_flags = NLM_F_CAPPED | (extack != nullptr ? NLM_F_ACK_TLVS : 0);
  auto* e = static_cast<nlmsgerr*>(mnl_nlmsg_put_extra_header(nlh, sizeof(nlmsgerr)));
  e->error = -err;
  e->msg = *req;
  if (extack != nullptr) mnl_attr_put_strz(nlh, NLMSGERR_ATTR_MSG, extack);
  b.resize(nlh->nlmsg_len);
  return b;
}

Bytes cat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const Bytes& p : parts) {
    out.insert(out.end(), p.begin(), p.end());
    out.resize(MNL_ALIGN(out.size()), 0);
  }
  return out;
}

// A request of 'type' with 'flags' and sequence number 'seq'.
struct Req {
  alignas(nlmsghdr) unsigned char buf[64] = {};
  nlmsghdr* nlh;
  Req(uint16_t type, uint16_t flags, uint32_t seq) : nlh(mnl_nlmsg_put_header(buf)) {
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = flags;
    nlh->nlmsg_seq = seq;
  }
};

struct Engine : ::testing::Test {
  ScriptKernel k;
  std::vector<std::byte> buf = std::vector<std::byte>(64 * 1024);
  std::vector<uint16_t> seen;  // Types handed to on_answer.
  RequestIo io() { return RequestIo{buf, 100, "test request"}; }
  OnAnswer collect() {
    return [this](const nlmsghdr* m) {
      seen.push_back(m->nlmsg_type);
      return Status();
    };
  }
};

const uint8_t kPayload[4] = {1, 2, 3, 4};

TEST_F(Engine, DoneCarryingAnErrnoIsReportedWithTheKernelsText) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    kk.push(cat({message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI),
                 done(r->nlmsg_seq, kk.port, EPERM, "dump refused")}));
  };
  Req r(99, NLM_F_DUMP, 7);
  Status s = request_run(k, r.nlh, io(), collect());
  EXPECT_EQ(s.err(), EPERM);
  EXPECT_NE(s.message().find("test request"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("dump refused"), std::string::npos) << s.message();
  EXPECT_EQ(seen, std::vector<uint16_t>{100});
}

TEST_F(Engine, DoneWithoutAnErrnoEndsTheDump) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    kk.push(message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI));
    kk.push(cat({message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI), done(r->nlmsg_seq, kk.port, 0)}));
  };
  Req r(99, NLM_F_DUMP, 7);
  EXPECT_TRUE(request_run(k, r.nlh, io(), collect()).ok());
  EXPECT_EQ(seen.size(), 2u);
  EXPECT_TRUE(k.queue.empty());
}

TEST_F(Engine, BareDoneEndsTheDumpWithoutError) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) { kk.push(message(NLMSG_DONE, r->nlmsg_seq, 0, nullptr, 0)); };
  Req r(99, NLM_F_DUMP, 7);
  EXPECT_TRUE(request_run(k, r.nlh, io(), collect()).ok());
}

TEST_F(Engine, DoneWithAnErrorCodeBeyondErrnoIsEbadmsg) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) { kk.push(done(r->nlmsg_seq, 0, 100000)); };
  Req r(99, NLM_F_DUMP, 7);
  EXPECT_EQ(request_run(k, r.nlh, io(), collect()).err(), EBADMSG);
}

TEST_F(Engine, AckEndsARequestThatIsNotADump) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    kk.push(cat({message(100, r->nlmsg_seq, kk.port, kPayload, 4), ack(r, kk.port, 0)}));
  };
  Req r(99, NLM_F_ACK, 7);
  EXPECT_TRUE(request_run(k, r.nlh, io(), collect()).ok());
  EXPECT_EQ(seen, std::vector<uint16_t>{100});
  EXPECT_EQ(r.nlh->nlmsg_flags & NLM_F_REQUEST, NLM_F_REQUEST);
}

TEST_F(Engine, KernelErrorCarriesErrnoAndExtack) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) { kk.push(ack(r, kk.port, ENOENT, "no such table")); };
  Req r(99, NLM_F_ACK, 7);
  Status s = request_run(k, r.nlh, io(), collect());
  EXPECT_EQ(s.err(), ENOENT);
  EXPECT_NE(s.message().find("no such table"), std::string::npos) << s.message();
}

TEST_F(Engine, AnAckInsideADumpDoesNotEndIt) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    kk.push(cat({ack(r, kk.port, 0), message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI),
                 done(r->nlmsg_seq, kk.port, 0)}));
  };
  Req r(99, NLM_F_DUMP | NLM_F_ACK, 7);
  EXPECT_TRUE(request_run(k, r.nlh, io(), collect()).ok());
  EXPECT_EQ(seen, std::vector<uint16_t>{100});
}

TEST_F(Engine, OtherRequestsAndOtherSocketsAreSkipped) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    kk.push(cat({done(r->nlmsg_seq - 1, kk.port, EPERM),  // an earlier request's
                 done(r->nlmsg_seq, kk.port + 1, EPERM),  // another socket's
                 message(NLMSG_NOOP, r->nlmsg_seq, kk.port, nullptr, 0),
                 message(100, r->nlmsg_seq, 0, kPayload, 4, NLM_F_MULTI),  // port id 0: the kernel's
                 done(r->nlmsg_seq, kk.port, 0)}));
  };
  Req r(99, NLM_F_DUMP, 7);
  EXPECT_TRUE(request_run(k, r.nlh, io(), collect()).ok());
  EXPECT_EQ(seen, std::vector<uint16_t>{100});
}

TEST_F(Engine, TheFirstCallbackErrorIsKeptAndTheAnswerReadToTheEnd) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    kk.push(message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI));
    kk.push(cat({message(101, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI), done(r->nlmsg_seq, kk.port, 0)}));
  };
  Req r(99, NLM_F_DUMP, 7);
  int calls = 0;
  bool delivered = false;
  Status s = request_run(
      k, r.nlh, io(),
      [&](const nlmsghdr*) {
        ++calls;
        return Status::error(EINVAL, "bad entry");
      },
      &delivered);
  EXPECT_EQ(s.err(), EINVAL);
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE(delivered);
  EXPECT_TRUE(k.queue.empty()) << "the rest of the answer is read";
}

TEST_F(Engine, ADatagramEndingInATruncatedMessageIsEbadmsg) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    Bytes d = message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI);
    Bytes cut = message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI);
    cut.resize(MNL_NLMSG_HDRLEN);  // Its header says 4 bytes more.
    kk.push(cat({d, cut}));
    kk.push(done(r->nlmsg_seq, kk.port, 0));
  };
  Req r(99, NLM_F_DUMP, 7);
  EXPECT_EQ(request_run(k, r.nlh, io(), collect()).err(), EBADMSG);
  EXPECT_EQ(seen, std::vector<uint16_t>{100});
}

TEST_F(Engine, TransportErrorsComeThroughWithTheirErrno) {
  Req r(99, NLM_F_ACK, 7);
  Status s = request_run(k, r.nlh, io(), collect());  // Nothing answers.
  EXPECT_EQ(s.err(), ETIMEDOUT);
  EXPECT_NE(s.message().find("test request"), std::string::npos) << s.message();
}

// ---- Every client on the engine reports the errno NLMSG_DONE carries. ----

// Answers every request with NLMSG_DONE carrying EPERM and a text.
std::unique_ptr<ScriptKernel> refusing_kernel(ScriptKernel** raw) {
  auto k = std::make_unique<ScriptKernel>();
  k->answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    kk.push(done(r->nlmsg_seq, kk.port, EPERM, "refused at the end"));
  };
  if (raw != nullptr) *raw = k.get();
  return k;
}

TEST(EveryUser, CtnetlinkDumpReportsTheErrnoOfNlmsgDone) {
  auto c = Ctnetlink::with_transport(refusing_kernel(nullptr));
  size_t visited = 0;
  auto r = c.dump(CtFilter{}, [&](const CtEntry&) { ++visited; });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err(), EPERM);
  EXPECT_NE(r.status().message().find("refused at the end"), std::string::npos) << r.status().message();
}

TEST(EveryUser, CtnetlinkGetReportsTheErrnoOfNlmsgDone) {
  auto c = Ctnetlink::with_transport(refusing_kernel(nullptr));
  Conn key{};
  key.family = AF_INET;
  key.proto = IPPROTO_TCP;
  auto r = c.get(key);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err(), EPERM);
}

TEST(EveryUser, NftLayoutReadsReportTheErrnoOfNlmsgDone) {
  ScriptKernel* k = nullptr;
  auto owner = refusing_kernel(&k);
  auto t = nft::read_table(*k, "ctoffload");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.err(), EPERM);
  EXPECT_NE(t.status().message().find("refused at the end"), std::string::npos) << t.status().message();
  nft::LayoutOptions opts;
  auto l = nft::read_layout(*k, opts);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.err(), EPERM);
  Status e = nft::read_elements(*k, opts, nft::SelKey{AF_INET, 0, FtMode::kSw}, [](nftnl_set_elem*) {});
  EXPECT_EQ(e.err(), EPERM);
}

TEST(EveryUser, RouteLookupReportsTheErrnoOfNlmsgDone) {
  auto c = RouteClient::with_transport(refusing_kernel(nullptr));
  Addr a{};
  a.bytes[0] = 10;
  a.bytes[3] = 1;
  auto r = c.oif(AF_INET, a);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.err(), EPERM);
  EXPECT_NE(r.status().message().find("refused at the end"), std::string::npos) << r.status().message();
}

// ---- A dump the kernel marks interrupted (NLM_F_DUMP_INTR) ----

TEST_F(Engine, AnInterruptedDumpIsReadToItsEndThenEintr) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    kk.push(message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI));
    kk.push(cat({dump_interrupted(message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI)),
                 done(r->nlmsg_seq, kk.port, 0)}));
  };
  Req r(99, NLM_F_DUMP, 7);
  Status s = request_run(k, r.nlh, io(), collect());
  EXPECT_EQ(s.err(), EINTR);
  EXPECT_NE(s.message().find("NLM_F_DUMP_INTR"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("test request"), std::string::npos) << s.message();
  EXPECT_EQ(seen.size(), 2u) << "every message is handed over";
  EXPECT_TRUE(k.queue.empty()) << "the rest of the answer is read";
}

TEST_F(Engine, ACallerMayTakeAnInterruptedDumpAsItIs) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    kk.push(cat({dump_interrupted(message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI)),
                 done(r->nlmsg_seq, kk.port, 0)}));
  };
  bool interrupted = false;
  RequestIo with = io();
  with.interrupted = &interrupted;
  Req r(99, NLM_F_DUMP, 7);
  EXPECT_TRUE(request_run(k, r.nlh, with, collect()).ok());
  EXPECT_TRUE(interrupted);

  // The flag says this dump's word, not an earlier one's.
  k.answer = [](const nlmsghdr* rq, ScriptKernel& kk) {
    kk.push(cat({message(100, rq->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI), done(rq->nlmsg_seq, kk.port, 0)}));
  };
  Req again(99, NLM_F_DUMP, 8);
  EXPECT_TRUE(request_run(k, again.nlh, with, collect()).ok());
  EXPECT_FALSE(interrupted);
}

TEST_F(Engine, AnErrorOfTheDumpWinsOverItsInterruption) {
  k.answer = [](const nlmsghdr* r, ScriptKernel& kk) {
    kk.push(cat({dump_interrupted(message(100, r->nlmsg_seq, kk.port, kPayload, 4, NLM_F_MULTI)),
                 done(r->nlmsg_seq, kk.port, ENOBUFS, "dump failed")}));
  };
  Req r(99, NLM_F_DUMP, 7);
  EXPECT_EQ(request_run(k, r.nlh, io(), collect()).err(), ENOBUFS);
}

// An nf_tables kernel holding table inet ctoffload and nothing in it, whose
// chain dumps are marked interrupted 'interrupted_reads' times first.
std::unique_ptr<ScriptKernel> empty_table_kernel(int interrupted_reads, int* chain_dumps) {
  auto k = std::make_unique<ScriptKernel>();
  k->answer = [interrupted_reads, chain_dumps](const nlmsghdr* r, ScriptKernel& kk) {
    const uint16_t type = r->nlmsg_type & 0xff;
    if (type == NFT_MSG_GETTABLE) {
      Bytes b(512, 0);
      nlmsghdr* nlh =
          nftnl_nlmsg_build_hdr(reinterpret_cast<char*>(b.data()), NFT_MSG_NEWTABLE, NFPROTO_INET, 0, r->nlmsg_seq);
      nlh->nlmsg_pid = kk.port;
      mnl_attr_put_strz(nlh, NFTA_TABLE_NAME, "ctoffload");
      b.resize(nlh->nlmsg_len);
      kk.push(cat({b, ack(r, kk.port, 0)}));
      return;
    }
    Bytes d = done(r->nlmsg_seq, kk.port, 0);
    if (type == NFT_MSG_GETCHAIN && (*chain_dumps)++ < interrupted_reads) d = dump_interrupted(std::move(d));
    kk.push(std::move(d));
  };
  return k;
}

TEST(EveryUser, NftLayoutIsReadAgainWhenADumpWasInterrupted) {
  int chain_dumps = 0;
  auto k = empty_table_kernel(2, &chain_dumps);
  nft::LayoutOptions opts;
  auto l = nft::read_layout(*k, opts);
  ASSERT_TRUE(l.ok()) << l.status().message();
  EXPECT_TRUE(l->table.exists);
  EXPECT_EQ(chain_dumps, 3) << "two interrupted reads, then one whole";
}

TEST(EveryUser, NftLayoutChangingUnderEveryReadIsEintrSayingSo) {
  int chain_dumps = 0;
  auto k = empty_table_kernel(1000, &chain_dumps);
  nft::LayoutOptions opts;
  auto l = nft::read_layout(*k, opts);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.err(), EINTR);
  EXPECT_NE(l.status().message().find("changed during each of 3 reads"), std::string::npos) << l.status().message();
  EXPECT_EQ(chain_dumps, 3);
}

TEST(EveryUser, SetElementsAndConntrackDumpsAreTakenAsTheKernelGaveThem) {
  auto k = std::make_unique<ScriptKernel>();
  k->answer = [](const nlmsghdr* r, ScriptKernel& kk) { kk.push(dump_interrupted(done(r->nlmsg_seq, kk.port, 0))); };
  nft::LayoutOptions opts;
  EXPECT_TRUE(nft::read_elements(*k, opts, nft::SelKey{AF_INET, 0, FtMode::kSw}, [](nftnl_set_elem*) {}).ok());
  auto c = Ctnetlink::with_transport(std::move(k));
  EXPECT_TRUE(c.dump(CtFilter{}, [](const CtEntry&) {}).ok());
}

}  // namespace
}  // namespace ctoffload::netlink
