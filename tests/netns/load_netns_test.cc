// load_netns_test.cc - issue 7's load test: the nft_flowtable provider
// adding, refreshing and deleting N connections in cycles against the real
// kernel, with the kernel's element count checked after every step, the
// refresh checked against real conntrack entries, and the process's memory
// and descriptors checked flat across cycles.
//
// Must run as root in a fresh network namespace (`unshare -n`), like every
// test in tests/netns.  Runs on any kernel: it builds the layout without
// flowtables (the elements, sets, rules and bookkeeping are what is under
// load here; offload itself is tested in nft_flowtable_netns_test).
//
//   CTOFFLOAD_LOAD_CONNS   N, connections per cycle (default 100000)
//   CTOFFLOAD_LOAD_CYCLES  cycles (default 3)
//
// One cycle:
//   1. all N added through batch_submit in bursts of 8192; every op must
//      succeed; the kernel must hold exactly N elements (counted with a raw
//      NFT_MSG_GETSETELEM dump here, not with the provider's reader);
//   2. one UDP packet on loopback to each of K = min(N, 20000,
//      nf_conntrack_max / 2) ports: K real conntrack entries (with counters:
//      the provider switched accounting on), which K of the N connections
//      describe exactly;
//   3. refresh: every connection's conn_update (an UPD op) - the first pass
//      is the baseline (last used 0 for all), then a second packet to each
//      of the K ports and a second pass: exactly the K connections report
//      last used = the refresh's time, the others 0;
//   4. all N deleted through batch_submit; the kernel must hold no element
//      and conntrack no entry (conn_del deletes the K entries).
// After every cycle: resident memory (VmRSS) and open descriptors.  The
// first cycle commits the provider's records (lazily allocated) and warms
// allocators; from then on RSS must stay within 1% (+4 MiB) of where the
// first cycle left it (not under AddressSanitizer, whose quarantine moves
// RSS by itself), and the descriptor count must not change.
//
// The table it prints (phase times, RSS, descriptors per cycle) is what
// docs/RELIABILITY.md quotes; timing is reported, never asserted.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <libmnl/libmnl.h>
#include <libnftnl/common.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "netlink/ctnetlink.h"
#include "netlink/nft_socket.h"
#include "netns_support.h"
#include "providers/nft_flowtable.h"
#include "test_support.h"

namespace ctoffload {
namespace {

using ctoffload::testing::ctx_of;
using ctoffload::testing::output_of;
using ctoffload::testing::run;

size_t env_size(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const unsigned long long n = std::strtoull(v, &end, 10);
  return (end != nullptr && *end == '\0' && n > 0) ? static_cast<size_t>(n) : fallback;
}

// VmRSS of this process in bytes.
size_t rss_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// Open descriptors of this process.
size_t open_fds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  size_t n = 0;
  while (const dirent* e = readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(d);
  return n - 1;  // The directory stream's own descriptor.
}

size_t read_proc_number(const char* path) {
  std::ifstream in(path);
  size_t n = 0;
  in >> n;
  return n;
}

size_t conntrack_count() { return read_proc_number("/proc/sys/net/netfilter/nf_conntrack_count"); }

// The elements of set inet 'table' 'set' as the kernel lists them: a raw
// GETSETELEM dump over a socket of its own, counting the NFTA_LIST_ELEM
// entries of every reply.  Independent of the provider's own reader.
// Returns -1 when the dump fails.
long long kernel_elements(const std::string& table, const std::string& set) {
  std::unique_ptr<mnl_socket, decltype(&mnl_socket_close)> nl(mnl_socket_open(NETLINK_NETFILTER), mnl_socket_close);
  if (!nl || mnl_socket_bind(nl.get(), 0, MNL_SOCKET_AUTOPID) < 0) return -1;
  std::vector<char> buf(1 << 20);
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf.data(), NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP | NLM_F_ACK, 1);
  mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_TABLE, table.c_str());
  mnl_attr_put_strz(nlh, NFTA_SET_ELEM_LIST_SET, set.c_str());
  if (mnl_socket_sendto(nl.get(), nlh, nlh->nlmsg_len) < 0) return -1;
  long long count = 0;
  const uint32_t portid = mnl_socket_get_portid(nl.get());
  auto on_msg = [](const nlmsghdr* m, void* data) -> int {
    auto* n = static_cast<long long*>(data);
    const char* tail = static_cast<const char*>(mnl_nlmsg_get_payload_tail(m));
    for (auto* a = static_cast<const nlattr*>(mnl_nlmsg_get_payload_offset(m, sizeof(nfgenmsg)));
         mnl_attr_ok(a, static_cast<int>(tail - reinterpret_cast<const char*>(a))); a = mnl_attr_next(a)) {
      if (mnl_attr_get_type(a) != NFTA_SET_ELEM_LIST_ELEMENTS) continue;
      const char* end = reinterpret_cast<const char*>(a) + mnl_attr_get_len(a);
      for (auto* e = static_cast<const nlattr*>(mnl_attr_get_payload(a));
           mnl_attr_ok(e, static_cast<int>(end - reinterpret_cast<const char*>(e))); e = mnl_attr_next(e)) {
        if (mnl_attr_get_type(e) == NFTA_LIST_ELEM) ++*n;
      }
    }
    return MNL_CB_OK;
  };
  for (;;) {
    const ssize_t got = mnl_socket_recvfrom(nl.get(), buf.data(), buf.size());
    if (got < 0) return -1;
    const int r = mnl_cb_run(buf.data(), static_cast<size_t>(got), 1, portid, on_msg, &count);
    if (r == MNL_CB_ERROR) return -1;
    if (r == MNL_CB_STOP) return count;
  }
}

// Connection i of N: the first K are the loopback UDP flows the test sends
// (127.0.0.1:sport -> 127.0.0.1:kFirstPort + i), the rest TCP flows from
// distinct 10/8 sources to one server.
constexpr uint16_t kFirstPort = 20000;

Conn nth_conn(size_t i, size_t k, uint16_t sport) {
  Conn c{};
  c.family = AF_INET;
  if (i < k) {
    c.proto = IPPROTO_UDP;
    c.orig.src.words[0] = htonl(INADDR_LOOPBACK);
    c.orig.dst.words[0] = htonl(INADDR_LOOPBACK);
    c.orig.src_port = sport;
    c.orig.dst_port = static_cast<uint16_t>(kFirstPort + i);
  } else {
    c.proto = IPPROTO_TCP;
    c.orig.src.words[0] = htonl(0x0a000000u + static_cast<uint32_t>(i) + 1);
    c.orig.dst.words[0] = htonl(0xc0000201u);  // 192.0.2.1
    c.orig.src_port = 40000;
    c.orig.dst_port = 443;
  }
  c.reply = mirror(c.orig);
  return c;
}

// One packet from 'fd' to each of ports kFirstPort .. kFirstPort + k - 1.
bool send_each(int fd, size_t k) {
  const char payload[8] = "ctload";
  for (size_t i = 0; i < k; ++i) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    to.sin_port = htons(static_cast<uint16_t>(kFirstPort + i));
    if (sendto(fd, payload, sizeof payload, 0, reinterpret_cast<sockaddr*>(&to), sizeof to) < 0) {
      ADD_FAILURE() << "sendto port " << kFirstPort + i << ": " << std::strerror(errno);
      return false;
    }
  }
  return true;
}

// Under AddressSanitizer freed memory waits in a quarantine (256 MiB by
// default) before it is reused, so RSS climbs for reasons of its own; the
// leak check there is LeakSanitizer's at exit, and RSS is only printed.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kRssIsMeaningful = false;
#else
constexpr bool kRssIsMeaningful = true;
#endif

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

TEST(Load, CyclesOfAddRefreshDeleteKeepKernelMemoryAndDescriptorsInStep) {
  ASSERT_NO_FATAL_FAILURE(testing::assert_fresh_netns());
  ASSERT_EQ(run("ip link set lo up"), 0);
  const size_t n = env_size("CTOFFLOAD_LOAD_CONNS", 100000);
  const size_t cycles = env_size("CTOFFLOAD_LOAD_CYCLES", 3);
  // Real conntrack entries: 20,000, or half the table where it is smaller
  // (the VM's 1 GiB gets nf_conntrack_max 8192).
  const size_t ct_max = read_proc_number("/proc/sys/net/netfilter/nf_conntrack_max");
  const size_t k = std::min({n, size_t{20000}, ct_max > 0 ? ct_max / 2 : size_t{20000}});
  constexpr size_t kBurst = 8192;

  // The provider's clock is the test's: a refresh happens exactly when the
  // test moves time on (refresh_ms), never in between.
  auto clock_ms = std::make_shared<long long>(1'700'000'000'000LL);
  NftBackend backend;
  backend.clock = [clock_ms] { return *clock_ms; };
  NftFlowtableOptions o;
  o.flowtables = false;
  o.capacity = n;
  o.refresh_ms = 1000;
  o.verify_ms = 1000;
  auto created = NftFlowtableProvider::create(o, std::move(backend));
  ASSERT_TRUE(created.ok()) << created.message();
  std::shared_ptr<NftFlowtableProvider> p = *created;
  ASSERT_EQ(p->init(), 0);

  // The loopback sender; conntrack sees its flows once our table's rules
  // (ct expressions) have switched conntrack on in this namespace.
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in self{};
  self.sin_family = AF_INET;
  self.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof self;
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&self), sizeof self), 0);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len), 0);
  const uint16_t sport = ntohs(self.sin_port);

  // Everything the cycles use is allocated before the first measurement.
  const Netdev lo = *make_netdev("lo");
  std::vector<Conn> conns(n);
  for (size_t i = 0; i < n; ++i) conns[i] = nth_conn(i, k, sport);
  std::vector<Op> ops(n);
  auto fill_ops = [&](ct_offload_op_type type) {
    for (size_t i = 0; i < n; ++i) {
      ops[i] = Op{};
      ops[i].type = type;
      ops[i].ctx = ctx_of(conns[i], &lo);
    }
  };
  auto submit_all = [&] {
    for (size_t at = 0; at < n; at += kBurst) {
      p->batch_submit(std::span<Op>(ops.data() + at, std::min(kBurst, n - at)));
    }
  };
  auto first_error = [&]() -> std::string {
    for (size_t i = 0; i < n; ++i) {
      if (ops[i].error != 0) return "op " + std::to_string(i) + ": " + std::strerror(ops[i].error);
    }
    return "";
  };

  std::printf("load: %zu connections per cycle (%zu with conntrack entries), %zu cycles\n", n, k, cycles);
  std::printf("%5s %9s %9s %9s %9s %10s %5s\n", "cycle", "add s", "refresh s", "delete s", "conn/s", "RSS MiB", "fds");
  size_t rss_after_first = 0;
  size_t fds_after_first = 0;
  for (size_t cycle = 1; cycle <= cycles; ++cycle) {
    SCOPED_TRACE("cycle " + std::to_string(cycle));
    auto t0 = std::chrono::steady_clock::now();
    fill_ops(CT_OFFLOAD_OP_ADD);
    submit_all();
    const double add_s = seconds_since(t0);
    ASSERT_EQ(first_error(), "");
    ASSERT_EQ(p->size(), n);
    ASSERT_EQ(kernel_elements(o.table, "sel4"), static_cast<long long>(n));
    // The entries are made now, not before the adds: an unanswered UDP
    // flow's entry lives 30 s, less than a million adds take on a slow box.
    ASSERT_TRUE(send_each(fd, k));
    ASSERT_EQ(conntrack_count(), k) << "the test's own flows are the only conntrack entries";

    // Refresh: a baseline pass, traffic on the K, a second pass.
    t0 = std::chrono::steady_clock::now();
    *clock_ms += 1000;
    fill_ops(CT_OFFLOAD_OP_UPD);
    submit_all();
    ASSERT_EQ(first_error(), "");
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(ops[i].last_used, 0) << "baseline pass, connection " << i;
    double refresh_s = seconds_since(t0);
    ASSERT_TRUE(send_each(fd, k));
    t0 = std::chrono::steady_clock::now();
    *clock_ms += 1000;
    fill_ops(CT_OFFLOAD_OP_UPD);
    submit_all();
    refresh_s += seconds_since(t0);
    ASSERT_EQ(first_error(), "");
    size_t used = 0;
    for (size_t i = 0; i < n; ++i) {
      const long long want = i < k ? *clock_ms : 0;
      ASSERT_EQ(ops[i].last_used, want) << "connection " << i << (i < k ? " (was used)" : " (never used)");
      used += ops[i].last_used != 0;
    }
    EXPECT_EQ(used, k);

    t0 = std::chrono::steady_clock::now();
    fill_ops(CT_OFFLOAD_OP_DEL);
    submit_all();
    const double del_s = seconds_since(t0);
    ASSERT_EQ(p->size(), 0u);
    ASSERT_EQ(kernel_elements(o.table, "sel4"), 0);
    ASSERT_EQ(conntrack_count(), 0u) << "conn_del deletes the conntrack entry of each connection it had";

    const size_t rss = rss_bytes();
    const size_t fds = open_fds();
    std::printf("%5zu %9.2f %9.2f %9.2f %9.0f %10.1f %5zu\n", cycle, add_s, refresh_s, del_s,
                static_cast<double>(n) / (add_s + del_s), static_cast<double>(rss) / (1 << 20), fds);
    std::fflush(stdout);
    if (cycle == 1) {
      rss_after_first = rss;
      fds_after_first = fds;
      continue;
    }
    EXPECT_EQ(fds, fds_after_first) << "descriptors leaked";
    if (kRssIsMeaningful) {
      EXPECT_LE(rss, rss_after_first + rss_after_first / 100 + (size_t{4} << 20))
          << "resident memory grew from " << rss_after_first << " to " << rss << " bytes";
    }
  }
  ::close(fd);
  // The table is still whole after all that.
  EXPECT_TRUE(p->resync().ok());
  EXPECT_NE(output_of("nft list table inet " + o.table + " 2>/dev/null").find("comment \"sel4 original\""),
            std::string::npos);
}

}  // namespace
}  // namespace ctoffload
