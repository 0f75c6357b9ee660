// link_netns_test.cc - the link client and monitor against the real kernel.
//
// Needs root inside a network namespace of its own (`unshare -n`), and
// fails, loudly, without them.  Every test also moves into a fresh network
// namespace, so the only device at the start is "lo".  Devices are made and
// deleted with `ip link` (tests may run it; the library never does).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "netlink/link.h"
#include "netns_support.h"

namespace ctoffload::netlink {
namespace {

using ctoffload::testing::output_of;
using ctoffload::testing::run;

// Root, and a namespace of our own: not PID 1's (when that can be read),
// and holding no device but lo, as a namespace fresh from `unshare -n`
// does.  Anything else fails every test.
class NetnsEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(ctoffload::testing::assert_fresh_netns());
    const int tool = std::system("ip -V >/dev/null 2>&1");  // NOLINT(concurrency-mt-unsafe)
    ASSERT_EQ(tool, 0) << "the `ip` tool (iproute2) is needed";
  }
};

const auto* const kEnv = ::testing::AddGlobalTestEnvironment(new NetnsEnvironment);

// The ifindex `ip -o link show DEV` prints ("7: dev@peer: ..."), or 0.
int ip_ifindex(const std::string& dev) {
  std::string out = output_of("ip -o link show dev " + dev + " 2>/dev/null");
  if (out.empty()) return 0;
  return std::stoi(out.substr(0, out.find(':')));
}

class LinkNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    outer_ = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(outer_, 0);
    ASSERT_EQ(unshare(CLONE_NEWNET), 0) << "unshare(CLONE_NEWNET): errno " << errno;
    auto c = LinkClient::open();
    ASSERT_TRUE(c.ok()) << c.message();
    client_.emplace(std::move(*c));
  }
  void TearDown() override {
    client_.reset();
    if (outer_ >= 0) {
      EXPECT_EQ(setns(outer_, CLONE_NEWNET), 0);
      ::close(outer_);
    }
  }
  void sh(const std::string& cmd) { ASSERT_EQ(run(cmd + " >/dev/null 2>&1"), 0) << cmd; }

  int outer_ = -1;
  std::optional<LinkClient> client_;
};

TEST_F(LinkNetns, LoopbackResolvesBothWays) {
  auto idx = client_->ifindex("lo");
  ASSERT_TRUE(idx.ok()) << idx.message();
  EXPECT_EQ(*idx, 1);
  auto name = client_->name(1);
  ASSERT_TRUE(name.ok()) << name.message();
  EXPECT_EQ(*name, "lo");
}

TEST_F(LinkNetns, VethPairResolvesBothWaysAsIpShowsIt) {
  sh("ip link add ct-a type veth peer name ct-b");
  const int a = ip_ifindex("ct-a");
  const int b = ip_ifindex("ct-b");
  ASSERT_GT(a, 1);
  ASSERT_GT(b, 1);
  auto ia = client_->ifindex("ct-a");
  auto ib = client_->ifindex("ct-b");
  ASSERT_TRUE(ia.ok()) << ia.message();
  ASSERT_TRUE(ib.ok()) << ib.message();
  EXPECT_EQ(*ia, a);
  EXPECT_EQ(*ib, b);
  auto na = client_->name(a);
  ASSERT_TRUE(na.ok()) << na.message();
  EXPECT_EQ(*na, "ct-a");

  auto all = client_->list();
  ASSERT_TRUE(all.ok()) << all.message();
  EXPECT_EQ(all->size(), 3u);
  EXPECT_EQ(all->at(1), "lo");
  EXPECT_EQ(all->at(a), "ct-a");
  EXPECT_EQ(all->at(b), "ct-b");
}

TEST_F(LinkNetns, MissingDeviceReturnsEnodevNamingIt) {
  auto idx = client_->ifindex("nosuchdev0");
  EXPECT_EQ(idx.err(), ENODEV);
  EXPECT_NE(idx.message().find("nosuchdev0"), std::string::npos) << idx.message();
  auto name = client_->name(4242);
  EXPECT_EQ(name.err(), ENODEV);
  EXPECT_NE(name.message().find("4242"), std::string::npos) << name.message();
  auto feat = client_->hw_tc_offload("nosuchdev0");
  EXPECT_EQ(feat.err(), ENODEV);
  EXPECT_NE(feat.message().find("nosuchdev0"), std::string::npos) << feat.message();
}

TEST_F(LinkNetns, VethDoesNotAdvertiseHwTcOffloadButHasItsChecksumFeatures) {
  sh("ip link add ct-a type veth peer name ct-b");
  auto tc = client_->hw_tc_offload("ct-a");
  ASSERT_TRUE(tc.ok()) << tc.message();
  // veth's hw_features (VETH_FEATURES) have no NETIF_F_HW_TC.
  EXPECT_FALSE(tc->available);
  EXPECT_FALSE(tc->active);

  // The same tables give veth's real features: receive checksum offload is
  // changeable and on, loopback is not even offered.
  auto rx = client_->feature("ct-a", "rx-checksum");
  ASSERT_TRUE(rx.ok()) << rx.message();
  EXPECT_TRUE(rx->available);
  EXPECT_TRUE(rx->active);
  EXPECT_FALSE(rx->fixed);
  auto loop = client_->feature("ct-a", "loopback");
  ASSERT_TRUE(loop.ok()) << loop.message();
  EXPECT_FALSE(loop->active);

  // On lo, "loopback" is on and cannot be switched (lo offers no
  // changeable features at all).
  auto lo = client_->feature("lo", "loopback");
  ASSERT_TRUE(lo.ok()) << lo.message();
  EXPECT_TRUE(lo->active);
  EXPECT_FALSE(lo->available);
  EXPECT_TRUE(lo->fixed);

  EXPECT_EQ(client_->feature("ct-a", "no-such-feature").err(), ENOENT);
}

// Collects events until 'done' says enough or 'timeout' passes, polling the
// monitor's descriptor in between.
std::vector<LinkEvent> collect(LinkMonitor& mon, const std::function<bool(const std::vector<LinkEvent>&)>& done,
                               LinkDrainStats* total = nullptr,
                               std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
  std::vector<LinkEvent> events;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto st = mon.drain([&](const LinkEvent& ev) { events.push_back(ev); });
    EXPECT_TRUE(st.ok()) << st.message();
    if (st.ok() && total != nullptr) {
      total->events += st->events;
      total->resyncs += st->resyncs;
    }
    if (done(events) || std::chrono::steady_clock::now() >= deadline) return events;
    pollfd p{mon.borrow_fd_do_not_close(), POLLIN, 0};
    (void)poll(&p, 1, 100);
  }
}

bool has(const std::vector<LinkEvent>& evs, LinkEventType type, const std::string& name) {
  for (const auto& e : evs) {
    if (e.type == type && e.name == name) return true;
  }
  return false;
}

const LinkEvent* find(const std::vector<LinkEvent>& evs, LinkEventType type, const std::string& name) {
  for (const auto& e : evs) {
    if (e.type == type && e.name == name) return &e;
  }
  return nullptr;
}

TEST_F(LinkNetns, MonitorStartsWithTheCurrentDevices) {
  sh("ip link add ct-a type veth peer name ct-b");
  auto mon = LinkMonitor::open();
  ASSERT_TRUE(mon.ok()) << mon.message();
  EXPECT_EQ(mon->links().size(), 3u);
  EXPECT_EQ(mon->links().at(ip_ifindex("ct-a")), "ct-a");
  // Its socket is close-on-exec and non-blocking.
  const int fd = mon->borrow_fd_do_not_close();
  ASSERT_GE(fd, 0);
  EXPECT_NE(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_NE(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
  // Nothing happened since: nothing to drain.
  auto st = mon->drain([](const LinkEvent& ev) { ADD_FAILURE() << "unexpected event for " << ev.name; });
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(st->events, 0u);
}

TEST_F(LinkNetns, MonitorSeesVethAddedRemovedAndRecreated) {
  auto mon = LinkMonitor::open();
  ASSERT_TRUE(mon.ok()) << mon.message();

  sh("ip link add ct-a type veth peer name ct-b");
  pollfd p{mon->borrow_fd_do_not_close(), POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 2000), 1) << "the monitor's descriptor did not become readable";
  auto added = collect(*mon, [](const auto& evs) {
    return has(evs, LinkEventType::kAdded, "ct-a") && has(evs, LinkEventType::kAdded, "ct-b");
  });
  const LinkEvent* a = find(added, LinkEventType::kAdded, "ct-a");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(find(added, LinkEventType::kAdded, "ct-b"), nullptr);
  const int first_a = a->ifindex;
  EXPECT_EQ(first_a, ip_ifindex("ct-a"));
  EXPECT_EQ(mon->links().at(first_a), "ct-a");

  sh("ip link set ct-a up");
  auto up = collect(*mon, [](const auto& evs) { return has(evs, LinkEventType::kChanged, "ct-a"); });
  const LinkEvent* ch = find(up, LinkEventType::kChanged, "ct-a");
  ASSERT_NE(ch, nullptr);
  EXPECT_NE(ch->flags & IFF_UP, 0u);

  sh("ip link del ct-a");  // Takes its peer with it.
  auto removed = collect(*mon, [](const auto& evs) {
    return has(evs, LinkEventType::kRemoved, "ct-a") && has(evs, LinkEventType::kRemoved, "ct-b");
  });
  const LinkEvent* ra = find(removed, LinkEventType::kRemoved, "ct-a");
  ASSERT_NE(ra, nullptr);
  EXPECT_EQ(ra->ifindex, first_a);
  ASSERT_NE(find(removed, LinkEventType::kRemoved, "ct-b"), nullptr);
  EXPECT_EQ(mon->links().count(first_a), 0u);
  EXPECT_EQ(mon->links().size(), 1u);  // Only lo.

  sh("ip link add ct-a type veth peer name ct-b");
  auto again = collect(*mon, [](const auto& evs) {
    return has(evs, LinkEventType::kAdded, "ct-a") && has(evs, LinkEventType::kAdded, "ct-b");
  });
  const LinkEvent* a2 = find(again, LinkEventType::kAdded, "ct-a");
  ASSERT_NE(a2, nullptr);
  EXPECT_NE(a2->ifindex, first_a);  // A new device, a new ifindex.
  EXPECT_EQ(a2->ifindex, ip_ifindex("ct-a"));
}

TEST_F(LinkNetns, MonitorReportsARenameAsAChangeWithTheNewName) {
  sh("ip link add ct-a type veth peer name ct-b");
  auto mon = LinkMonitor::open();
  ASSERT_TRUE(mon.ok()) << mon.message();
  const int idx = ip_ifindex("ct-a");
  sh("ip link set ct-a name ct-renamed");
  auto evs = collect(*mon, [](const auto& e) { return has(e, LinkEventType::kChanged, "ct-renamed"); });
  const LinkEvent* ch = find(evs, LinkEventType::kChanged, "ct-renamed");
  ASSERT_NE(ch, nullptr);
  EXPECT_EQ(ch->ifindex, idx);
  EXPECT_EQ(mon->links().at(idx), "ct-renamed");
  EXPECT_FALSE(has(evs, LinkEventType::kAdded, "ct-renamed"));
}

TEST_F(LinkNetns, BridgePortLeavingIsNotReportedAsARemoval) {
  sh("ip link add ct-br type bridge");
  sh("ip link add ct-a type veth peer name ct-b");
  auto mon = LinkMonitor::open();
  ASSERT_TRUE(mon.ok()) << mon.message();
  sh("ip link set ct-a master ct-br");
  sh("ip link set ct-a nomaster");
  sh("ip link add ct-marker type veth peer name ct-marker2");  // Marks the end.
  auto evs = collect(*mon, [](const auto& e) { return has(e, LinkEventType::kAdded, "ct-marker"); });
  ASSERT_TRUE(has(evs, LinkEventType::kAdded, "ct-marker"));
  EXPECT_FALSE(has(evs, LinkEventType::kRemoved, "ct-a"));
  EXPECT_FALSE(has(evs, LinkEventType::kAdded, "ct-a"));
  EXPECT_TRUE(has(evs, LinkEventType::kChanged, "ct-a"));
  EXPECT_EQ(mon->links().count(ip_ifindex("ct-a")), 1u);
}

TEST_F(LinkNetns, MonitorOverflowIsResyncedFromTheDeviceList) {
  sh("ip link add ct-gone type veth peer name ct-gone2");
  auto mon = LinkMonitor::open();
  ASSERT_TRUE(mon.ok()) << mon.message();
  // Shrink the socket's buffer (the smallest the kernel allows) so that a
  // burst of notifications overflows it.
  int tiny = 1;
  ASSERT_EQ(setsockopt(mon->borrow_fd_do_not_close(), SOL_SOCKET, SO_RCVBUF, &tiny, sizeof(tiny)), 0);
  std::string batch;
  for (int i = 0; i < 40; ++i)
    batch += "link add ct-v" + std::to_string(i) + " type veth peer name ct-p" + std::to_string(i) + "\n";
  batch += "link del ct-gone\n";
  FILE* ip = popen("ip -batch - >/dev/null 2>&1", "w");
  ASSERT_NE(ip, nullptr);
  ASSERT_GE(fputs(batch.c_str(), ip), 0);
  ASSERT_EQ(pclose(ip), 0);

  LinkDrainStats total;
  auto evs = collect(
      *mon,
      [](const auto& e) {
        return has(e, LinkEventType::kAdded, "ct-v39") && has(e, LinkEventType::kAdded, "ct-p39") &&
               has(e, LinkEventType::kRemoved, "ct-gone");
      },
      &total);
  EXPECT_GE(total.resyncs, 1u) << "the burst did not overflow the socket";
  for (int i = 0; i < 40; ++i) {
    EXPECT_TRUE(has(evs, LinkEventType::kAdded, "ct-v" + std::to_string(i))) << i;
    EXPECT_TRUE(has(evs, LinkEventType::kAdded, "ct-p" + std::to_string(i))) << i;
  }
  EXPECT_TRUE(has(evs, LinkEventType::kRemoved, "ct-gone"));
  EXPECT_TRUE(has(evs, LinkEventType::kRemoved, "ct-gone2"));
  EXPECT_EQ(mon->links().size(), 1u + 80u);  // lo and the 40 pairs.
}

}  // namespace
}  // namespace ctoffload::netlink
