// fault_netns_test.cc - faults injected at the netlink seams while the
// nft_flowtable provider talks to the real kernel, each test in a fresh
// network namespace.
//
// The provider gets a FaultyNft: a netlink::Transport wrapping a real
// NftSocket that, when armed, injects one fault into the next send,
// receive or batch.  Faults are truthful: the provider is never told
// something the kernel did not do.
//   EINTR         a send or receive that returns EINTR without touching the
//                 socket (nothing sent, nothing read).
//   EAGAIN        the batch is not forwarded; every message of it gets the
//                 kernel's EAGAIN ack, as when the kernel aborts a batch to
//                 load a module.
//   ENOBUFS       the batch is forwarded, the kernel's real acks are read
//                 and dropped, and the next receive says ENOBUFS: the
//                 kernel committed (or aborted) and the provider cannot
//                 know which.
//   socket gone   the descriptor is closed, or replaced by /dev/null with
//                 dup2, right before a batch is sent or right after.
//   hooks         a command runs right before a batch goes out (`ip link
//                 del`: the kernel sees the device gone).
// Others come from the kernel itself: EPERM (CAP_NET_ADMIN dropped from
// the calling thread's effective set), a table deleted or a ruleset
// flushed between two operations, foreign elements.  FaultyCt does the
// same for the ctnetlink seam (a datagram of a conntrack dump lost).
//
// After every fault, agree() reads the kernel back with `nft -j` (not with
// the provider's own reader) and checks it against the provider's view:
// the elements of every selection set against size()/entries()/lookup(),
// one rule per set, and the flowtables' devices against devices().  Then a
// normal operation must work, and is checked the same way.
//
// Runs on any kernel: without flowtables (this machine's) the provider
// builds its test layout (NftFlowtableOptions::flowtables = false).  Tests
// of the FaultFlowtable group need flowtables and skip without them unless
// CTOFFLOAD_REQUIRE_FLOWTABLES=1.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <linux/capability.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "netlink/ctnetlink.h"
#include "netlink/nft_socket.h"
#include "netns_support.h"
#include "providers/nft_flowtable.h"
#include "support/fake_kernel.h"
#include "test_support.h"

namespace ctoffload {
namespace {

using ctoffload::testing::kernel_has_flowtables;
using ctoffload::testing::output_of;
using ctoffload::testing::require_flowtables;
using ctoffload::testing::run;
using testing::ctx_of;
using testing::tcp4;
using testing::udp6;

class NetnsEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ctoffload::testing::assert_fresh_netns());
    ASSERT_NO_FATAL_FAILURE(ctoffload::testing::assert_tools());
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new NetnsEnvironment);

// ---------------------------------------------------------------------------
// The fault-injecting nf_tables transport
// ---------------------------------------------------------------------------

enum class Fault {
  kNone,
  kEintrSend,          // next send: EINTR, nothing sent
  kEintrReceive,       // next receive: EINTR, nothing read
  kEagain,             // next batch: not sent, EAGAIN ack for each message
  kEnobufs,            // next batch: sent, real acks dropped, then ENOBUFS
  kCloseBeforeSend,    // next batch: descriptor closed, then the send
  kReplaceBeforeSend,  // next batch: descriptor replaced by /dev/null, then the send
  kReplaceAfterSend,   // next batch: sent, then the descriptor replaced
};

// What the test arms and what the transport saw; the provider owns the
// transport, the test keeps this.
struct FaultLog {
  Fault armed = Fault::kNone;
  // Batch faults and the hook hit only batches carrying set elements.
  bool element_batches_only = false;
  // Runs once, right before the next (matching) batch goes out.
  std::function<void()> before_batch;
  size_t injected = 0;        // faults that fired
  size_t forwarded = 0;       // batches the kernel received
  size_t dropped_acks = 0;    // real acks dropped (ENOBUFS)
  size_t dropped_errors = 0;  // of which errors: the kernel aborted that batch
  size_t reopens = 0;
  size_t gets = 0;     // requests that are not batches (reading back)
  int send_errno = 0;  // errno of the last failed send of the real socket
};

// The faults go through the tests' FaultyTransport (support/fake_kernel.h):
// EINTR, the EAGAIN acks queued in the kernel's place, ENOBUFS.
class FaultyNft final : public testing::FaultyTransport {
 public:
  FaultyNft(netlink::NftSocket real, FaultLog* log)
      : FaultyNft(std::make_unique<netlink::NftSocket>(std::move(real)), log) {}

  Status send(std::span<const iovec> iov) override {
    if (log_->armed == Fault::kEintrSend) {
      fire();
      eintr_send = true;
      return FaultyTransport::send(iov);
    }
    const testing::Bytes data = testing::flatten(iov);
    auto* first = reinterpret_cast<const nlmsghdr*>(data.data());
    const bool batch = data.size() >= sizeof(nlmsghdr) && first->nlmsg_type == NFNL_MSG_BATCH_BEGIN;
    if (!batch) {
      ++log_->gets;
      return FaultyTransport::send(iov);
    }
    if (log_->element_batches_only && !carries_elements(data)) return forward(iov);
    if (log_->before_batch) {
      auto hook = std::move(log_->before_batch);
      log_->before_batch = nullptr;
      hook();
    }
    const int fd = sock_->borrow_fd_do_not_close();
    switch (log_->armed) {
      case Fault::kEagain:
        fire();
        eagain_acks(data);
        return Status();
      case Fault::kCloseBeforeSend:
        fire();
        ::close(fd);
        return forward(iov);
      case Fault::kReplaceBeforeSend:
        fire();
        replace(fd);
        return forward(iov);
      case Fault::kReplaceAfterSend: {
        fire();
        Status s = forward(iov);
        replace(fd);
        return s;
      }
      case Fault::kEnobufs: {
        fire();
        Status s = forward(iov);
        if (!s) return s;
        // The kernel queued every ack before sendmsg returned: drop them all.
        std::vector<std::byte> buf(256 * 1024);
        for (;;) {
          auto got = sock_->receive(buf, 0);
          if (!got) break;
          count_dropped(buf.data(), *got);
        }
        overrun = true;
        return Status();
      }
      default:
        return forward(iov);
    }
  }

  Result<size_t> receive(std::span<std::byte> buf, int timeout_ms) override {
    if (log_->armed == Fault::kEintrReceive) {
      fire();
      eintr_receive = true;
    }
    return FaultyTransport::receive(buf, timeout_ms);
  }

  Status reopen() override {
    ++log_->reopens;
    return FaultyTransport::reopen();
  }

 private:
  FaultyNft(std::unique_ptr<netlink::NftSocket> real, FaultLog* log)
      : FaultyTransport(*real), sock_(std::move(real)), log_(log) {}

  void fire() {
    log_->armed = Fault::kNone;
    ++log_->injected;
  }

  Status forward(std::span<const iovec> iov) {
    Status s = FaultyTransport::send(iov);
    if (s) {
      ++log_->forwarded;
    } else {
      log_->send_errno = s.err();
    }
    return s;
  }

  static void replace(int fd) {
    const int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    ASSERT_GE(null, 0);
    ASSERT_EQ(dup2(null, fd), fd);
    ::close(null);
  }

  static bool carries_elements(const testing::Bytes& data) {
    int len = static_cast<int>(data.size());
    for (auto* m = reinterpret_cast<const nlmsghdr*>(data.data()); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
      const int type = m->nlmsg_type & 0xff;
      if (m->nlmsg_type >> 8 == NFNL_SUBSYS_NFTABLES && (type == NFT_MSG_NEWSETELEM || type == NFT_MSG_DELSETELEM)) {
        return true;
      }
    }
    return false;
  }

  // The kernel's answer to a batch it aborted with EAGAIN: an error ack
  // (capped: NETLINK_CAP_ACK is on) for each message that asked for one.
  void eagain_acks(const testing::Bytes& data) {
    int len = static_cast<int>(data.size());
    for (auto* m = reinterpret_cast<const nlmsghdr*>(data.data()); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
      if (m->nlmsg_type == NFNL_MSG_BATCH_BEGIN || m->nlmsg_type == NFNL_MSG_BATCH_END) continue;
      if ((m->nlmsg_flags & NLM_F_ACK) == 0) continue;
      testing::Bytes ack(NLMSG_SPACE(sizeof(nlmsgerr)), 0);
      auto* nlh = reinterpret_cast<nlmsghdr*>(ack.data());
      nlh->nlmsg_len = static_cast<uint32_t>(ack.size());
      nlh->nlmsg_type = NLMSG_ERROR;
      nlh->nlmsg_flags = NLM_F_CAPPED;
      nlh->nlmsg_seq = m->nlmsg_seq;
      nlh->nlmsg_pid = portid();
      auto* err = static_cast<nlmsgerr*>(NLMSG_DATA(nlh));
      err->error = -EAGAIN;
      err->msg = *m;
      push(std::move(ack));
    }
  }

  void count_dropped(const std::byte* buf, size_t n) {
    int len = static_cast<int>(n);
    for (auto* m = reinterpret_cast<const nlmsghdr*>(buf); mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
      if (m->nlmsg_type != NLMSG_ERROR) continue;
      ++log_->dropped_acks;
      if (static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(m))->error != 0) ++log_->dropped_errors;
    }
  }

  std::unique_ptr<netlink::NftSocket> sock_;
  FaultLog* log_;
};

// ---------------------------------------------------------------------------
// The fault-injecting ctnetlink transport
// ---------------------------------------------------------------------------

struct CtFaultLog {
  // Lose the datagram after this many datagrams of the next dump (-1: off).
  int enobufs_after = -1;
  // The socket fails for good (EBADF until reopen()): before the next send
  // (the request never leaves), or right after it (the kernel acts on it,
  // the answer stays on the dead socket).
  bool gone_before_send = false;
  bool gone_after_send = false;
  size_t injected = 0;
  size_t resets = 0;
  size_t datagrams = 0;  // datagrams received in the dump the fault hit
};

class FaultyCt final : public testing::FaultyTransport {
 public:
  FaultyCt(std::unique_ptr<netlink::Transport> real, CtFaultLog* log)
      : FaultyTransport(*real), real_(std::move(real)), log_(log) {}

  Status send(std::span<const iovec> iov) override {
    if (std::exchange(log_->gone_before_send, false)) gone = EBADF;
    if (gone == 0) {
      const auto* nlh = static_cast<const nlmsghdr*>(iov[0].iov_base);
      in_dump_ = (nlh->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP && log_->enobufs_after >= 0;
      seen_ = 0;
      if (std::exchange(log_->gone_after_send, false)) gone_after_send = EBADF;
    }
    return FaultyTransport::send(iov);
  }

  Result<size_t> receive(std::span<std::byte> buf, int timeout_ms) override {
    if (gone == 0 && in_dump_ && seen_ == log_->enobufs_after) {
      // Really lose a datagram: read it and drop it.
      in_dump_ = false;
      log_->enobufs_after = -1;
      auto lost = FaultyTransport::receive(buf, timeout_ms);
      if (lost) {
        ++log_->injected;
        return Status::error(ENOBUFS, "receive netlink reply: No buffer space available (injected)");
      }
      return lost;
    }
    auto got = FaultyTransport::receive(buf, timeout_ms);
    if (got && in_dump_) log_->datagrams = ++seen_;
    return got;
  }

  Status reopen() override {
    ++log_->resets;
    in_dump_ = false;
    return FaultyTransport::reopen();  // The real socket, with whatever it had queued, is replaced too.
  }

 private:
  std::unique_ptr<netlink::Transport> real_;
  CtFaultLog* log_;
  bool in_dump_ = false;
  int seen_ = 0;
};

// ---------------------------------------------------------------------------
// Reading the kernel back
// ---------------------------------------------------------------------------

// Table inet ctoffload as `nft -j` lists it.
struct KernelTable {
  bool exists = false;
  // Set name -> elements, each "src dst proto sport dport" (proto numeric).
  std::map<std::string, std::multiset<std::string>> sets;
  std::map<std::string, int> rules;                         // rule comment -> how many rules carry it
  std::map<std::string, std::set<std::string>> flowtables;  // name -> devices
};

std::string proto_number(const std::string& p) {
  if (p == "tcp") return "6";
  if (p == "udp") return "17";
  return p;
}

KernelTable kernel_table() {
  KernelTable k;
  const std::string j = output_of("nft -j -p list table inet ctoffload 2>/dev/null");
  // The top-level objects, in order; each runs to the next.
  static const std::regex kObject(R"re(\{"(table|set|flowtable|chain|rule)": \{)re");
  std::vector<std::pair<size_t, std::string>> starts;
  for (auto it = std::sregex_iterator(j.begin(), j.end(), kObject); it != std::sregex_iterator(); ++it) {
    starts.emplace_back(static_cast<size_t>(it->position(0)), (*it)[1].str());
  }
  static const std::regex kName(R"re("name": "([^"]*)")re");
  static const std::regex kConcat(R"re(\{"concat": \[([^\]]*)\]\})re");
  static const std::regex kComment(R"re("comment": "([^"]*)")re");
  static const std::regex kDevList(R"re("dev": \[([^\]]*)\])re");
  static const std::regex kDevOne(R"re("dev": "([^"]*)")re");
  static const std::regex kQuoted(R"re("([^"]*)")re");
  for (size_t i = 0; i < starts.size(); ++i) {
    const size_t end = i + 1 < starts.size() ? starts[i + 1].first : j.size();
    const std::string obj = j.substr(starts[i].first, end - starts[i].first);
    const std::string& kind = starts[i].second;
    std::smatch m;
    if (kind == "table") {
      k.exists = true;
    } else if (kind == "set" && std::regex_search(obj, m, kName)) {
      auto& elems = k.sets[m[1]];
      for (auto it = std::sregex_iterator(obj.begin(), obj.end(), kConcat); it != std::sregex_iterator(); ++it) {
        std::string fields = (*it)[1];
        std::vector<std::string> parts;
        std::stringstream ss(fields);
        std::string f;
        while (std::getline(ss, f, ',')) {
          f.erase(0, f.find_first_not_of(" \""));
          f.erase(f.find_last_not_of(" \"") + 1);
          parts.push_back(f);
        }
        if (parts.size() == 5) parts[2] = proto_number(parts[2]);
        std::string e;
        for (const auto& p : parts) e += (e.empty() ? "" : " ") + p;
        elems.insert(e);
      }
    } else if (kind == "rule") {
      k.rules[std::regex_search(obj, m, kComment) ? m[1].str() : std::string("(no comment)")]++;
    } else if (kind == "flowtable" && std::regex_search(obj, m, kName)) {
      auto& devs = k.flowtables[m[1]];
      std::smatch d;
      if (std::regex_search(obj, d, kDevList)) {
        const std::string list = d[1];
        for (auto it = std::sregex_iterator(list.begin(), list.end(), kQuoted); it != std::sregex_iterator(); ++it) {
          devs.insert((*it)[1]);
        }
      } else if (std::regex_search(obj, d, kDevOne)) {
        devs.insert(d[1]);
      }
    }
  }
  return k;
}

// The element of 'c' as kernel_table() writes it.
std::string elem_text(const Conn& c) {
  return format_address(c.family, c.orig.src) + " " + format_address(c.family, c.orig.dst) + " " +
         std::to_string(c.proto) + " " + std::to_string(c.orig.src_port) + " " + std::to_string(c.orig.dst_port);
}

// The selection set a held connection is in, by docs/LAYOUT.md's naming.
std::string set_text(const NftConnInfo& e) {
  std::string n = e.conn.family == AF_INET6 ? "sel6" : "sel4";
  if (e.conn.zone != 0) n += "_z" + std::to_string(e.conn.zone);
  if (e.flowtable == FtMode::kHw) n += "_hw";
  return n;
}

template <typename C>
std::string join(const C& items) {
  std::string out;
  for (const auto& i : items) out += (out.empty() ? "" : ", ") + i;
  return "{" + out + "}";
}

// Elements the test planted itself: (set name, element).
using Foreign = std::vector<std::pair<std::string, std::string>>;

// The provider's view and the kernel's agree.  'foreign' are elements the
// test planted itself (set name -> element): the kernel has them, the
// provider must not hold them.
::testing::AssertionResult agree(NftFlowtableProvider& p, const Foreign& foreign = {}) {
  const KernelTable k = kernel_table();
  std::ostringstream bad;
  if (!k.exists) bad << "\n  the kernel has no table inet ctoffload";

  std::map<std::string, std::multiset<std::string>> want;
  const std::vector<NftConnInfo> held = p.entries();
  if (held.size() != p.size()) bad << "\n  entries() lists " << held.size() << " but size() says " << p.size();
  for (const auto& e : held) {
    want[set_text(e)].insert(elem_text(e.conn));
    if (!p.lookup(e.conn)) bad << "\n  entries() lists " << format_conn(e.conn) << " but lookup() finds nothing";
  }
  for (const auto& [set, elem] : foreign) want[set].insert(elem);
  for (const auto& [set, elems] : want) {
    auto it = k.sets.find(set);
    if (it == k.sets.end()) {
      bad << "\n  set " << set << " is missing from the kernel (the provider holds " << join(elems) << ")";
    } else if (it->second != elems) {
      bad << "\n  set " << set << ": kernel " << join(it->second) << ", provider " << join(elems);
    }
  }
  for (const auto& [set, elems] : k.sets) {
    if (!want.count(set) && !elems.empty()) bad << "\n  set " << set << ": kernel " << join(elems) << ", provider {}";
    // Each set has exactly one rule per direction, "SET original" and
    // "SET reply".
    for (const char* dir : {" original", " reply"}) {
      auto r = k.rules.find(set + dir);
      if (r == k.rules.end() || r->second != 1) {
        bad << "\n  set " << set << " has " << (r == k.rules.end() ? 0 : r->second) << " '" << set << dir
            << "' rules, not 1";
      }
    }
  }
  for (const auto& [comment, n] : k.rules) {
    if (!k.sets.count(comment.substr(0, comment.find(' ')))) bad << "\n  rule '" << comment << "' names no set";
  }

  std::map<std::string, std::set<std::string>> devs;
  for (const auto& d : p.devices()) {
    if (d.mode == FtMode::kSw) devs["ft_sw"].insert(d.name);
    if (d.mode == FtMode::kHw) devs["ft_hw"].insert(d.name);
  }
  if (p.options().flowtables) {
    for (const char* ft : {"ft_sw", "ft_hw"}) {
      auto it = k.flowtables.find(ft);
      const std::set<std::string> have = it == k.flowtables.end() ? std::set<std::string>{} : it->second;
      if (have != devs[ft])
        bad << "\n  flowtable " << ft << ": kernel " << join(have) << ", provider " << join(devs[ft]);
    }
    if (!k.flowtables.count("ft_sw")) bad << "\n  the kernel has no flowtable ft_sw";
  } else if (!k.flowtables.empty()) {
    bad << "\n  the kernel has flowtables, the provider was built without";
  }
  const std::string why = bad.str();
  if (why.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "provider and kernel disagree:" << why << "\n`nft list ruleset`:\n"
                                       << output_of("nft list ruleset 2>&1");
}

// CAP_NET_ADMIN out of (or back into) the calling thread's effective set.
bool set_net_admin(bool on) { return ctoffload::testing::set_effective_capability(CAP_NET_ADMIN, on); }

// ---------------------------------------------------------------------------

Netdev dev(const char* name) { return *make_netdev(name); }

Conn conn(int i) { return tcp4("10.1.0.2", static_cast<uint16_t>(40000 + i), "10.2.0.2", 80); }

class FaultNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    outer_ = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(outer_, 0);
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET): " << std::strerror(errno);
    // Devices of our own: a0 carries the connections, b0 and c0 are for
    // the tests that remove one.
    ASSERT_EQ(run("ip link set lo up && ip link add a0 type veth peer name a1 && ip link add b0 type veth peer name b1 "
                  "&& ip link add c0 type veth peer name c1 && for d in a0 a1 b0 b1 c0 c1; do ip link set $d up; done"),
              0);
  }
  void TearDown() override {
    (void)set_net_admin(true);
    provider_.reset();
    if (outer_ >= 0) {
      EXPECT_EQ(setns(outer_, CLONE_NEWNET), 0);
      ::close(outer_);
    }
  }

  // A provider on a FaultyNft (and a FaultyCt when 'ct' is set), initialised
  // before anything is armed.  The table is checked only when an operation
  // meets a sign of trouble, never on a timer: what a fault does must show.
  NftFlowtableProvider* provider(bool flowtables = true, CtFaultLog* ct = nullptr) {
    NftFlowtableOptions o;
    o.flowtables = flowtables && kernel_has_flowtables();
    o.refresh_ms = 0;
    o.verify_ms = 3'600'000;
    auto sock = netlink::NftSocket::open();
    EXPECT_TRUE(sock.ok()) << sock.message();
    if (!sock) return nullptr;
    NftBackend b;
    b.nft = std::make_unique<FaultyNft>(std::move(*sock), &log_);
    if (ct != nullptr) {
      auto t = netlink::open_netlink_transport(NETLINK_NETFILTER, netlink::NlSocketOptions{});
      EXPECT_TRUE(t.ok()) << t.message();
      if (!t) return nullptr;
      b.ct = std::make_unique<netlink::Ctnetlink>(
          netlink::Ctnetlink::with_transport(std::make_unique<FaultyCt>(std::move(*t), ct)));
    }
    auto p = NftFlowtableProvider::create(o, std::move(b));
    EXPECT_TRUE(p.ok()) << p.message();
    if (!p) return nullptr;
    const int err = (*p)->init();
    EXPECT_EQ(err, 0) << std::strerror(err);
    if (err != 0) return nullptr;
    provider_ = *p;
    return provider_.get();
  }

  // Submits one op per connection of 'type' on device 'on'; returns each
  // op's error.
  std::vector<int> submit(NftFlowtableProvider& p, ct_offload_op_type type, const std::vector<Conn>& conns,
                          const Netdev& on) {
    std::vector<Op> ops(conns.size());
    for (size_t i = 0; i < conns.size(); ++i) {
      ops[i].type = type;
      ops[i].ctx = ctx_of(conns[i], &on);
    }
    p.batch_submit(ops);
    std::vector<int> errs;
    for (const auto& op : ops) errs.push_back(op.error);
    return errs;
  }

  // After the fault: an add and a delete of a connection nobody used yet
  // work, and the kernel agrees after each.
  void expect_recovery(NftFlowtableProvider& p, const Foreign& foreign = {}) {
    const Conn fresh = udp6("fd00:1::2", 5353, "fd00:2::2", 53, 4);
    const size_t before = p.size();
    EXPECT_EQ(p.conn_add(ctx_of(fresh, &a0_)), 0) << "an add after the fault";
    EXPECT_EQ(p.size(), before + 1);
    EXPECT_TRUE(agree(p, foreign)) << "after an add that followed the fault";
    p.conn_del(ctx_of(fresh, &a0_));
    EXPECT_EQ(p.size(), before);
    EXPECT_TRUE(agree(p, foreign)) << "after a delete that followed the fault";
  }

  int outer_ = -1;
  FaultLog log_;
  std::shared_ptr<NftFlowtableProvider> provider_;
  const Netdev a0_ = dev("a0");
};

const std::vector<int> kAllOk3 = {0, 0, 0};

// ---- EINTR and EAGAIN: nothing reached the kernel, so all of it is sent again.

TEST_F(FaultNetns, EintrOnSendIsRetried) {
  auto* p = provider();
  ASSERT_TRUE(p);
  log_.armed = Fault::kEintrSend;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, {conn(1), conn(2), conn(3)}, a0_), kAllOk3);
  EXPECT_EQ(log_.injected, 1u);
  EXPECT_EQ(p->size(), 3u);
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

TEST_F(FaultNetns, EintrOnReceiveIsRetried) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(conn(1), &a0_)), 0);
  const size_t gets = log_.gets;
  log_.armed = Fault::kEintrReceive;
  log_.element_batches_only = true;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, {conn(2), conn(3), conn(4)}, a0_), kAllOk3);
  EXPECT_EQ(log_.injected, 1u);
  // Retried, not taken for a lost ack: nothing needed reading back.
  EXPECT_EQ(log_.gets, gets);
  EXPECT_EQ(p->size(), 4u);
  EXPECT_TRUE(agree(*p));
  log_.armed = Fault::kEintrReceive;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_DEL, {conn(1), conn(2)}, a0_), (std::vector<int>{0, 0}));
  EXPECT_EQ(log_.injected, 2u);
  EXPECT_EQ(log_.gets, gets);
  EXPECT_EQ(p->size(), 2u);
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

TEST_F(FaultNetns, EagainFromTheKernelResendsTheBatchOnce) {
  auto* p = provider();
  ASSERT_TRUE(p);
  log_.armed = Fault::kEagain;
  log_.element_batches_only = true;
  const size_t before = log_.forwarded;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, {conn(1), conn(2), conn(3)}, a0_), kAllOk3);
  EXPECT_EQ(log_.injected, 1u);
  // The element batch reached the kernel once, after the EAGAIN (a device
  // batch comes first where there are flowtables).
  EXPECT_EQ(log_.forwarded - before, p->options().flowtables ? 2u : 1u);
  EXPECT_EQ(p->size(), 3u);
  EXPECT_TRUE(agree(*p));
  // One connection alone: its message has nothing to split, so only the
  // resend after EAGAIN gets it in.
  log_.armed = Fault::kEagain;
  EXPECT_EQ(p->conn_add(ctx_of(conn(4), &a0_)), 0);
  EXPECT_EQ(log_.injected, 2u);
  EXPECT_EQ(p->size(), 4u);
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

// ---- Lost acks: the kernel decided, the provider finds out what.

TEST_F(FaultNetns, LostAcksOfACommittedBatchAreSettledFromTheKernel) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(conn(9), &a0_)), 0);
  log_.armed = Fault::kEnobufs;
  log_.element_batches_only = true;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, {conn(1), conn(2), conn(3)}, a0_), kAllOk3);
  ASSERT_EQ(log_.injected, 1u);
  EXPECT_GE(log_.dropped_acks, 1u);
  EXPECT_EQ(log_.dropped_errors, 0u) << "the kernel committed that batch";
  EXPECT_EQ(p->size(), 4u);
  EXPECT_TRUE(agree(*p)) << "after lost acks of adds";
  EXPECT_EQ(p->conn_add(ctx_of(conn(2), &a0_)), EEXIST) << "held: a second add is a duplicate";

  // The same for deletes.
  log_.armed = Fault::kEnobufs;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_DEL, {conn(1), conn(3)}, a0_), (std::vector<int>{0, 0}));
  ASSERT_EQ(log_.injected, 2u);
  EXPECT_EQ(p->size(), 2u);
  EXPECT_TRUE(agree(*p)) << "after lost acks of deletes";

  // And for a flush: the table is replaced in one transaction.
  log_.element_batches_only = false;
  log_.armed = Fault::kEnobufs;
  p->flush();
  ASSERT_EQ(log_.injected, 3u);
  EXPECT_EQ(p->size(), 0u);
  EXPECT_TRUE(agree(*p)) << "after lost acks of a flush";
  expect_recovery(*p);
}

TEST_F(FaultNetns, LostAcksOfAnAbortedBatchAreSettledFromTheKernel) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(conn(9), &a0_)), 0);
  // Somebody else's element for connection 2: the kernel aborts the batch.
  ASSERT_EQ(run("nft add element inet ctoffload sel4 '{ 10.1.0.2 . 10.2.0.2 . tcp . 40002 . 80 }'"), 0);
  const Foreign foreign = {{"sel4", elem_text(conn(2))}};
  log_.armed = Fault::kEnobufs;
  log_.element_batches_only = true;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, {conn(1), conn(2), conn(3)}, a0_), (std::vector<int>{0, EEXIST, 0}));
  ASSERT_EQ(log_.injected, 1u);
  EXPECT_GE(log_.dropped_errors, 1u) << "the kernel aborted that batch";
  EXPECT_EQ(p->size(), 3u);
  EXPECT_FALSE(p->lookup(conn(2)));
  EXPECT_TRUE(agree(*p, foreign));
  expect_recovery(*p, foreign);
}

// ---- The socket goes away under the provider.

TEST_F(FaultNetns, SocketClosedBeforeASendIsReopenedAndTheBatchSent) {
  auto* p = provider();
  ASSERT_TRUE(p);
  log_.armed = Fault::kCloseBeforeSend;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, {conn(1), conn(2), conn(3)}, a0_), kAllOk3);
  ASSERT_EQ(log_.injected, 1u);
  EXPECT_EQ(log_.send_errno, EBADF);
  EXPECT_EQ(log_.reopens, 1u);
  EXPECT_EQ(p->size(), 3u);
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

TEST_F(FaultNetns, SocketReplacedBetweenOperationsIsReopened) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(conn(1), &a0_)), 0);
  // Between two operations: whatever the next one sends first meets it.
  log_.armed = Fault::kReplaceBeforeSend;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_DEL, {conn(1)}, a0_), std::vector<int>{0});
  ASSERT_EQ(log_.injected, 1u);
  EXPECT_EQ(log_.send_errno, ENOTSOCK);
  EXPECT_EQ(log_.reopens, 1u);
  EXPECT_EQ(p->size(), 0u);
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

TEST_F(FaultNetns, SocketReplacedAfterASendIsSettledFromTheKernel) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(conn(9), &a0_)), 0);
  log_.element_batches_only = true;
  log_.armed = Fault::kReplaceAfterSend;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, {conn(1), conn(2), conn(3)}, a0_), kAllOk3);
  ASSERT_EQ(log_.injected, 1u);
  EXPECT_EQ(log_.reopens, 1u);
  EXPECT_EQ(p->size(), 4u);
  EXPECT_TRUE(agree(*p)) << "after adds whose acks went with the socket";
  log_.armed = Fault::kReplaceAfterSend;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_DEL, {conn(9), conn(2)}, a0_), (std::vector<int>{0, 0}));
  ASSERT_EQ(log_.injected, 2u);
  EXPECT_EQ(log_.reopens, 2u);
  EXPECT_EQ(p->size(), 2u);
  EXPECT_TRUE(agree(*p)) << "after deletes whose acks went with the socket";
  expect_recovery(*p);
}

// ---- The kernel refuses: EPERM.

TEST_F(FaultNetns, EpermFromTheKernelChangesNothingAndSaysSo) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, {conn(1), conn(2)}, a0_), (std::vector<int>{0, 0}));
  ASSERT_TRUE(set_net_admin(false));
  const std::vector<int> add = submit(*p, CT_OFFLOAD_OP_ADD, {conn(3), conn(4)}, a0_);
  const std::vector<int> del = submit(*p, CT_OFFLOAD_OP_DEL, {conn(1)}, a0_);
  p->flush();
  ASSERT_TRUE(set_net_admin(true));
  EXPECT_EQ(add, (std::vector<int>{EPERM, EPERM}));
  EXPECT_EQ(del, std::vector<int>{EPERM}) << "the element is still there, and so is the connection";
  EXPECT_EQ(p->size(), 2u) << "neither the delete nor the flush happened";
  EXPECT_TRUE(p->lookup(conn(1)));
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

// ---- The table goes away between two operations.

TEST_F(FaultNetns, TableDeletedBetweenOperationsIsRestored) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, {conn(1), conn(2), conn(3)}, a0_), kAllOk3);
  ASSERT_EQ(run("nft delete table inet ctoffload"), 0);
  std::vector<Op> ops(2);
  const Conn c1 = conn(1), c4 = conn(4);
  ops[0].type = CT_OFFLOAD_OP_DEL;
  ops[0].ctx = ctx_of(c1, &a0_);
  ops[1].type = CT_OFFLOAD_OP_ADD;
  ops[1].ctx = ctx_of(c4, &a0_);
  p->batch_submit(ops);
  EXPECT_EQ(ops[0].error, 0);
  EXPECT_EQ(ops[1].error, 0);
  EXPECT_EQ(p->size(), 3u);
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

TEST_F(FaultNetns, RulesetFlushedBeforeADeleteIsRestored) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, {conn(1), conn(2), conn(3)}, a0_), kAllOk3);
  ASSERT_EQ(run("nft flush ruleset"), 0);
  // Only a delete follows: it meets ENOENT, which must not pass for "fine".
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_DEL, {conn(2)}, a0_), std::vector<int>{0});
  EXPECT_EQ(p->size(), 2u);
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

// ---- Some ops of a batch fail: each gets its own result, the rest land.

TEST_F(FaultNetns, SomeOpsOfABatchFailEachWithItsOwnResult) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(conn(7), &a0_)), 0);
  // Foreign elements for connections 2 and 5.
  ASSERT_EQ(run("nft add element inet ctoffload sel4 '{ 10.1.0.2 . 10.2.0.2 . tcp . 40002 . 80, "
                "10.1.0.2 . 10.2.0.2 . tcp . 40005 . 80 }'"),
            0);
  const Foreign foreign = {{"sel4", elem_text(conn(2))}, {"sel4", elem_text(conn(5))}};
  Conn invalid = conn(8);
  invalid.orig.src_port = 0;
  Conn icmp = conn(9);
  icmp.proto = IPPROTO_ICMP;
  const Netdev ghost = dev("nosuchdev0");
  const Conn c[] = {conn(1), conn(2), conn(3), conn(5), conn(6), conn(7)};
  std::vector<Op> ops(10);
  auto set = [&](size_t i, ct_offload_op_type type, const Conn* k, const Netdev* d) {
    ops[i].type = type;
    ops[i].ctx = ctx_of(k != nullptr ? *k : c[0], d);
    if (k == nullptr) ops[i].ctx.conn = nullptr;
  };
  // Ops 0-8 are one transaction, which the kernel aborts for op 1; op 9
  // repeats op 3's connection and starts the next.
  set(0, CT_OFFLOAD_OP_ADD, &c[0], &a0_);     // ok
  set(1, CT_OFFLOAD_OP_ADD, &c[1], &a0_);     // EEXIST from the kernel (foreign)
  set(2, CT_OFFLOAD_OP_ADD, &invalid, &a0_);  // EINVAL, never sent
  set(3, CT_OFFLOAD_OP_ADD, &c[2], &a0_);     // ok
  set(4, CT_OFFLOAD_OP_DEL, &c[5], &a0_);     // ok, although its transaction was aborted once
  set(5, CT_OFFLOAD_OP_ADD, &icmp, &a0_);     // EPROTONOSUPPORT
  set(6, CT_OFFLOAD_OP_ADD, &c[4], &ghost);   // ENODEV
  set(7, CT_OFFLOAD_OP_ADD, nullptr, &a0_);   // EINVAL: no connection
  set(8, CT_OFFLOAD_OP_DEL, &c[3], &a0_);     // 0: not ours, ignored (the foreign element stays)
  set(9, CT_OFFLOAD_OP_ADD, &c[2], &a0_);     // EEXIST: a duplicate of op 3
  p->batch_submit(ops);
  const std::vector<int> want = {0, EEXIST, EINVAL, 0, 0, EPROTONOSUPPORT, ENODEV, EINVAL, 0, EEXIST};
  for (size_t i = 0; i < ops.size(); ++i) {
    EXPECT_EQ(ops[i].error, want[i]) << "op " << i << ": " << std::strerror(ops[i].error);
  }
  EXPECT_EQ(p->size(), 2u);  // conn(1), conn(3)
  EXPECT_FALSE(p->lookup(conn(2)));
  EXPECT_TRUE(agree(*p, foreign)) << "a delete of what is not ours must not touch it";
  expect_recovery(*p, foreign);
}

// ---- A device goes away while a batch is on its way.

TEST_F(FaultNetns, DeviceRemovedRightBeforeABatchFailsOnlyItsConnection) {
  auto* p = provider();
  ASSERT_TRUE(p);
  const Netdev b0 = dev("b0"), c0 = dev("c0");
  log_.before_batch = [] { ASSERT_EQ(run("ip link del b0"), 0); };
  std::vector<Op> ops(2);
  const Conn c1 = conn(1), c2 = conn(2);
  ops[0].type = CT_OFFLOAD_OP_ADD;
  ops[0].ctx = ctx_of(c1, &b0);
  ops[1].type = CT_OFFLOAD_OP_ADD;
  ops[1].ctx = ctx_of(c2, &c0);
  p->batch_submit(ops);
  ASSERT_FALSE(log_.before_batch) << "the hook did not run";
  if (p->options().flowtables) {
    // The batch adding b0 and c0 to the flowtable: the kernel refuses b0
    // (ENOENT), c0 joins, and only b0's connection fails.
    EXPECT_EQ(ops[0].error, ENODEV);
    EXPECT_EQ(ops[1].error, 0);
    EXPECT_EQ(p->size(), 1u);
  } else {
    // Without flowtables nothing in the kernel names the device: both
    // elements land; the provider learns from the link event that b0 left.
    EXPECT_EQ(ops[0].error, 0);
    EXPECT_EQ(ops[1].error, 0);
    EXPECT_EQ(p->size(), 2u);
  }
  for (const auto& d : p->devices()) {
    if (d.name == "b0") {
      EXPECT_FALSE(d.present);
    }
  }
  EXPECT_TRUE(agree(*p));
  // A new connection on the vanished device is refused; once it is back,
  // it works again.
  EXPECT_EQ(p->conn_add(ctx_of(conn(3), &b0)), ENODEV);
  ASSERT_EQ(run("ip link add b0 type veth peer name b1 && ip link set b0 up && ip link set b1 up"), 0);
  EXPECT_EQ(p->conn_add(ctx_of(conn(4), &b0)), 0);
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

// ---- ENOBUFS in a conntrack dump: restarted, nothing lost.

TEST_F(FaultNetns, ConntrackDumpOverflowResyncsAndLosesNothing) {
  CtFaultLog ct;
  auto* p = provider(true, &ct);
  ASSERT_TRUE(p);
  // Real conntrack entries, enough for a dump of several datagrams.
  constexpr int kN = 120;
  char path[] = "/tmp/ctoffload-fault-ct-XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string lines;
  std::vector<Conn> conns;
  for (int i = 0; i < kN; ++i) {
    conns.push_back(conn(100 + i));
    lines += "-I -p tcp -s 10.1.0.2 -d 10.2.0.2 --sport " + std::to_string(40100 + i) +
             " --dport 80 --state ESTABLISHED -t 300 -u SEEN_REPLY\n";
  }
  ASSERT_EQ(write(fd, lines.data(), lines.size()), static_cast<ssize_t>(lines.size()));
  ::close(fd);
  const int rc = run(std::string("conntrack -R ") + path + " >/dev/null 2>&1");
  unlink(path);
  ASSERT_EQ(rc, 0) << "conntrack -R failed";
  ASSERT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, conns, a0_), std::vector<int>(kN, 0));

  ct.enobufs_after = 1;  // the second datagram of the next dump is lost
  const std::vector<NftConnInfo> seen = p->entries();
  ASSERT_EQ(ct.injected, 1u) << "the dump ended after " << ct.datagrams << " datagrams: too few to lose one";
  EXPECT_GE(ct.resets, 1u);
  ASSERT_EQ(seen.size(), static_cast<size_t>(kN));
  size_t in_ct = 0;
  for (const auto& e : seen) in_ct += e.in_conntrack ? 1 : 0;
  EXPECT_EQ(in_ct, static_cast<size_t>(kN)) << "every entry is seen after the resync";
  EXPECT_TRUE(agree(*p));

  // The client itself, over the same kind of transport: every entry once.
  CtFaultLog direct;
  auto t = netlink::open_netlink_transport(NETLINK_NETFILTER, netlink::NlSocketOptions{});
  ASSERT_TRUE(t.ok()) << t.message();
  auto client = netlink::Ctnetlink::with_transport(std::make_unique<FaultyCt>(std::move(*t), &direct));
  direct.enobufs_after = 1;
  std::multiset<uint16_t> ports;
  auto stats = client.dump(
      netlink::CtFilter{}, [&](const netlink::CtEntry& e) { ports.insert(e.conn.orig.src_port); },
      [&] { ports.clear(); });
  ASSERT_TRUE(stats.ok()) << stats.message();
  EXPECT_EQ(direct.injected, 1u);
  EXPECT_EQ(stats->resyncs, 1u);
  EXPECT_EQ(ports.size(), static_cast<size_t>(kN));
  for (int i = 0; i < kN; ++i) EXPECT_EQ(ports.count(static_cast<uint16_t>(40100 + i)), 1u) << 40100 + i;
  expect_recovery(*p);
}

// ---- The rtnetlink sockets replaced under us: reopened.

// Replaces every NETLINK_ROUTE socket this process has in the current
// network namespace with /dev/null (dup2 over the descriptor), as a buggy
// neighbour closing the wrong descriptors would; returns how many.  The
// sockets are found by inode: /proc/self/fd names "socket:[inode]", and
// /proc/self/net/netlink gives each netlink socket's protocol and inode.
int replace_rtnetlink_sockets() {
  std::set<unsigned long> route_inodes;
  std::istringstream table(output_of("cat /proc/self/net/netlink"));
  std::string line;
  std::getline(table, line);  // The header.
  while (std::getline(table, line)) {
    std::istringstream f(line);
    std::string sk, field;
    int proto = -1;
    f >> sk >> proto;
    std::vector<std::string> rest;
    while (f >> field) rest.push_back(field);
    if (proto == NETLINK_ROUTE && !rest.empty()) route_inodes.insert(std::stoul(rest.back()));
  }
  const int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd < 0) return -1;
  int replaced = 0;
  for (int fd = 0; fd < 1024; ++fd) {
    if (fd == null_fd) continue;
    char target[64] = {};
    const std::string path = "/proc/self/fd/" + std::to_string(fd);
    const ssize_t n = readlink(path.c_str(), target, sizeof target - 1);
    if (n <= 0) continue;
    unsigned long inode = 0;
    if (std::sscanf(target, "socket:[%lu]", &inode) != 1 || route_inodes.count(inode) == 0) continue;
    if (dup2(null_fd, fd) == fd) ++replaced;
  }
  ::close(null_fd);
  return replaced;
}

TEST_F(FaultNetns, RtnetlinkSocketsReplacedUnderUsAreReopened) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_EQ(p->conn_add(ctx_of(conn(1), &a0_)), 0);
  // The link client, the route client and the link monitor.
  ASSERT_GE(replace_rtnetlink_sockets(), 3);
  // A device not used yet (a name lookup) and a reply address not routed
  // yet (a route lookup) both need the replaced sockets.
  const Netdev c0 = dev("c0");
  const Conn c = tcp4("10.1.0.2", 41000, "10.9.0.7", 443);
  EXPECT_EQ(p->conn_add(ctx_of(c, &c0)), 0);
  EXPECT_TRUE(agree(*p));
  // A device that goes away now is an event on the replaced monitor: it is
  // lost, and the next operation that uses the device finds out anyway.
  ASSERT_EQ(run("ip link del c0"), 0);
  EXPECT_EQ(p->conn_add(ctx_of(conn(2), &c0)), ENODEV);
  for (const auto& d : p->devices()) {
    if (d.name == "c0") {
      EXPECT_FALSE(d.present);
    }
  }
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

// ---- The ctnetlink socket closed under us: reopened, the request repeated.

TEST_F(FaultNetns, ConntrackSocketClosedUnderUsIsReopened) {
  CtFaultLog ct;
  auto* p = provider(true, &ct);
  ASSERT_TRUE(p);
  std::vector<Conn> conns;
  for (int i = 0; i < 3; ++i) {
    conns.push_back(conn(300 + i));
    ASSERT_EQ(run("conntrack -I -p tcp -s 10.1.0.2 -d 10.2.0.2 --sport " + std::to_string(40300 + i) +
                  " --dport 80 --state ESTABLISHED -t 300 -u SEEN_REPLY >/dev/null 2>&1"),
              0);
  }
  ASSERT_EQ(submit(*p, CT_OFFLOAD_OP_ADD, conns, a0_), std::vector<int>(3, 0));
  const std::string in_ct = "conntrack -L -p tcp -s 10.1.0.2 --dport 80 2>/dev/null | grep -c 'sport=4030'";

  // Dead before the dump's request: the dump runs on a new socket.
  ct.gone_before_send = true;
  std::vector<NftConnInfo> seen = p->entries();
  EXPECT_EQ(ct.resets, 1u);
  ASSERT_EQ(seen.size(), 3u);
  for (const auto& e : seen) EXPECT_TRUE(e.in_conntrack) << format_conn(e.conn);
  EXPECT_TRUE(agree(*p));

  // Dead right after a delete's request: the kernel deleted the entry, the
  // answer was lost with the socket; asked again, the kernel says ENOENT.
  ct.gone_after_send = true;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_DEL, {conns[0]}, a0_), std::vector<int>{0});
  EXPECT_EQ(ct.resets, 2u);
  EXPECT_EQ(output_of(in_ct), "2\n") << "the deleted connection's entry is gone, the others stay";
  EXPECT_TRUE(agree(*p));

  // Dead before a delete's request: it goes out on a new socket.
  ct.gone_before_send = true;
  EXPECT_EQ(submit(*p, CT_OFFLOAD_OP_DEL, {conns[1]}, a0_), std::vector<int>{0});
  EXPECT_EQ(ct.resets, 3u);
  EXPECT_EQ(output_of(in_ct), "1\n");
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

// ---------------------------------------------------------------------------
// Kernels with flowtables (the VM): faults in the device ops
// ---------------------------------------------------------------------------

class FaultFlowtable : public FaultNetns {
 protected:
  void SetUp() override {
    if (!kernel_has_flowtables()) {
      if (require_flowtables()) FAIL() << "CTOFFLOAD_REQUIRE_FLOWTABLES=1 but this kernel has no flowtables";
      GTEST_SKIP() << "this kernel has no nftables flowtables; run in the VM (scripts/vm/run.sh) with "
                      "CTOFFLOAD_REQUIRE_FLOWTABLES=1";
    }
    FaultNetns::SetUp();
  }
};

TEST_F(FaultFlowtable, LostAcksOfADeviceBatchAreSettledFromTheKernel) {
  auto* p = provider();
  ASSERT_TRUE(p);
  ASSERT_TRUE(p->options().flowtables);
  log_.armed = Fault::kEnobufs;  // the first batch: b0 and c0 join ft_sw
  const Netdev b0 = dev("b0"), c0 = dev("c0");
  std::vector<Op> ops(2);
  const Conn c1 = conn(1), c2 = conn(2);
  ops[0].type = CT_OFFLOAD_OP_ADD;
  ops[0].ctx = ctx_of(c1, &b0);
  ops[1].type = CT_OFFLOAD_OP_ADD;
  ops[1].ctx = ctx_of(c2, &c0);
  p->batch_submit(ops);
  ASSERT_EQ(log_.injected, 1u);
  EXPECT_EQ(log_.dropped_errors, 0u);
  EXPECT_EQ(ops[0].error, 0);
  EXPECT_EQ(ops[1].error, 0);
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

TEST_F(FaultFlowtable, DeviceRemovedRightBeforeItsElementBatchLeavesTheFlowtableToTheKernel) {
  auto* p = provider();
  ASSERT_TRUE(p);
  const Netdev b0 = dev("b0");
  ASSERT_EQ(p->conn_add(ctx_of(conn(1), &b0)), 0);
  // b0 is in ft_sw now; it goes while the next element batch is on its way.
  log_.element_batches_only = true;
  log_.before_batch = [] { ASSERT_EQ(run("ip link del b0"), 0); };
  EXPECT_EQ(p->conn_add(ctx_of(conn(2), &a0_)), 0);
  ASSERT_FALSE(log_.before_batch);
  EXPECT_EQ(output_of("nft list flowtable inet ctoffload ft_sw").find("b0"), std::string::npos);
  EXPECT_TRUE(agree(*p));
  expect_recovery(*p);
}

}  // namespace
}  // namespace ctoffload
