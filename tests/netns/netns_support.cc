// netns_support.cc - shared helpers of the real-kernel tests.
#include "netns_support.h"

#include <gtest/gtest.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

namespace ctoffload::testing {

int run(const std::string& cmd) {
  int st = std::system(cmd.c_str());  // NOLINT(concurrency-mt-unsafe): tests are single-threaded.
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

std::string output_of(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

bool set_effective_capability(int cap, bool on) {
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &hdr, data) != 0) return false;
  const unsigned bit = 1u << (cap % 32);
  if (on) {
    data[cap / 32].effective |= bit;
  } else {
    data[cap / 32].effective &= ~bit;
  }
  return syscall(SYS_capset, &hdr, data) == 0;
}

ino_t netns_inode(const char* path) {
  struct stat st {};
  return stat(path, &st) == 0 ? st.st_ino : 0;
}

std::string devices_besides_lo() {
  std::string out;
  struct if_nameindex* all = if_nameindex();
  if (all == nullptr) return "?";
  for (const struct if_nameindex* i = all; i->if_index != 0; ++i) {
    if (std::string(i->if_name) == "lo") continue;
    if (!out.empty()) out += ",";
    out += i->if_name;
  }
  if_freenameindex(all);
  return out;
}

void assert_fresh_netns() {
  ASSERT_EQ(geteuid(), 0u) << "the netns tests need root: run them as root under `unshare -n`";
  const ino_t mine = netns_inode("/proc/self/ns/net");
  ASSERT_NE(mine, 0u) << "cannot read /proc/self/ns/net";
  ASSERT_NE(mine, netns_inode("/proc/1/ns/net"))
      << "refusing to run in PID 1's network namespace: run under `unshare -n`";
  const std::string others = devices_besides_lo();
  ASSERT_EQ(others, "") << "refusing to run in a network namespace with devices (" << others
                        << "): run under `unshare -n`";
}

void assert_tools() {
  ASSERT_EQ(run("nft --version >/dev/null 2>&1"), 0) << "the `nft` tool is needed";
  ASSERT_EQ(run("conntrack --version >/dev/null 2>&1"), 0) << "the `conntrack` tool is needed";
  ASSERT_EQ(run("ip -V >/dev/null 2>&1"), 0) << "the `ip` tool is needed";
}

bool kernel_has_flowtables() {
  static const bool has = run("unshare -n sh -c 'nft add table inet probe && nft add flowtable inet probe f "
                              "\"{ hook ingress priority 0; }\"' >/dev/null 2>&1") == 0;
  return has;
}

bool require_flowtables() {
  const char* v = std::getenv("CTOFFLOAD_REQUIRE_FLOWTABLES");
  return v != nullptr && std::string(v) == "1";
}

}  // namespace ctoffload::testing
