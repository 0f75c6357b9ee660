// netns_support.h - what every real-kernel test needs: running the tools
// that check the kernel's side, and refusing to run outside a fresh
// network namespace.
#pragma once

#include <sys/types.h>

#include <string>

namespace ctoffload::testing {

// Runs 'cmd' with /bin/sh; returns its exit status (128 if it did not exit).
int run(const std::string& cmd);

// Runs 'cmd' with /bin/sh and returns what it printed on stdout.
std::string output_of(const std::string& cmd);

// The inode of the network namespace file 'path', or 0 when unreadable.
ino_t netns_inode(const char* path);

// The devices of the caller's namespace other than "lo", comma-separated.
std::string devices_besides_lo();

// Fails the calling test (gtest ASSERTs) unless we are root, not in PID 1's
// network namespace (where that can be read), and in a namespace holding no
// device but lo, as one fresh from `unshare -n` does.
void assert_fresh_netns();

// Fails the calling test unless the tools the tests check the kernel with
// (nft, conntrack, ip) are installed.
void assert_tools();

// Whether this kernel can make an nftables flowtable.  The oracle is
// independent of the library: the `nft` tool creating one in a scratch
// namespace (so nothing stays), asked once per process.
bool kernel_has_flowtables();

// capset(2) without libcap, on the calling thread only: capability 'cap'
// out of (or back into) the effective set; the permitted set keeps it.
// False when the kernel refused.
bool set_effective_capability(int cap, bool on);

// CTOFFLOAD_REQUIRE_FLOWTABLES=1: a test that needs flowtables must fail
// rather than skip where the kernel has none (the VM stages set it).
bool require_flowtables();

}  // namespace ctoffload::testing
