// nft_flowtable_netns_test.cc - the nft_flowtable provider against the real
// kernel, each test in a fresh network namespace.
//
// Must run as root inside a network namespace of its own (`unshare -n`);
// it fails rather than skips without that, and never touches the host's
// ruleset.  Two groups:
//
//   NftHost.*       run on any kernel.  On a kernel without flowtables (this
//                   machine's) they check that probe and init say so and
//                   that the registry falls back, and they drive the whole
//                   layout minus the flowtables (NftFlowtableOptions::
//                   flowtables = false: the rules end in a counter instead
//                   of `flow add`), with real traffic through a
//                   client - router - server topology.
//   NftFlowtable.*  need a kernel with flowtables (the VM: scripts/vm/run.sh):
//                   real offload, [OFFLOAD] in conntrack, counters while
//                   offloaded, hardware refusal on veth.  On a kernel without
//                   flowtables they are skipped with a message, unless
//                   CTOFFLOAD_REQUIRE_FLOWTABLES=1, which makes them fail.
//
// Whether the kernel has flowtables is decided by an independent oracle:
// the `nft` tool creating one in a scratch namespace.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <libnftnl/set.h>
#include <libnftnl/udata.h>
#include <linux/capability.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "ctoffload/registry.h"
#include "netlink/ctnetlink.h"
#include "netlink/nft_socket.h"
#include "netlink/nft_txn.h"
#include "netns_support.h"
#include "providers/nft_flowtable.h"
#include "providers/nft_layout.h"
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

size_t count_of(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = hay.find(needle); pos != std::string::npos; pos = hay.find(needle, pos + 1)) ++n;
  return n;
}

class NetnsEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ctoffload::testing::assert_fresh_netns());
    ASSERT_NO_FATAL_FAILURE(ctoffload::testing::assert_tools());
  }
};
const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new NetnsEnvironment);

// The nf_tables ruleset generation: every committed transaction bumps it.
uint32_t ruleset_generation() {
  mnl_socket* nl = mnl_socket_open(NETLINK_NETFILTER);
  if (nl == nullptr) return 0;
  if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
    mnl_socket_close(nl);
    return 0;
  }
  alignas(nlmsghdr) char buf[8192];
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETGEN, AF_UNSPEC, 0, 1);
  uint32_t gen = 0;
  if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) > 0) {
    const ssize_t n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
    if (n > 0) {
      auto* m = reinterpret_cast<nlmsghdr*>(buf);
      if ((m->nlmsg_type & 0xff) == NFT_MSG_NEWGEN) {
        const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(m));
        for (auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(m, sizeof(nfgenmsg)));
             mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<const char*>(a))); a = mnl_attr_next(a)) {
          if (mnl_attr_get_type(a) == NFTA_GEN_ID) gen = ntohl(mnl_attr_get_u32(a));
        }
      }
    }
  }
  mnl_socket_close(nl);
  return gen;
}

Netdev dev(const char* name) { return *make_netdev(name); }

// Lets packets in flight (delayed ACKs come after 40 ms) arrive.
void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(500)); }

// A socket of 'type' created in network namespace 'ns' (setns on a thread
// of its own; the socket stays in that namespace whichever thread uses it).
int socket_in(int ns, int family, int type) {
  int fd = -1;
  std::thread t([&] {
    if (setns(ns, CLONE_NEWNET) == 0) fd = ::socket(family, type | SOCK_CLOEXEC, 0);
  });
  t.join();
  return fd;
}

// Each test gets a fresh namespace (the "router"), left when it ends.
class NftNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    outer_ = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(outer_, 0);
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET): " << std::strerror(errno);
    ASSERT_EQ(run("ip link set lo up"), 0);
    char dir[] = "/tmp/ctoffload-usage.XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    usage_dir_ = dir;
  }
  void TearDown() override {
    providers_.clear();
    if (!usage_dir_.empty()) (void)run("rm -rf " + usage_dir_);
    for (int fd : ns_fds_) ::close(fd);
    if (outer_ >= 0) {
      EXPECT_EQ(setns(outer_, CLONE_NEWNET), 0);
      ::close(outer_);
    }
  }

  // A provider in this namespace, initialised.  Without flowtables in the
  // kernel it builds the test layout.
  std::shared_ptr<NftFlowtableProvider> provider(NftFlowtableOptions o = {}) {
    o.flowtables = o.flowtables && kernel_has_flowtables();
    // The test's own usage store, not /run/ctoffload.
    if (o.usage_dir == NftFlowtableOptions{}.usage_dir) o.usage_dir = usage_dir_;
    o.refresh_ms = 0;
    o.verify_ms = 0;
    auto p = NftFlowtableProvider::create(o);
    EXPECT_TRUE(p.ok()) << p.message();
    if (!p) return nullptr;
    const int err = (*p)->init();
    EXPECT_EQ(err, 0) << std::strerror(err);
    if (err != 0) return nullptr;
    providers_.push_back(*p);
    return *p;
  }

  // A new network namespace; returns a descriptor for it.
  int new_namespace() {
    int fd = -1;
    std::thread t([&] {
      if (unshare(CLONE_NEWNET) == 0) fd = ::open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    });
    t.join();
    if (fd >= 0) ns_fds_.push_back(fd);
    return fd;
  }

  // "nsenter --net=<path of 'fd'> ".
  static std::string in_ns(int fd) {
    return "nsenter --net=/proc/" + std::to_string(getpid()) + "/fd/" + std::to_string(fd) + " ";
  }

  // client (c0: 10.1.0.2, fd00:1::2) - r-c [router] r-s - (s0: 10.2.0.2,
  // fd00:2::2) server.  Returns false (with a failure) when any step fails.
  bool make_topology() {
    client_ = new_namespace();
    server_ = new_namespace();
    if (client_ < 0 || server_ < 0) {
      ADD_FAILURE() << "cannot create namespaces";
      return false;
    }
    const std::string pid = std::to_string(getpid());
    const std::vector<std::string> cmds = {
        "ip link add r-c type veth peer name c0",
        "ip link add r-s type veth peer name s0",
        "ip link set c0 netns /proc/" + pid + "/fd/" + std::to_string(client_),
        "ip link set s0 netns /proc/" + pid + "/fd/" + std::to_string(server_),
        "ip addr add 10.1.0.1/24 dev r-c",
        "ip addr add 10.2.0.1/24 dev r-s",
        "ip addr add fd00:1::1/64 dev r-c nodad",
        "ip addr add fd00:2::1/64 dev r-s nodad",
        "ip link set r-c up",
        "ip link set r-s up",
        "sysctl -qw net.ipv4.ip_forward=1",
        "sysctl -qw net.ipv6.conf.all.forwarding=1",
        in_ns(client_) + "ip link set lo up",
        in_ns(client_) + "ip addr add 10.1.0.2/24 dev c0",
        in_ns(client_) + "ip addr add fd00:1::2/64 dev c0 nodad",
        in_ns(client_) + "ip link set c0 up",
        in_ns(client_) + "ip route add default via 10.1.0.1",
        in_ns(client_) + "ip -6 route add default via fd00:1::1",
        in_ns(server_) + "ip link set lo up",
        in_ns(server_) + "ip addr add 10.2.0.2/24 dev s0",
        in_ns(server_) + "ip addr add fd00:2::2/64 dev s0 nodad",
        in_ns(server_) + "ip link set s0 up",
        in_ns(server_) + "ip route add default via 10.2.0.1",
        in_ns(server_) + "ip -6 route add default via fd00:2::1",
    };
    for (const auto& c : cmds) {
      if (run(c + " >/dev/null 2>&1") != 0) {
        ADD_FAILURE() << "topology step failed: " << c;
        return false;
      }
    }
    return true;
  }

  int outer_ = -1;
  int client_ = -1;
  int server_ = -1;
  std::vector<int> ns_fds_;
  std::vector<std::shared_ptr<NftFlowtableProvider>> providers_;
  std::string usage_dir_;
};

// A TCP echo server in the server namespace: answers every message with
// as many bytes.  Stops when the client closes.
class EchoServer {
 public:
  EchoServer(int ns, int family, const char* addr, uint16_t port) {
    listen_ = socket_in(ns, family, SOCK_STREAM);
    if (listen_ < 0) return;
    int one = 1;
    setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    sockaddr_storage ss{};
    socklen_t len = fill(family, addr, port, &ss);
    if (bind(listen_, reinterpret_cast<sockaddr*>(&ss), len) != 0 || listen(listen_, 4) != 0) {
      ::close(listen_);
      listen_ = -1;
      return;
    }
    thread_ = std::thread([this] {
      int c = accept(listen_, nullptr, nullptr);
      if (c < 0) return;
      int one1 = 1;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one1, sizeof(one1));
      char buf[65536];
      for (;;) {
        const ssize_t n = recv(c, buf, sizeof(buf), 0);
        if (n <= 0) break;
        if (send(c, buf, static_cast<size_t>(n), MSG_NOSIGNAL) != n) break;
      }
      ::close(c);
    });
  }
  ~EchoServer() {
    if (listen_ >= 0) shutdown(listen_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    if (listen_ >= 0) ::close(listen_);
  }
  bool ok() const { return listen_ >= 0; }

  static socklen_t fill(int family, const char* addr, uint16_t port, sockaddr_storage* ss) {
    if (family == AF_INET) {
      auto* s = reinterpret_cast<sockaddr_in*>(ss);
      s->sin_family = AF_INET;
      s->sin_port = htons(port);
      inet_pton(AF_INET, addr, &s->sin_addr);
      return sizeof(sockaddr_in);
    }
    auto* s = reinterpret_cast<sockaddr_in6*>(ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(port);
    inet_pton(AF_INET6, addr, &s->sin6_addr);
    return sizeof(sockaddr_in6);
  }

 private:
  int listen_ = -1;
  std::thread thread_;
};

// A TCP client in the client namespace, bound to a fixed source port so the
// test knows the connection's tuple before it exists.
class EchoClient {
 public:
  EchoClient(int ns, int family, const char* src, uint16_t sport, const char* dst, uint16_t dport) {
    fd_ = socket_in(ns, family, SOCK_STREAM);
    if (fd_ < 0) return;
    int one = 1;
    setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    timeval tv{5, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    sockaddr_storage a{}, b{};
    socklen_t la = EchoServer::fill(family, src, sport, &a);
    socklen_t lb = EchoServer::fill(family, dst, dport, &b);
    if (bind(fd_, reinterpret_cast<sockaddr*>(&a), la) != 0 || connect(fd_, reinterpret_cast<sockaddr*>(&b), lb) != 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }
  ~EchoClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return fd_ >= 0; }

  // 'n' request/answer round trips of 'size' bytes; false on any failure.
  bool exchange(int n, size_t size = 100) {
    std::vector<char> out(size, 'x'), in(size);
    for (int i = 0; i < n; ++i) {
      if (send(fd_, out.data(), size, MSG_NOSIGNAL) != static_cast<ssize_t>(size)) return false;
      size_t got = 0;
      while (got < size) {
        const ssize_t r = recv(fd_, in.data() + got, size - got, 0);
        if (r <= 0) return false;
        got += static_cast<size_t>(r);
      }
    }
    return true;
  }

 private:
  int fd_ = -1;
};

// The counter of the rule with comment 'comment' in our chain, or -1.
long long rule_counter(const std::string& comment) {
  const std::string out = output_of("nft list chain inet ctoffload forward 2>/dev/null");
  const std::regex re("counter packets ([0-9]+) bytes [0-9]+.*comment \"" + comment + "\"");
  std::smatch m;
  if (!std::regex_search(out, m, re)) return -1;
  return std::stoll(m[1]);
}

// Slow-path packets of set 'set' that its rule for direction 'dir'
// ("original" or "reply") matched, or -1.
long long rule_packets(const std::string& set, const std::string& dir) { return rule_counter(set + " " + dir); }

// Both rules of set 'set' together, or -1 when either is missing.
long long rule_packets(const std::string& set) {
  const long long o = rule_packets(set, "original"), r = rule_packets(set, "reply");
  return o < 0 || r < 0 ? -1 : o + r;
}

// `nft list ruleset > f; nft flush ruleset; nft -f f` (and the same with
// `nft -j`) gives back the same ruleset: what an admin's
// /etc/nftables.conf does at boot.  Empty on success, else what went wrong.
std::string ruleset_round_trip_failure() {
  const std::string text = output_of("nft list ruleset");
  const std::string json = output_of("nft -j list ruleset");
  char dir[] = "/tmp/ctoffload-rt.XXXXXX";
  if (mkdtemp(dir) == nullptr) return "mkdtemp failed";
  const std::string d = dir;
  std::ofstream(d + "/text.nft") << text;
  std::ofstream(d + "/json.nft") << json;
  const auto check = [&]() -> std::string {
    if (run("nft -c -f " + d + "/text.nft") != 0) {
      return "nft -c -f of the text listing failed: " + output_of("nft -c -f " + d + "/text.nft 2>&1");
    }
    if (const std::string err = output_of("nft -j -c -f " + d + "/json.nft 2>&1"); !err.empty()) {
      // nft 1.0.6 lists flowtables in JSON without their flags, and reading
      // that back asks the kernel to clear `offload` on ft_hw, which it
      // refuses (EOPNOTSUPP).  That one failure is nft's; anything else, or
      // this one where no hardware flowtable exists, is ours.
      const bool hw = text.find("flags offload") != std::string::npos;
      const bool nft_drops_flags = json.find("\"offload\"") == std::string::npos;
      if (!(hw && nft_drops_flags && err.find("Operation not supported") != std::string::npos)) {
        return "nft -j -c -f of the JSON listing failed: " + err;
      }
    }
    if (run("nft flush ruleset && nft -f " + d + "/text.nft") != 0) {
      return "restoring the text listing failed: " + output_of("nft -f " + d + "/text.nft 2>&1");
    }
    if (output_of("nft list ruleset") != text) return "the restored ruleset differs:\n" + output_of("nft list ruleset");
    if (run("nft flush ruleset && nft -j -f " + d + "/json.nft") != 0) {
      return "restoring the JSON listing failed: " + output_of("nft -j -f " + d + "/json.nft 2>&1");
    }
    // Handles are given anew on restore.  nft 1.0.6's JSON path loses
    // comments: tables have none in its output, and a set's is listed but
    // not read back; everything else must come back as it was.
    const std::regex noise(", \"handle\": [0-9]+|, \"comment\": \"connections selected by ctoffload[^\"]*\"");
    const std::string again = output_of("nft -j list ruleset");
    if (std::regex_replace(again, noise, "") != std::regex_replace(json, noise, "")) {
      return "the JSON-restored ruleset differs:\n" + again;
    }
    return {};
  };
  const std::string why = check();
  (void)run("rm -rf " + d);
  return why;
}

// Elements of set 'set' as `nft -j` lists them.
size_t json_elements(const std::string& set) {
  // An element is {"concat": [...]} (inside {"elem": {"val": ...}} when it
  // has a comment).
  return count_of(output_of("nft -j list set inet ctoffload " + set + " 2>/dev/null"), "{\"concat\": [\"");
}

Conn nat_conn() {
  // DNAT: client 10.1.0.2:40002 -> 10.1.0.1:8080 (the router), forwarded to
  // the server 10.2.0.2:80.  conntrack: orig 10.1.0.2:40002 -> 10.1.0.1:8080,
  // reply 10.2.0.2:80 -> 10.1.0.2:40002.
  auto c = make_conn(IPPROTO_TCP, *parse_endpoint("10.1.0.2:40002"), *parse_endpoint("10.1.0.1:8080"),
                     *parse_endpoint("10.2.0.2:80"), *parse_endpoint("10.1.0.2:40002"));
  return *c;
}

// ---------------------------------------------------------------------------
// Any kernel
// ---------------------------------------------------------------------------

TEST_F(NftNetns, ProbeMatchesTheKernelAndLeavesNothingBehind) {
  const NftProbe p = NftFlowtableProvider::probe();
  EXPECT_TRUE(p.privileges) << p.reason;
  if (kernel_has_flowtables()) {
    EXPECT_TRUE(p.flowtable) << p.reason;
    EXPECT_EQ(p.err, 0) << p.reason;
  } else {
    EXPECT_FALSE(p.flowtable);
    EXPECT_EQ(p.err, ENOENT) << p.reason;
    EXPECT_NE(p.reason.find("no nftables flowtables"), std::string::npos) << p.reason;
  }
  EXPECT_EQ(output_of("nft list tables"), "");
  EXPECT_EQ(output_of("nft list ruleset"), "");
}

// Drops 'cap' from the calling thread's effective set.
bool drop_capability(int cap) { return ctoffload::testing::set_effective_capability(cap, false); }

TEST_F(NftNetns, ProbeWithoutCapNetAdminSaysNoPrivileges) {
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(pipefd[0]);
    int out[2] = {-1, -1};
    if (drop_capability(CAP_NET_ADMIN)) {
      const NftProbe p = NftFlowtableProvider::probe();
      out[0] = p.err;
      out[1] = p.privileges ? 1 : 0;
    }
    (void)!write(pipefd[1], out, sizeof(out));
    _exit(0);
  }
  ::close(pipefd[1]);
  int got[2] = {0, 0};
  ASSERT_EQ(read(pipefd[0], got, sizeof(got)), static_cast<ssize_t>(sizeof(got)));
  ::close(pipefd[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  ASSERT_NE(got[0], -1) << "could not drop CAP_NET_ADMIN in the child";
  EXPECT_EQ(got[0], EPERM);
  EXPECT_EQ(got[1], 0);
  EXPECT_EQ(output_of("nft list tables"), "");
}

TEST_F(NftNetns, ModuleInitOnThisKernelPicksWhatTheKernelCanDo) {
  Registry r;
  ASSERT_EQ(*r.config().get("priority"), "nft_flowtable,software");
  const Status s = r.module_init();
  const Conn c = tcp4("10.9.0.1", 1000, "10.9.0.2", 80);
  const Netdev lo = dev("lo");
  const Ctx ctx = ctx_of(c, &lo);
  if (kernel_has_flowtables()) {
    EXPECT_TRUE(s.ok()) << s.to_string();
    EXPECT_EQ(r.providers(), (std::vector<std::string>{"nft_flowtable", "software"}));
    EXPECT_EQ(r.conn_add(ctx), 0);
    auto st = r.conn_query(ctx);
    ASSERT_TRUE(st.has_value());
    EXPECT_STREQ(st->provider, "nft_flowtable");
  } else {
    // The kernel has no flowtables: init says ENOENT, only the fallback is
    // registered, and it takes the connection.
    EXPECT_EQ(s.err(), ENOENT) << s.to_string();
    EXPECT_NE(s.message().find("nft_flowtable"), std::string::npos) << s.message();
    EXPECT_EQ(r.providers(), std::vector<std::string>{"software"});
    EXPECT_EQ(r.conn_add(ctx), 0);
    auto st = r.conn_query(ctx);
    ASSERT_TRUE(st.has_value());
    EXPECT_STREQ(st->provider, "software");
    EXPECT_EQ(output_of("nft list tables"), "") << "a failed init must leave nothing";
  }
}

TEST_F(NftNetns, InitRefusesATableOfOurNameThatIsNotOurs) {
  ASSERT_EQ(run("nft add table inet ctoffload"), 0);
  NftFlowtableOptions o;
  o.flowtables = false;
  auto p = NftFlowtableProvider::create(o);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ((*p)->init(), EEXIST);
  EXPECT_EQ(output_of("nft list table inet ctoffload"), "table inet ctoffload {\n}\n");
}

// The layout minus the flowtables, as nft prints it (the golden dump of
// docs/LAYOUT.md, without the flowtable parts).
TEST_F(NftNetns, TestLayoutListsAsDocumented) {
  NftFlowtableOptions o;
  o.flowtables = false;
  auto p = provider(o);
  ASSERT_TRUE(p);
  const Netdev lo = dev("lo");
  const Conn v4 = tcp4("10.1.0.2", 40000, "10.2.0.2", 80);
  const Conn v6 = udp6("fd00:1::2", 5000, "fd00:2::2", 53, 7);
  const Conn nat = nat_conn();
  ASSERT_EQ(p->conn_add(ctx_of(v4, &lo)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(v6, &lo)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(nat, &lo)), 0);
  const std::string golden =
      "table inet ctoffload {\n"
      "\tcomment \"managed by ctoffload; do not edit\"\n"
      "\tset sel4 {\n"
      "\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service . inet_service\n"
      "\t\tcomment \"connections selected by ctoffload (ipv4, zone 0, ft_sw)\"\n"
      "\t\telements = { 10.1.0.2 . 10.2.0.2 . tcp . 40000 . 80 comment \"iif lo\",\n"
      "\t\t\t     10.1.0.2 . 10.2.0.2 . tcp . 40002 . 80 comment \"iif lo dnat-from 10.1.0.1:8080\" }\n"
      "\t}\n"
      "\n"
      "\tset sel6 {\n"
      "\t\ttype ipv6_addr . ipv6_addr . inet_proto . inet_service . inet_service\n"
      "\t\tcomment \"connections selected by ctoffload (ipv6, zone 0, ft_sw)\"\n"
      "\t}\n"
      "\n"
      "\tset sel6_z7 {\n"
      "\t\ttype ipv6_addr . ipv6_addr . inet_proto . inet_service . inet_service\n"
      "\t\tcomment \"connections selected by ctoffload (ipv6, zone 7, ft_sw)\"\n"
      "\t\telements = { fd00:1::2 . fd00:2::2 . udp . 5000 . 53 comment \"iif lo\" }\n"
      "\t}\n"
      "\n"
      "\tchain forward {\n"
      "\t\ttype filter hook forward priority 100; policy accept;\n"
      "\t\tct zone 0 ip saddr . ip daddr . meta l4proto . th sport . th dport @sel4 counter packets 0 bytes 0 "
      "comment \"sel4 original\"\n"
      "\t\tct zone 0 ip daddr . ip saddr . meta l4proto . th dport . th sport @sel4 counter packets 0 bytes 0 "
      "comment \"sel4 reply\"\n"
      "\t\tct zone 0 ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport @sel6 counter packets 0 bytes 0 "
      "comment \"sel6 original\"\n"
      "\t\tct zone 0 ip6 daddr . ip6 saddr . meta l4proto . th dport . th sport @sel6 counter packets 0 bytes 0 "
      "comment \"sel6 reply\"\n"
      "\t\tct zone 7 ip6 saddr . ip6 daddr . meta l4proto . th sport . th dport @sel6_z7 counter packets 0 bytes 0 "
      "comment \"sel6_z7 original\"\n"
      "\t\tct zone 7 ip6 daddr . ip6 saddr . meta l4proto . th dport . th sport @sel6_z7 counter packets 0 bytes 0 "
      "comment \"sel6_z7 reply\"\n"
      "\t}\n"
      "}\n";
  // Element order inside a hash set is the kernel's; compare with both
  // orders of the two sel4 elements.
  std::string listed = output_of("nft list ruleset");
  std::string swapped = golden;
  {
    const std::string a = "10.1.0.2 . 10.2.0.2 . tcp . 40000 . 80 comment \"iif lo\"";
    const std::string b = "10.1.0.2 . 10.2.0.2 . tcp . 40002 . 80 comment \"iif lo dnat-from 10.1.0.1:8080\"";
    const size_t pa = swapped.find(a), pb = swapped.find(b);
    ASSERT_NE(pa, std::string::npos);
    ASSERT_NE(pb, std::string::npos);
    swapped.replace(pb, b.size(), a);
    swapped.replace(pa, a.size(), b);
  }
  EXPECT_TRUE(listed == golden || listed == swapped) << listed;

  // The JSON listing carries the same elements and comments.
  const std::string json = output_of("nft -j list ruleset");
  // (nft 1.0.6's JSON does not print table comments; `nft list` above does.)
  EXPECT_NE(json.find("{\"table\": {\"family\": \"inet\", \"name\": \"ctoffload\""), std::string::npos) << json;
  EXPECT_NE(json.find("{\"concat\": [\"10.1.0.2\", \"10.2.0.2\", \"tcp\", 40000, 80]}, \"comment\": \"iif lo\""),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("{\"concat\": [\"fd00:1::2\", \"fd00:2::2\", \"udp\", 5000, 53]}"), std::string::npos) << json;
  EXPECT_NE(json.find("{\"payload\": {\"protocol\": \"th\", \"field\": \"dport\"}}"), std::string::npos) << json;
  EXPECT_NE(json.find("\"right\": \"@sel6_z7\""), std::string::npos) << json;

  // And it reads back: an admin's `nft list ruleset > /etc/nftables.conf`.
  EXPECT_EQ(ruleset_round_trip_failure(), "");
}

// An admin saves the ruleset, flushes it (or reboots) and restores it with
// `nft -f`: a new process adopts the restored table - every connection,
// NAT included - and keeps working on it.
TEST_F(NftNetns, RestoredRulesetIsAdoptedAndKeepsWorking) {
  NftFlowtableOptions o;
  o.flowtables = false;
  const Netdev lo = dev("lo");
  const Conn a = tcp4("10.1.0.2", 1, "10.2.0.2", 80);
  const Conn b = udp6("fd00:1::2", 2, "fd00:2::2", 53, 5);
  const Conn c = nat_conn();
  {
    auto p = provider(o);
    ASSERT_TRUE(p);
    for (const Conn* k : {&a, &b, &c}) ASSERT_EQ(p->conn_add(ctx_of(*k, &lo)), 0);
    providers_.clear();
  }
  const std::string saved = output_of("nft list ruleset");
  char path[] = "/tmp/ctoffload-saved.XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, saved.data(), saved.size()), static_cast<ssize_t>(saved.size()));
  close(fd);
  ASSERT_EQ(run(std::string("nft flush ruleset && nft -f ") + path), 0);
  unlink(path);
  ASSERT_EQ(output_of("nft list ruleset"), saved);

  const std::string saved_json = output_of("nft -j list ruleset");
  for (int round = 0; round < 3; ++round) {
    // Rounds 0 and 1: the text restore, lazy and full adoption; round 2:
    // the JSON restore, which (nft 1.0.6) drops the table's comment.
    const AdoptMode mode = round == 0 ? AdoptMode::kLazy : AdoptMode::kFull;
    SCOPED_TRACE(round == 2 ? "json, full" : mode == AdoptMode::kLazy ? "text, lazy" : "text, full");
    if (round == 2) {
      char jpath[] = "/tmp/ctoffload-saved-json.XXXXXX";
      const int jfd = mkstemp(jpath);
      ASSERT_GE(jfd, 0);
      ASSERT_EQ(write(jfd, saved_json.data(), saved_json.size()), static_cast<ssize_t>(saved_json.size()));
      close(jfd);
      ASSERT_EQ(run(std::string("nft flush ruleset && nft -j -f ") + jpath), 0);
      unlink(jpath);
      ASSERT_EQ(output_of("nft list ruleset").find("managed by ctoffload"), std::string::npos)
          << "nft's JSON path keeps table comments now: the adoption of comment-less tables can go";
    }
    o.adopt = mode;
    const std::string before = output_of("nft list ruleset");
    auto q = provider(o);
    ASSERT_TRUE(q);
    for (const Conn& k : {a, b, c}) {
      auto info = q->lookup(k);
      ASSERT_TRUE(info.has_value()) << format_conn(k);
      EXPECT_TRUE(same_conn(info->conn, k)) << format_conn(info->conn);
      EXPECT_EQ(info->iif, "lo");
    }
    EXPECT_EQ(q->entries().size(), 3u);
    EXPECT_EQ(output_of("nft list ruleset"), before) << "adoption must not change the table";
    EXPECT_EQ(q->conn_add(ctx_of(a, &lo)), EEXIST);
    providers_.clear();
  }
  // Deleted and re-added, flushed: all of it on the restored table.
  auto r = provider(o);
  ASSERT_TRUE(r);
  r->conn_del(ctx_of(c, &lo));
  EXPECT_EQ(json_elements("sel4"), 1u);
  EXPECT_EQ(r->conn_add(ctx_of(c, &lo)), 0);
  EXPECT_EQ(json_elements("sel4"), 2u);
  r->flush();
  EXPECT_EQ(json_elements("sel4"), 0u);
  EXPECT_EQ(json_elements("sel6_z5"), 0u);
}

// A table written by ctoffload before layout 2 (the conntrack original
// tuple in its rules, which nft cannot read back) is migrated by the next
// process: rules replaced, NAT elements re-keyed, nothing lost.
TEST_F(NftNetns, LayoutOneTableIsMigratedWithEveryConnection) {
  const Conn a = tcp4("10.1.0.2", 1, "10.2.0.2", 80);
  const Conn b = udp6("fd00:1::2", 2, "fd00:2::2", 53, 5);
  const Conn c = nat_conn();
  {
    // Layout 1 as ctoffload wrote it, built with the legacy builders.
    auto sock = netlink::NftSocket::open();
    ASSERT_TRUE(sock.ok());
    nft::LayoutOptions lo_opts;
    lo_opts.flowtables = false;
    netlink::NftTxn txn(*sock);
    txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, nft::build_table(lo_opts));
    txn.add_chain(NFT_MSG_NEWCHAIN, NLM_F_CREATE, nft::build_chain(lo_opts));
    for (const nft::SelKey key : {nft::SelKey{AF_INET, 0, FtMode::kSw}, nft::SelKey{AF_INET6, 0, FtMode::kSw},
                                  nft::SelKey{AF_INET6, 5, FtMode::kSw}}) {
      txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE, nft::build_set(lo_opts, key));
      txn.add_rule(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, nft::build_legacy_rule(lo_opts, key));
    }
    for (const Conn* k : {&a, &b, &c}) {
      const nft::SelKey key{k->family, k->zone, FtMode::kSw};
      netlink::SetPtr s = nft::build_set_ref(lo_opts, key);
      netlink::SetElemPtr e = nft::build_element(*k, {}, false, nft::Selector::kLegacyCtOriginal);
      std::string note = "iif lo";
      if (is_natted(*k)) {
        note += " reply " + format_endpoint(k->family, k->reply.src, k->reply.src_port) + " -> " +
                format_endpoint(k->family, k->reply.dst, k->reply.dst_port);
      }
      std::vector<uint8_t> ud = {NFTNL_UDATA_SET_ELEM_COMMENT, static_cast<uint8_t>(note.size() + 1)};
      ud.insert(ud.end(), note.begin(), note.end());
      ud.push_back(0);
      nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_USERDATA, ud.data(), static_cast<uint32_t>(ud.size()));
      nftnl_set_elem_add(s.get(), e.release());
      txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, std::move(s));
    }
    ASSERT_TRUE(txn.commit().ok());
  }
  ASSERT_NE(output_of("nft list chain inet ctoffload forward").find("ct original proto-src"), std::string::npos);

  NftFlowtableOptions o;
  o.flowtables = false;
  o.adopt = AdoptMode::kLazy;  // A layout 1 table is read whole whatever the mode.
  auto p = provider(o);
  ASSERT_TRUE(p);
  EXPECT_EQ(p->size(), 3u);
  for (const Conn& k : {a, b, c}) {
    auto info = p->lookup(k);
    ASSERT_TRUE(info.has_value()) << format_conn(k);
    EXPECT_TRUE(same_conn(info->conn, k)) << format_conn(info->conn);
  }
  const std::string chain = output_of("nft list chain inet ctoffload forward");
  EXPECT_EQ(chain.find("ct original"), std::string::npos) << chain;
  EXPECT_EQ(count_of(chain, "comment \"sel"), 6u) << chain;
  // The NAT connection now has its layout 2 key (the DNAT target), the
  // others kept theirs.
  EXPECT_NE(output_of("nft list set inet ctoffload sel4").find("10.1.0.2 . 10.2.0.2 . tcp . 40002 . 80"),
            std::string::npos);
  EXPECT_EQ(json_elements("sel4"), 2u);
  EXPECT_EQ(json_elements("sel6_z5"), 1u);
  EXPECT_EQ(ruleset_round_trip_failure(), "");
}

TEST_F(NftNetns, BatchOfAddsIsOneTransactionAndDeletesAnother) {
  NftFlowtableOptions o;
  o.flowtables = false;
  auto p = provider(o);
  ASSERT_TRUE(p);
  const Netdev lo = dev("lo");
  // The first add puts the device in place (nothing to do without
  // flowtables, one transaction with them).
  const Conn first = tcp4("10.5.0.1", 1, "10.6.0.1", 443);
  ASSERT_EQ(p->conn_add(ctx_of(first, &lo)), 0);

  constexpr int kN = 2000;
  std::vector<Conn> conns;
  for (int i = 0; i < kN; ++i) {
    conns.push_back(tcp4(("10.5." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1)).c_str(),
                         static_cast<uint16_t>(1024 + i), "10.6.0.1", 443));
  }
  std::vector<Op> ops(kN);
  for (int i = 0; i < kN; ++i) {
    ops[i].type = CT_OFFLOAD_OP_ADD;
    ops[i].ctx = ctx_of(conns[i], &lo);
  }
  const uint32_t gen0 = ruleset_generation();
  p->batch_submit(ops);
  const uint32_t gen1 = ruleset_generation();
  for (int i = 0; i < kN; ++i) ASSERT_EQ(ops[i].error, 0) << "op " << i;
  EXPECT_EQ(gen1 - gen0, 1u) << "a batch of adds must be one nf_tables transaction";
  EXPECT_EQ(p->size(), static_cast<size_t>(kN + 1));
  EXPECT_EQ(json_elements("sel4"), static_cast<size_t>(kN + 1));

  std::vector<Op> dels(kN / 2);
  for (int i = 0; i < kN / 2; ++i) {
    dels[i].type = CT_OFFLOAD_OP_DEL;
    dels[i].ctx = ctx_of(conns[2 * i], &lo);
  }
  p->batch_submit(dels);
  const uint32_t gen2 = ruleset_generation();
  for (const auto& op : dels) EXPECT_EQ(op.error, 0);
  EXPECT_EQ(gen2 - gen1, 1u);
  EXPECT_EQ(p->size(), static_cast<size_t>(kN / 2 + 1));
  EXPECT_EQ(json_elements("sel4"), static_cast<size_t>(kN / 2 + 1));
}

TEST_F(NftNetns, KernelDuplicateInABatchFailsOnlyThatOp) {
  NftFlowtableOptions o;
  o.flowtables = false;
  auto p = provider(o);
  ASSERT_TRUE(p);
  const Netdev lo = dev("lo");
  // Someone else put connection 3's element there behind our back.
  ASSERT_EQ(run("nft add element inet ctoffload sel4 '{ 10.7.0.3 . 10.8.0.1 . tcp . 2003 . 80 }'"), 0);
  std::vector<Conn> conns;
  for (int i = 1; i <= 8; ++i) {
    const std::string src = "10.7.0." + std::to_string(i);
    conns.push_back(tcp4(src.c_str(), static_cast<uint16_t>(2000 + i), "10.8.0.1", 80));
  }
  // Connection 6 twice in the same batch: the second is refused by us.
  conns.push_back(conns[5]);
  std::vector<Op> ops(conns.size());
  for (size_t i = 0; i < conns.size(); ++i) {
    ops[i].type = CT_OFFLOAD_OP_ADD;
    ops[i].ctx = ctx_of(conns[i], &lo);
  }
  p->batch_submit(ops);
  for (size_t i = 0; i < ops.size(); ++i) {
    const int want = i == 2 ? EEXIST : i == 8 ? EEXIST : 0;
    EXPECT_EQ(ops[i].error, want) << "op " << i << ": " << std::strerror(ops[i].error);
  }
  EXPECT_EQ(p->size(), 7u);
  EXPECT_EQ(json_elements("sel4"), 8u);  // Seven of ours plus the foreign one.
  EXPECT_FALSE(p->lookup(conns[2]).has_value());
}

TEST_F(NftNetns, FailedAddsLeaveNothingBehind) {
  NftFlowtableOptions o;
  o.flowtables = false;
  o.capacity = 2;
  auto p = provider(o);
  ASSERT_TRUE(p);
  const Netdev lo = dev("lo");
  const Netdev ghost = dev("nosuchdev0");
  const std::string before = output_of("nft list ruleset");

  Conn bad = tcp4("10.1.0.2", 1, "10.2.0.2", 80);
  bad.orig.src_port = 0;
  EXPECT_EQ(p->conn_add(ctx_of(bad, &lo)), EINVAL);
  Conn icmp = tcp4("10.1.0.2", 1, "10.2.0.2", 80);
  icmp.proto = IPPROTO_ICMP;
  EXPECT_EQ(p->conn_add(ctx_of(icmp, &lo)), EPROTONOSUPPORT);
  EXPECT_FALSE(p->can_offload(ctx_of(icmp, &lo)));
  EXPECT_EQ(p->conn_add(ctx_of(tcp4("10.1.0.2", 2, "10.2.0.2", 80), &ghost)), ENODEV);
  EXPECT_EQ(output_of("nft list ruleset"), before);
  EXPECT_EQ(p->size(), 0u);

  EXPECT_EQ(p->conn_add(ctx_of(tcp4("10.1.0.2", 3, "10.2.0.2", 80), &lo)), 0);
  EXPECT_EQ(p->conn_add(ctx_of(tcp4("10.1.0.2", 4, "10.2.0.2", 80), &lo)), 0);
  const std::string full = output_of("nft list ruleset");
  EXPECT_FALSE(p->can_offload(ctx_of(tcp4("10.1.0.2", 5, "10.2.0.2", 80), &lo)));
  EXPECT_EQ(p->conn_add(ctx_of(tcp4("10.1.0.2", 5, "10.2.0.2", 80), &lo)), ENOSPC);
  EXPECT_EQ(output_of("nft list ruleset"), full);
  EXPECT_EQ(p->size(), 2u);
}

TEST_F(NftNetns, FlushRulesetIsNoticedAndEverythingRestored) {
  NftFlowtableOptions o;
  o.flowtables = false;
  auto p = provider(o);
  ASSERT_TRUE(p);
  const Netdev lo = dev("lo");
  const Conn a = tcp4("10.1.0.2", 1, "10.2.0.2", 80);
  const Conn b = udp6("fd00:1::2", 2, "fd00:2::2", 53, 9);
  const Conn c = nat_conn();
  ASSERT_EQ(p->conn_add(ctx_of(a, &lo)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(b, &lo)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(c, &lo)), 0);
  const std::string before = output_of("nft list ruleset");
  ASSERT_EQ(run("nft flush ruleset"), 0);
  ASSERT_EQ(output_of("nft list ruleset"), "");
  // The next operation notices (verify_ms is 0 here) and restores.
  EXPECT_EQ(p->conn_update(ctx_of(a, &lo)), 0);
  EXPECT_EQ(output_of("nft list ruleset"), before);
  // Deleting one set is noticed as well.
  ASSERT_EQ(run("for h in $(nft -a list chain inet ctoffload forward | "
                "sed -n 's/.*comment \"sel6_z9 [a-z]*\" # handle \\([0-9]*\\)/\\1/p'); do "
                "nft delete rule inet ctoffload forward handle $h || exit 1; done; "
                "nft delete set inet ctoffload sel6_z9"),
            0);
  ASSERT_TRUE(p->resync().ok());
  EXPECT_EQ(output_of("nft list ruleset"), before);
  // Elements flushed behind our back come back with an explicit resync.
  ASSERT_EQ(run("nft flush set inet ctoffload sel4"), 0);
  ASSERT_TRUE(p->resync().ok());
  EXPECT_EQ(json_elements("sel4"), 2u);
}

TEST_F(NftNetns, NewProcessAdoptsTheConnectionsInItsTable) {
  NftFlowtableOptions o;
  o.flowtables = false;
  const Netdev lo = dev("lo");
  const Conn a = tcp4("10.1.0.2", 1, "10.2.0.2", 80);
  const Conn b = udp6("fd00:1::2", 2, "fd00:2::2", 53, 5);
  const Conn c = nat_conn();
  {
    auto p = provider(o);
    ASSERT_TRUE(p);
    ASSERT_EQ(p->conn_add(ctx_of(a, &lo)), 0);
    ASSERT_EQ(p->conn_add(ctx_of(b, &lo)), 0);
    ASSERT_EQ(p->conn_add(ctx_of(c, &lo)), 0);
    providers_.clear();
  }
  const std::string before = output_of("nft list ruleset");
  // Lazy (the default) knows nothing until a connection is named, full
  // everything at init; both end knowing the same three.
  for (const AdoptMode mode : {AdoptMode::kLazy, AdoptMode::kFull}) {
    SCOPED_TRACE(std::string(adopt_mode_name(mode)));
    NftFlowtableOptions m = o;
    m.adopt = mode;
    auto q = provider(m);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->size(), mode == AdoptMode::kFull ? 3u : 0u);
    for (const Conn& k : {a, b, c}) {
      auto info = q->lookup(k);
      ASSERT_TRUE(info.has_value()) << format_conn(k);
      EXPECT_TRUE(same_conn(info->conn, k)) << format_conn(info->conn);
      EXPECT_EQ(info->iif, "lo");
    }
    EXPECT_EQ(q->size(), 3u);
    EXPECT_EQ(output_of("nft list ruleset"), before) << "adoption must not change the table";
    providers_.clear();
  }
  // Adopted connections are fully ours: they can be deleted and re-added,
  // by a lazy process that has not looked them up before.
  NftFlowtableOptions lazy = o;
  lazy.adopt = AdoptMode::kLazy;
  auto q = provider(lazy);
  ASSERT_TRUE(q);
  q->conn_del(ctx_of(c, &lo));
  EXPECT_FALSE(q->lookup(c).has_value());
  EXPECT_EQ(q->conn_add(ctx_of(a, &lo)), EEXIST);
  EXPECT_EQ(q->size(), 1u);
  EXPECT_EQ(q->conn_add(ctx_of(c, &lo)), 0);
  EXPECT_EQ(q->size(), 2u);
  EXPECT_EQ(output_of("nft list ruleset"), before);
}

TEST_F(NftNetns, FlushLeavesAnEmptyCoherentTable) {
  NftFlowtableOptions o;
  o.flowtables = false;
  auto p = provider(o);
  ASSERT_TRUE(p);
  const std::string empty = output_of("nft list ruleset");
  const Netdev lo = dev("lo");
  ASSERT_EQ(p->conn_add(ctx_of(tcp4("10.1.0.2", 1, "10.2.0.2", 80), &lo)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(udp6("fd00:1::2", 2, "fd00:2::2", 53, 3), &lo)), 0);
  p->flush();
  EXPECT_EQ(p->size(), 0u);
  EXPECT_EQ(output_of("nft list ruleset"), empty);
  EXPECT_EQ(p->conn_add(ctx_of(tcp4("10.1.0.2", 1, "10.2.0.2", 80), &lo)), 0);
}

// Real traffic through the router: the selection rule's counter sees the
// packets of both directions (the key is the conntrack original tuple),
// conn_update follows the conntrack counters, conn_del removes element and
// conntrack entry.
TEST_F(NftNetns, TrafficMatchesBothDirectionsAndDrivesLastUsed) {
  ASSERT_TRUE(make_topology());
  NftFlowtableOptions o;
  o.flowtables = false;
  auto p = provider(o);  // Turns conntrack accounting on before the connection exists.
  ASSERT_TRUE(p);
  EchoServer server(server_, AF_INET, "10.2.0.2", 8080);
  ASSERT_TRUE(server.ok());
  EchoClient client(client_, AF_INET, "10.1.0.2", 40001, "10.2.0.2", 8080);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client.exchange(1));

  const Conn c = tcp4("10.1.0.2", 40001, "10.2.0.2", 8080);
  const Netdev rc = dev("r-c");
  ASSERT_EQ(p->conn_add(ctx_of(c, &rc)), 0);
  auto info = p->lookup(c);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->iif, "r-c");
  EXPECT_EQ(info->reply_iif, "r-s") << "the route lookup finds the reply direction's device";
  EXPECT_TRUE(info->in_conntrack);
  EXPECT_TRUE(info->has_counters);

  EXPECT_EQ(p->conn_update(ctx_of(c, &rc)), 0) << "first look is a baseline, not a measurement";
  ASSERT_TRUE(client.exchange(25));
  settle();  // Delayed ACKs are packets too.
  const long long t1 = p->conn_update(ctx_of(c, &rc));
  EXPECT_GT(t1, 0);
  EXPECT_GE(rule_packets("sel4", "original"), 25) << "original-direction packets must match the selection";
  EXPECT_GE(rule_packets("sel4", "reply"), 25) << "reply-direction packets must match the selection";

  settle();
  EXPECT_EQ(p->conn_update(ctx_of(c, &rc)), t1) << "idle: last used stays";
  ASSERT_TRUE(client.exchange(2));
  settle();  // Delayed ACKs included, so that the connection is idle after t2.
  const long long t2 = p->conn_update(ctx_of(c, &rc));
  EXPECT_GT(t2, t1);

  // A new process of the same table (a one-shot `ctoffloadctl update`)
  // knows the time from the readings the first one left, lazily adopted.
  {
    NftFlowtableOptions lazy = o;
    lazy.adopt = AdoptMode::kLazy;
    auto q = provider(lazy);
    ASSERT_TRUE(q);
    EXPECT_EQ(q->conn_update(ctx_of(c, &rc)), t2) << "idle since the other process's reading";
    ASSERT_TRUE(client.exchange(2));
    settle();
    auto r = provider(lazy);
    ASSERT_TRUE(r);
    EXPECT_GT(r->conn_update(ctx_of(c, &rc)), t2) << "moved since any earlier reading";
    providers_.pop_back();
    providers_.pop_back();
  }
  settle();

  ConnStatus st{};
  ASSERT_TRUE(p->conn_query(ctx_of(c, &rc), &st));
  EXPECT_STREQ(st.provider, "nft_flowtable");
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_SW);
  EXPECT_GE(st.packets, 60u);
  EXPECT_GT(st.bytes, 60u * 100u);

  const auto devs = p->devices();
  ASSERT_EQ(devs.size(), 2u);
  for (const auto& d : devs) {
    EXPECT_TRUE(d.present) << d.name;
    EXPECT_EQ(d.connections, 1u) << d.name;
  }

  // conn_del: element gone, conntrack entry deleted (the connection goes on
  // and conntrack makes a new entry from its next packet).
  auto ct = netlink::Ctnetlink::open();
  ASSERT_TRUE(ct.ok());
  auto before = ct->get(c);
  ASSERT_TRUE(before.ok());
  p->conn_del(ctx_of(c, &rc));
  EXPECT_EQ(json_elements("sel4"), 0u);
  auto after = ct->get(c);
  EXPECT_TRUE(!after.ok() || after->id != before->id) << "the conntrack entry must be deleted";
  EXPECT_EQ(p->size(), 0u);
  EXPECT_FALSE(p->conn_query(ctx_of(c, &rc), &st));
  const long long counted = rule_packets("sel4");
  ASSERT_TRUE(client.exchange(3)) << "the connection survives conn_del";
  EXPECT_EQ(rule_packets("sel4"), counted) << "no longer selected";
}

// DNAT port forward on the router: the selection keyed on the conntrack
// original tuple matches both directions of the translated connection.
TEST_F(NftNetns, DnatConnectionIsSelectedInBothDirections) {
  ASSERT_TRUE(make_topology());
  ASSERT_EQ(run("nft add table ip nat && nft add chain ip nat pre '{ type nat hook prerouting priority dstnat; }' && "
                "nft add rule ip nat pre ip daddr 10.1.0.1 tcp dport 8080 dnat to 10.2.0.2:80"),
            0);
  NftFlowtableOptions o;
  o.flowtables = false;
  auto p = provider(o);
  ASSERT_TRUE(p);
  EchoServer server(server_, AF_INET, "10.2.0.2", 80);
  ASSERT_TRUE(server.ok());
  EchoClient client(client_, AF_INET, "10.1.0.2", 40002, "10.1.0.1", 8080);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client.exchange(1));
  const Conn c = nat_conn();
  auto ct = netlink::Ctnetlink::open();
  ASSERT_TRUE(ct.ok());
  auto e = ct->get(c);
  ASSERT_TRUE(e.ok()) << e.message();
  ASSERT_TRUE(same_conn(e->conn, c)) << "test's NAT model: " << format_conn(e->conn);

  const Netdev rc = dev("r-c");
  ASSERT_EQ(p->conn_add(ctx_of(c, &rc)), 0);
  auto info = p->lookup(c);
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->reply_iif, "r-s");
  ASSERT_TRUE(client.exchange(25));
  EXPECT_GE(rule_packets("sel4", "original"), 25) << "after DNAT, the client's packets carry the DNAT target";
  EXPECT_GE(rule_packets("sel4", "reply"), 25) << "before un-DNAT, the server's packets carry its own address";
}

// ---------------------------------------------------------------------------
// Kernels with flowtables (the VM)
// ---------------------------------------------------------------------------

class NftFlowtable : public NftNetns {
 protected:
  void SetUp() override {
    if (!kernel_has_flowtables()) {
      if (require_flowtables()) FAIL() << "CTOFFLOAD_REQUIRE_FLOWTABLES=1 but this kernel has no flowtables";
      GTEST_SKIP() << "this kernel has no nftables flowtables; run in the VM (scripts/vm/run.sh) with "
                      "CTOFFLOAD_REQUIRE_FLOWTABLES=1";
    }
    NftNetns::SetUp();
  }
};

// With CTOFFLOAD_SHOW=1, prints what 'cmd' prints (for the record in
// docs/LAYOUT.md).
void show(const std::string& title, const std::string& cmd) {
  const char* v = std::getenv("CTOFFLOAD_SHOW");
  if (v == nullptr || std::string(v) != "1") return;
  std::printf("----- %s: %s\n%s", title.c_str(), cmd.c_str(), output_of(cmd).c_str());
}

// "[OFFLOAD]" appears in `conntrack -L` for the connection.
bool conntrack_shows_offload(const std::string& filter) {
  return output_of("conntrack -L " + filter + " 2>/dev/null").find("[OFFLOAD]") != std::string::npos;
}

TEST_F(NftFlowtable, TcpConnectionIsOffloadedAndCountersAdvance) {
  ASSERT_TRUE(make_topology());
  auto p = provider();
  ASSERT_TRUE(p);
  EchoServer server(server_, AF_INET, "10.2.0.2", 8080);
  ASSERT_TRUE(server.ok());
  EchoClient client(client_, AF_INET, "10.1.0.2", 40011, "10.2.0.2", 8080);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client.exchange(1));
  const Conn c = tcp4("10.1.0.2", 40011, "10.2.0.2", 8080);
  const Netdev rc = dev("r-c");
  ASSERT_EQ(p->conn_add(ctx_of(c, &rc)), 0);
  // The reply direction's packet context (RFC conn_established).
  const Netdev rs = dev("r-s");
  p->conn_established(ctx_of(c, &rs));

  ASSERT_TRUE(client.exchange(3));
  EXPECT_TRUE(conntrack_shows_offload("-p tcp --dport 8080")) << output_of("conntrack -L");
  show("conntrack -L (offloaded)", "conntrack -L 2>/dev/null");
  show("nft list ruleset (offloaded)", "nft list ruleset");
  auto info = p->lookup(c);
  ASSERT_TRUE(info.has_value());
  EXPECT_TRUE(info->offloaded);
  EXPECT_EQ(info->mode, FtMode::kSw);
  EXPECT_EQ(info->iif, "r-c");
  EXPECT_EQ(info->reply_iif, "r-s");

  // Offloaded: the forward chain stops seeing the connection, both ways.
  EXPECT_EQ(p->conn_update(ctx_of(c, &rc)), 0);
  const long long slow = rule_packets("sel4");
  ASSERT_TRUE(client.exchange(200));
  settle();
  const long long t1 = p->conn_update(ctx_of(c, &rc));
  EXPECT_GT(t1, 0) << "conntrack counters advance while offloaded (flowtable counter flag)";
  EXPECT_LE(rule_packets("sel4") - slow, 4) << "packets of an offloaded connection must not reach the chain";
  settle();
  EXPECT_EQ(p->conn_update(ctx_of(c, &rc)), t1) << "idle: last used stays";

  // Devices: veths do not advertise hw-tc-offload, so auto keeps them in
  // the software flowtable.
  for (const auto& d : p->devices()) {
    EXPECT_EQ(d.mode, FtMode::kSw) << d.name;
    EXPECT_NE(d.note.find("hw-tc-offload"), std::string::npos) << d.note;
  }
  const std::string rules = output_of("nft list ruleset");
  EXPECT_NE(rules.find("flowtable ft_sw {"), std::string::npos) << rules;
  EXPECT_NE(rules.find("devices = { r-c, r-s }"), std::string::npos) << rules;
  EXPECT_NE(rules.find("flow add @ft_sw"), std::string::npos) << rules;

  show("conntrack -L (after 200 round trips)", "conntrack -L 2>/dev/null");
  show("nft list chain (after 200 round trips)", "nft list chain inet ctoffload forward");

  // conn_del ends the offload at once.
  p->conn_del(ctx_of(c, &rc));
  EXPECT_FALSE(conntrack_shows_offload("-p tcp --dport 8080"));
  show("conntrack -L (after conn_del)", "conntrack -L 2>/dev/null");
  ASSERT_TRUE(client.exchange(5));
  EXPECT_FALSE(conntrack_shows_offload("-p tcp --dport 8080")) << "no longer selected";
}

// Every object the layout can hold - both families, zones, NAT comments,
// ft_sw with devices, ft_hw and its _hw sets - reads back through nft's
// text and JSON forms.  (No device here takes hardware offload, so ft_hw
// and its sets are made with the layout's builders, as the provider would.)
TEST_F(NftFlowtable, EveryLayoutReadsBackWithFlowtables) {
  ASSERT_TRUE(make_topology());
  auto p = provider();
  ASSERT_TRUE(p);
  const Netdev rc = dev("r-c");
  ASSERT_EQ(p->conn_add(ctx_of(tcp4("10.1.0.2", 40100, "10.2.0.2", 80), &rc)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(udp6("fd00:1::2", 5000, "fd00:2::2", 53, 7), &rc)), 0);
  ASSERT_EQ(p->conn_add(ctx_of(nat_conn(), &rc)), 0);
  {
    auto sock = netlink::NftSocket::open();
    ASSERT_TRUE(sock.ok());
    nft::LayoutOptions lo;
    netlink::NftTxn txn(*sock);
    txn.add_flowtable(NFT_MSG_NEWFLOWTABLE, NLM_F_CREATE, nft::build_flowtable(lo, FtMode::kHw, {}));
    for (const nft::SelKey key : {nft::SelKey{AF_INET, 0, FtMode::kHw}, nft::SelKey{AF_INET6, 7, FtMode::kHw}}) {
      txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE, nft::build_set(lo, key));
      for (nft::RuleDir dir : {nft::RuleDir::kOriginal, nft::RuleDir::kReply}) {
        txn.add_rule(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, nft::build_rule(lo, key, dir));
      }
      const Conn c = key.family == AF_INET ? tcp4("10.1.0.2", 40200, "10.2.0.2", 443)
                                           : udp6("fd00:1::2", 5001, "fd00:2::2", 53, 7);
      netlink::SetPtr s = nft::build_set_ref(lo, key);
      nft::ElemNote n;
      n.iif = "r-c";
      n.reply_iif = "r-s";
      nftnl_set_elem_add(s.get(), nft::build_element(c, n).release());
      txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, std::move(s));
    }
    ASSERT_TRUE(txn.commit().ok());
  }
  const std::string listed = output_of("nft list ruleset");
  for (const char* want : {"flowtable ft_sw {", "devices = { r-c, r-s }", "flowtable ft_hw {", "flags offload",
                           "set sel4_hw {", "set sel6_z7_hw {", "flow add @ft_hw", "dnat-from 10.1.0.1:8080"}) {
    EXPECT_NE(listed.find(want), std::string::npos) << want << " in\n" << listed;
  }
  EXPECT_EQ(ruleset_round_trip_failure(), "");
}

// A table of layout 1 carrying an offloaded DNAT connection: the next
// process migrates it without the connection leaving the fast path.
// `nft -j list ruleset` saved and restored with `nft -j -f`: nft 1.0.6's
// JSON path drops the table comment and the flowtable flags, so ft_sw comes
// back without `counter` (conntrack's counters, and last used, would stop
// while offloaded).  The next provider adopts the table and sets the flags
// again; the connection is offloaded again and last used moves.
TEST_F(NftFlowtable, JsonRestoredTableGetsItsFlowtableFlagsBack) {
  ASSERT_TRUE(make_topology());
  EchoServer server(server_, AF_INET, "10.2.0.2", 8080);
  ASSERT_TRUE(server.ok());
  const Conn c = tcp4("10.1.0.2", 40013, "10.2.0.2", 8080);
  const Netdev rc = dev("r-c");
  {
    auto p = provider();  // Turns accounting on before the connection exists.
    ASSERT_TRUE(p);
    ASSERT_EQ(p->conn_add(ctx_of(c, &rc)), 0);
    providers_.clear();
  }
  const std::string json = output_of("nft -j list ruleset");
  std::smatch ft;
  ASSERT_TRUE(std::regex_search(json, ft, std::regex("\\{\"flowtable\": \\{[^}]*\\}"))) << json;
  ASSERT_EQ(ft.str().find("flags"), std::string::npos) << "nft lists flowtable flags in JSON now: " << ft.str();
  char path[] = "/tmp/ctoffload-json.XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, json.data(), json.size()), static_cast<ssize_t>(json.size()));
  close(fd);
  ASSERT_EQ(run(std::string("nft flush ruleset && nft -j -f ") + path), 0);
  unlink(path);
  const std::string restored = output_of("nft list flowtable inet ctoffload ft_sw");
  ASSERT_EQ(restored.find("counter"), std::string::npos) << restored;

  auto q = provider();
  ASSERT_TRUE(q);
  EXPECT_NE(output_of("nft list flowtable inet ctoffload ft_sw").find("counter"), std::string::npos)
      << "the provider must put the counter flag back";
  ASSERT_TRUE(q->lookup(c).has_value());
  EchoClient client(client_, AF_INET, "10.1.0.2", 40013, "10.2.0.2", 8080);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client.exchange(3));
  EXPECT_TRUE(conntrack_shows_offload("-p tcp --sport 40013")) << output_of("conntrack -L 2>&1");
  EXPECT_EQ(q->conn_update(ctx_of(c, &rc)), 0) << "first reading";
  ASSERT_TRUE(client.exchange(50));
  settle();
  EXPECT_GT(q->conn_update(ctx_of(c, &rc)), 0) << "conntrack counters move while offloaded again";
}

TEST_F(NftFlowtable, LayoutOneMigrationKeepsOffloadedFlowsOffloaded) {
  ASSERT_TRUE(make_topology());
  ASSERT_EQ(run("nft add table ip nat && nft add chain ip nat pre '{ type nat hook prerouting priority dstnat; }' && "
                "nft add rule ip nat pre ip daddr 10.1.0.1 tcp dport 8080 dnat to 10.2.0.2:80"),
            0);
  ASSERT_EQ(run("sysctl -qw net.netfilter.nf_conntrack_acct=1"), 0);
  EchoServer server(server_, AF_INET, "10.2.0.2", 80);
  ASSERT_TRUE(server.ok());
  EchoClient client(client_, AF_INET, "10.1.0.2", 40002, "10.1.0.1", 8080);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client.exchange(1));
  const Conn c = nat_conn();
  {
    // Layout 1 as ctoffload wrote it, with this connection selected.
    auto sock = netlink::NftSocket::open();
    ASSERT_TRUE(sock.ok());
    nft::LayoutOptions lo;
    netlink::NftTxn txn(*sock);
    txn.add_table(NFT_MSG_NEWTABLE, NLM_F_CREATE, nft::build_table(lo));
    txn.add_chain(NFT_MSG_NEWCHAIN, NLM_F_CREATE, nft::build_chain(lo));
    txn.add_flowtable(NFT_MSG_NEWFLOWTABLE, NLM_F_CREATE, nft::build_flowtable(lo, FtMode::kSw, {"r-c", "r-s"}));
    for (const nft::SelKey key : {nft::SelKey{AF_INET, 0, FtMode::kSw}, nft::SelKey{AF_INET6, 0, FtMode::kSw}}) {
      txn.add_set(NFT_MSG_NEWSET, NLM_F_CREATE, nft::build_set(lo, key));
      txn.add_rule(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, nft::build_legacy_rule(lo, key));
    }
    netlink::SetPtr s = nft::build_set_ref(lo, nft::SelKey{AF_INET, 0, FtMode::kSw});
    netlink::SetElemPtr e = nft::build_element(c, {}, false, nft::Selector::kLegacyCtOriginal);
    const std::string note = "iif r-c riif r-s reply 10.2.0.2:80 -> 10.1.0.2:40002";
    std::vector<uint8_t> ud = {NFTNL_UDATA_SET_ELEM_COMMENT, static_cast<uint8_t>(note.size() + 1)};
    ud.insert(ud.end(), note.begin(), note.end());
    ud.push_back(0);
    nftnl_set_elem_set(e.get(), NFTNL_SET_ELEM_USERDATA, ud.data(), static_cast<uint32_t>(ud.size()));
    nftnl_set_elem_add(s.get(), e.release());
    txn.add_elements(NFT_MSG_NEWSETELEM, NLM_F_CREATE, std::move(s));
    ASSERT_TRUE(txn.commit().ok());
  }
  ASSERT_TRUE(client.exchange(3));
  ASSERT_TRUE(conntrack_shows_offload("-p tcp --dport 8080")) << output_of("conntrack -L 2>&1");

  auto p = provider();
  ASSERT_TRUE(p);
  const std::string chain = output_of("nft list chain inet ctoffload forward");
  EXPECT_EQ(chain.find("ct original"), std::string::npos) << chain;
  EXPECT_NE(output_of("nft list set inet ctoffload sel4").find("10.1.0.2 . 10.2.0.2 . tcp . 40002 . 80"),
            std::string::npos)
      << "re-keyed to what the forward hook sees";
  EXPECT_TRUE(conntrack_shows_offload("-p tcp --dport 8080")) << "the migration must not end the offload";
  auto info = p->lookup(c);
  ASSERT_TRUE(info.has_value());
  EXPECT_TRUE(info->offloaded);
  const long long slow = rule_packets("sel4");
  ASSERT_TRUE(client.exchange(50));
  EXPECT_LE(rule_packets("sel4") - slow, 4) << "still in the fast path";
  // And the connection stays selectable: deleted (offload ends), re-added,
  // it is offloaded again by the new rules.
  const Netdev rc = dev("r-c");
  p->conn_del(ctx_of(c, &rc));
  EXPECT_FALSE(conntrack_shows_offload("-p tcp --dport 8080"));
  ASSERT_TRUE(client.exchange(1));
  ASSERT_EQ(p->conn_add(ctx_of(c, &rc)), 0);
  ASSERT_TRUE(client.exchange(3));
  EXPECT_TRUE(conntrack_shows_offload("-p tcp --dport 8080")) << output_of("conntrack -L 2>&1");
  EXPECT_EQ(ruleset_round_trip_failure(), "");
}

TEST_F(NftFlowtable, HardwareRefusedOnVethFallsBackToSoftware) {
  ASSERT_TRUE(make_topology());
  NftFlowtableOptions o;
  o.hw_offload = HwOffload::kOn;
  auto p = provider(o);
  ASSERT_TRUE(p);
  EchoServer server(server_, AF_INET6, "fd00:2::2", 8080);
  ASSERT_TRUE(server.ok());
  EchoClient client(client_, AF_INET6, "fd00:1::2", 40012, "fd00:2::2", 8080);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client.exchange(1));
  const Conn c = *make_conn(IPPROTO_TCP, *parse_endpoint("[fd00:1::2]:40012"), *parse_endpoint("[fd00:2::2]:8080"));
  const Netdev rc = dev("r-c");
  ASSERT_EQ(p->conn_add(ctx_of(c, &rc)), 0);
  for (const auto& d : p->devices()) {
    EXPECT_EQ(d.mode, FtMode::kSw) << d.name;
    EXPECT_NE(d.note.find("hardware offload refused"), std::string::npos) << d.note;
    EXPECT_NE(d.note.find("EOPNOTSUPP"), std::string::npos) << d.note;
  }
  ASSERT_TRUE(client.exchange(3));
  EXPECT_TRUE(conntrack_shows_offload("-f ipv6 -p tcp --dport 8080")) << output_of("conntrack -L -f ipv6");
  ConnStatus st{};
  ASSERT_TRUE(p->conn_query(ctx_of(c, &rc), &st));
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_SW);
}

TEST_F(NftFlowtable, DeviceThatComesBackRejoinsTheFlowtable) {
  ASSERT_TRUE(make_topology());
  auto p = provider();
  ASSERT_TRUE(p);
  const Netdev rc = dev("r-c");
  ASSERT_EQ(p->conn_add(ctx_of(tcp4("10.1.0.2", 40013, "10.2.0.2", 8080), &rc)), 0);
  ASSERT_NE(output_of("nft list flowtable inet ctoffload ft_sw").find("r-c, r-s"), std::string::npos);
  // Unplug r-s and plug a new one of the same name in.
  ASSERT_EQ(run("ip link del r-s"), 0);
  EXPECT_EQ(output_of("nft list flowtable inet ctoffload ft_sw").find("r-s"), std::string::npos);
  ASSERT_EQ(run("ip link add r-s type veth peer name s1 && ip link set r-s up"), 0);
  // The next operation puts it back.
  (void)p->conn_update(ctx_of(tcp4("10.1.0.2", 40013, "10.2.0.2", 8080), &rc));
  EXPECT_NE(output_of("nft list flowtable inet ctoffload ft_sw").find("r-s"), std::string::npos)
      << output_of("nft list ruleset");
  bool present = false;
  for (const auto& d : p->devices()) present = present || (d.name == "r-s" && d.present && d.mode == FtMode::kSw);
  EXPECT_TRUE(present);
}

TEST_F(NftFlowtable, FlushTearsDownOffloadedFlows) {
  ASSERT_TRUE(make_topology());
  auto p = provider();
  ASSERT_TRUE(p);
  EchoServer server(server_, AF_INET, "10.2.0.2", 8080);
  ASSERT_TRUE(server.ok());
  EchoClient client(client_, AF_INET, "10.1.0.2", 40014, "10.2.0.2", 8080);
  ASSERT_TRUE(client.ok());
  ASSERT_TRUE(client.exchange(1));
  const Netdev rc = dev("r-c");
  ASSERT_EQ(p->conn_add(ctx_of(tcp4("10.1.0.2", 40014, "10.2.0.2", 8080), &rc)), 0);
  ASSERT_TRUE(client.exchange(3));
  ASSERT_TRUE(conntrack_shows_offload("-p tcp --dport 8080"));
  p->flush();
  EXPECT_FALSE(conntrack_shows_offload("-p tcp --dport 8080")) << output_of("conntrack -L");
  ASSERT_TRUE(client.exchange(3));
  EXPECT_FALSE(conntrack_shows_offload("-p tcp --dport 8080"));
  EXPECT_EQ(p->size(), 0u);
}

}  // namespace
}  // namespace ctoffload
