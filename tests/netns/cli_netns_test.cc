// cli_netns_test.cc - the built ctoffloadctl against the real kernel, run
// as a child process the way an operator's script runs it: one process per
// command, exit status and output checked.
//
// Must run as root inside a network namespace of its own (`unshare -n`);
// it fails rather than skips without that.  Three groups:
//
//   CliNetns.*             any kernel.
//   CliNoKernelProvider.*  any kernel, with the kernel provider unable to
//                          start: on a kernel without flowtables (this
//                          machine's) as it is, on one with flowtables (the
//                          VM) by running ctoffloadctl without
//                          CAP_NET_ADMIN.  Nothing may report success then
//                          unless --providers names the software fallback,
//                          and the error names the kernel provider's reason.
//   CliFlowtable.*         a kernel with flowtables (the VM): one-shot
//                          commands agree across processes, bad devices and
//                          routes are refused with their errno.  Skipped
//                          where there are none, unless
//                          CTOFFLOAD_REQUIRE_FLOWTABLES=1, which makes them
//                          fail.
//
// Whether the kernel has flowtables is what `ctoffloadctl -j probe` says;
// CliNetns.ProbeAgreesWithAnIndependentOracle checks that against `nft`.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "netns_support.h"

#ifndef CTOFFLOAD_CTL
#error "CTOFFLOAD_CTL (the path of the built ctoffloadctl) must be defined by the build"
#endif

namespace ctoffload {
namespace {

using testing::assert_fresh_netns;
using testing::assert_tools;
using testing::output_of;
using testing::require_flowtables;
using testing::run;

// ---- Running ctoffloadctl ----

struct Exit {
  bool exited = false;  // False: killed by a signal.
  int status = -1;      // The exit status when 'exited'.
  std::string out, err;
};

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Waits for 'pid' and describes how it ended.
Exit reap(pid_t pid) {
  Exit e;
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  e.exited = WIFEXITED(st);
  e.status = e.exited ? WEXITSTATUS(st) : -1;
  return e;
}

class Scratch {
 public:
  Scratch() {
    char tmpl[] = "/tmp/ctoffload-cli-netns-XXXXXX";
    const char* d = mkdtemp(tmpl);
    dir_ = d != nullptr ? d : "/tmp";
  }
  ~Scratch() { (void)run("rm -rf '" + dir_ + "'"); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

 private:
  std::string dir_;
};

// Runs the program 'argv_s' (found in $PATH) with 'input' on its standard
// input.
Exit spawn(std::vector<std::string> argv_s, const std::string& input = "") {
  Scratch s;
  const std::string in = s.path("in"), out = s.path("out"), err = s.path("err");
  std::ofstream(in) << input;
  std::vector<char*> argv;
  argv.reserve(argv_s.size() + 1);
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int i = open(in.c_str(), O_RDONLY);
    const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (i < 0 || o < 0 || e < 0 || dup2(i, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0) _exit(127);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  Exit x = reap(pid);
  x.out = slurp(out);
  x.err = slurp(err);
  return x;
}

// Runs ctoffloadctl with 'args'.
Exit ctl(const std::vector<std::string>& args, const std::string& input = "") {
  std::vector<std::string> argv{CTOFFLOAD_CTL};
  argv.insert(argv.end(), args.begin(), args.end());
  return spawn(argv, input);
}

std::string describe(const Exit& e) {
  return (e.exited ? "exit " + std::to_string(e.status) : std::string("killed by a signal")) + "; stdout: '" + e.out +
         "'; stderr: '" + e.err + "'";
}

bool has(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

// What `ctoffloadctl -j probe` says about flowtables.
bool probe_says_flowtables() { return has(ctl({"-j", "probe"}).out, "\"flowtable\":true"); }

// The provider's table, devices and elements as nft shows them ("" when
// there is no table).
std::string provider_ruleset() { return output_of("nft -j list table inet ctoffload 2>/dev/null"); }

const std::vector<std::string> kConn{"--proto", "tcp", "--src", "10.9.1.2:40000", "--dst", "10.9.2.2:80"};

std::vector<std::string> with_conn(std::vector<std::string> words) {
  words.insert(words.end(), kConn.begin(), kConn.end());
  return words;
}

class CliNetns : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(assert_fresh_netns());
    ASSERT_NO_FATAL_FAILURE(assert_tools());
    // Two devices (veth: this host has no dummy driver), so that both
    // directions of kConn have a route: the client side 10.9.1.0/24 on d1,
    // the server side 10.9.2.0/24 on d2.
    ASSERT_EQ(run("ip -b - <<'EOF'\n"
                  "link set lo up\n"
                  "link add d1 type veth peer name d1p\n"
                  "link add d2 type veth peer name d2p\n"
                  "addr add 10.9.1.1/24 dev d1\n"
                  "addr add 10.9.2.1/24 dev d2\n"
                  "link set d1 up\nlink set d1p up\nlink set d2 up\nlink set d2p up\n"
                  "EOF"),
              0);
  }
  void TearDown() override {
    (void)run("nft delete table inet ctoffload 2>/dev/null; ip link del d1 2>/dev/null; ip link del d2 2>/dev/null");
  }
};

class CliNoKernelProvider : public CliNetns {
 protected:
  void SetUp() override {
    CliNetns::SetUp();
    if (HasFatalFailure()) return;
    flowtables_ = probe_says_flowtables();
    // Where the kernel has flowtables, only missing privileges stop the
    // kernel provider (scenario 15 checks the drop itself in the VM).
    reason_ = flowtables_ ? "CAP_NET_ADMIN" : "no nftables flowtables";
    errno_ = flowtables_ ? "(EPERM)" : "(ENOENT)";
  }
  // ctoffloadctl where the kernel provider cannot start.
  Exit crippled(const std::vector<std::string>& args) const {
    std::vector<std::string> argv;
    if (flowtables_) {
      argv = {"setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--bounding-set=-net_admin", "--"};
    }
    argv.emplace_back(CTOFFLOAD_CTL);
    argv.insert(argv.end(), args.begin(), args.end());
    return spawn(argv);
  }

  bool flowtables_ = false;
  std::string reason_, errno_;
};

class CliFlowtable : public CliNetns {
 protected:
  void SetUp() override {
    CliNetns::SetUp();
    if (HasFatalFailure()) return;
    if (!probe_says_flowtables()) {
      if (require_flowtables()) FAIL() << "CTOFFLOAD_REQUIRE_FLOWTABLES=1 but ctoffloadctl -j probe says no flowtables";
      GTEST_SKIP() << "ctoffloadctl -j probe says this kernel has no flowtables; run in the VM (scripts/vm/run.sh) "
                      "with CTOFFLOAD_REQUIRE_FLOWTABLES=1";
    }
  }
};

// ---- Any kernel ----

TEST_F(CliNetns, ProbeAgreesWithAnIndependentOracle) {
  EXPECT_EQ(probe_says_flowtables(), testing::kernel_has_flowtables());
}

TEST_F(CliNetns, BatchEndsQuietlyWithStatusOneWhenItsReaderGoes) {
  // stdout is a pipe whose read end is closed before the batch answers.
  int in[2], out[2];
  ASSERT_EQ(pipe2(in, O_CLOEXEC), 0);
  ASSERT_EQ(pipe2(out, O_CLOEXEC), 0);
  Scratch s;
  const std::string err = s.path("err");
  const pid_t pid = fork();
  if (pid == 0) {
    const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (e < 0 || dup2(in[0], 0) < 0 || dup2(out[1], 1) < 0 || dup2(e, 2) < 0) _exit(127);
    execl(CTOFFLOAD_CTL, CTOFFLOAD_CTL, "--providers", "software", "batch", "-", static_cast<char*>(nullptr));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  close(out[0]);
  const std::string line = "add --iif lo --proto tcp --src 10.0.0.1:1 --dst 10.0.0.2:80\n";
  ASSERT_EQ(write(in[1], line.data(), line.size()), static_cast<ssize_t>(line.size()));
  close(in[1]);
  const Exit x = reap(pid);
  EXPECT_TRUE(x.exited) << "killed by a signal (SIGPIPE?) instead of exiting";
  EXPECT_EQ(x.status, 1);
  EXPECT_EQ(slurp(err), "") << "a batch whose reader went away has nobody to tell";
}

// ---- The kernel provider cannot start ----

TEST_F(CliNoKernelProvider, AddFailsWithTheKernelProvidersReasonAndTheNextShowListsNothing) {
  const Exit add = crippled(with_conn({"add", "--iif", "d1"}));
  EXPECT_TRUE(add.exited && add.status == 1) << describe(add);
  EXPECT_EQ(add.out, "") << "nothing on stdout may claim success";
  EXPECT_TRUE(has(add.err, errno_)) << add.err;
  EXPECT_TRUE(has(add.err, reason_)) << add.err;
  EXPECT_FALSE(has(add.err, "took it")) << "the fallback was not asked for: " << add.err;

  // The next process (privileged where that makes the kernel provider
  // start) finds nothing: the add said so.
  const Exit show = ctl({"-j", "show"});
  EXPECT_TRUE(show.exited && show.status == (flowtables_ ? 0 : 1)) << describe(show);
  EXPECT_TRUE(has(show.out, "{\"connections\":[]")) << show.out;
  if (!flowtables_) {
    EXPECT_EQ(provider_ruleset(), "") << "a table was left behind";
  }
}

TEST_F(CliNoKernelProvider, AMissingDeviceFailsWithTheStartFailureNotSuccess) {
  // ENODEV is the kernel provider's verdict, and it cannot start: the add
  // fails with the reason it cannot, still without success.
  const Exit add = crippled(with_conn({"add", "--iif", "nosuchdev0"}));
  EXPECT_TRUE(add.exited && add.status == 1) << describe(add);
  EXPECT_EQ(add.out, "");
  EXPECT_TRUE(has(add.err, errno_)) << add.err;
}

TEST_F(CliNoKernelProvider, NamedSoftwareTakesTheAddAndSaysItEndsWithTheProcess) {
  const Exit add = crippled(with_conn({"--providers", "nft_flowtable,software", "add", "--iif", "d1"}));
  EXPECT_TRUE(add.exited && add.status == 0) << describe(add);
  EXPECT_TRUE(has(add.out, ": software (sw)")) << add.out;
  EXPECT_TRUE(has(add.err, "its cache lives in this process only")) << add.err;
  EXPECT_TRUE(has(add.err, reason_)) << "why the kernel did not take it: " << add.err;

  // And the next process agrees: nothing is offloaded in the kernel.
  const Exit show = ctl({"-j", "show"});
  EXPECT_TRUE(show.exited && show.status == (flowtables_ ? 0 : 1)) << describe(show);
  EXPECT_TRUE(has(show.out, "{\"connections\":[]")) << show.out;
}

// ---- With flowtables ----

TEST_F(CliFlowtable, AOneShotAddIsWhatTheNextProcessShows) {
  const Exit add = ctl(with_conn({"add", "--iif", "d1"}));
  ASSERT_TRUE(add.exited && add.status == 0) << describe(add);
  EXPECT_TRUE(has(add.out, "on d1: nft_flowtable (sw)")) << add.out;
  const Exit show = ctl({"-j", "show"});
  ASSERT_TRUE(show.exited && show.status == 0) << describe(show);
  EXPECT_TRUE(has(show.out, "\"src\":\"10.9.1.2:40000\",\"dst\":\"10.9.2.2:80\"")) << show.out;
  EXPECT_TRUE(has(show.out, "\"iif\":\"d1\"")) << show.out;
  const Exit del = ctl(with_conn({"del"}));
  ASSERT_TRUE(del.exited && del.status == 0) << describe(del);
  const Exit after = ctl({"-j", "show"});
  EXPECT_TRUE(has(after.out, "{\"connections\":[]")) << after.out;
}

TEST_F(CliFlowtable, AMissingDeviceIsEnodevAndInstallsNothing) {
  // The provider's table exists first, as it does for a running datapath.
  ASSERT_EQ(ctl({"-j", "show"}).status, 0);
  const std::string before = provider_ruleset();
  ASSERT_NE(before, "");
  const Exit add = ctl(with_conn({"add", "--iif", "nosuchdev0"}));
  EXPECT_TRUE(add.exited && add.status == 1) << describe(add);
  EXPECT_EQ(add.out, "");
  EXPECT_TRUE(has(add.err, "(ENODEV)")) << add.err;
  EXPECT_TRUE(has(add.err, "'nosuchdev0'")) << "the message names the device: " << add.err;
  EXPECT_EQ(provider_ruleset(), before) << "the failed add changed the kernel's table";
}

TEST_F(CliFlowtable, AnAddWithoutIifTakesTheDeviceOfTheRouteTowardsTheSource) {
  const Exit add = ctl(with_conn({"add"}));
  ASSERT_TRUE(add.exited && add.status == 0) << describe(add);
  EXPECT_TRUE(has(add.out, "on d1 (the route's): nft_flowtable")) << add.out;
  const Exit show = ctl({"-j", "show"});
  EXPECT_TRUE(has(show.out, "\"iif\":\"d1\"")) << show.out;
}

TEST_F(CliFlowtable, AnAddWithoutIifAndWithoutARouteFailsWithTheRoutesErrno) {
  ASSERT_EQ(ctl({"-j", "show"}).status, 0);
  const std::string before = provider_ruleset();
  const Exit add = ctl({"add", "--proto", "tcp", "--src", "192.0.2.7:40000", "--dst", "10.9.2.2:80"});
  EXPECT_TRUE(add.exited && add.status == 1) << describe(add);
  EXPECT_EQ(add.out, "");
  EXPECT_TRUE(has(add.err, "(ENETUNREACH)")) << add.err;
  EXPECT_TRUE(has(add.err, "route towards 192.0.2.7")) << add.err;
  EXPECT_EQ(provider_ruleset(), before);
}

}  // namespace
}  // namespace ctoffload
