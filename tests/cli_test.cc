// cli_test.cc - ctoffloadctl: parsing, usage errors, exit codes, JSON
// shape, batch files and streams.  Runs with --providers software so it
// needs no privileges or flowtables; the tests of the default providers
// drop CAP_NET_ADMIN so that the kernel provider cannot start anywhere.
#include "cli/cli.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "cli/json.h"
#include "cli/line_reader.h"

namespace ctoffload::cli {
namespace {

struct Run {
  int rc;
  std::string out, err;
};

Run ctl(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  int rc = run(args, out, err);
  return {rc, out.str(), err.str()};
}

TEST(CliParse, AddWithEverything) {
  auto op = parse_op({"add", "--iif", "veth0", "--proto", "udp", "--src", "[fd00::1]:5000", "--dst=[fd00::2]:53",
                      "--reply-src", "[fd00::2]:53", "--reply-dst", "[fd00::9]:6000", "--zone", "4"});
  ASSERT_TRUE(op.ok()) << op.message();
  EXPECT_EQ(op->type, CT_OFFLOAD_OP_ADD);
  EXPECT_EQ(op->conn.proto, IPPROTO_UDP);
  EXPECT_EQ(op->conn.zone, 4);
  EXPECT_TRUE(op->has_dev);
  EXPECT_STREQ(op->dev.name, "veth0");
  EXPECT_EQ(op->conn.reply.dst_port, 6000);
}

TEST(CliParse, ErrorsNameTheOption) {
  struct Case {
    std::vector<std::string> words;
    std::string says;
  } cases[] = {
      {{"add", "--iif", "x", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2"}, "--proto"},
      {{"del", "--proto", "tcp", "--dst", "10.0.0.2:2"}, "--src"},
      {{"del", "--proto", "tcp", "--src", "10.0.0.1:1", "--dst", "bad:2"}, "--dst"},
      {{"del", "--proto", "tcp", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2", "--zone", "70000"}, "--zone"},
      {{"del", "--proto", "tcp", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2", "--reply-src", "10.0.0.2:2"},
       "go together"},
      {{"del", "--proto", "tcp", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2", "--colour", "red"}, "--colour"},
      {{"del", "--proto", "tcp", "--src"}, "needs a value"},
      {{"add", "--iif", "this-name-is-too-long", "--proto", "tcp", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2"},
       "--iif"},
      {{"flush", "--now"}, "flush takes no options"},
      {{"teleport"}, "unknown operation"},
  };
  for (const auto& c : cases) {
    auto op = parse_op(c.words);
    EXPECT_EQ(op.err(), EINVAL) << c.words[0];
    EXPECT_NE(op.message().find(c.says), std::string::npos) << op.message();
  }
  EXPECT_EQ(parse_op({"add", "--iif", "x", "--proto", "icmp", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2"}).err(),
            EPROTONOSUPPORT);
}

TEST(CliParse, AddWithoutIifLeavesTheDeviceToTheRoute) {
  auto op = parse_op({"add", "--proto", "tcp", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2"});
  ASSERT_TRUE(op.ok()) << op.message();
  EXPECT_EQ(op->type, CT_OFFLOAD_OP_ADD);
  EXPECT_FALSE(op->has_dev);
}

TEST(CliParse, SplitWordsDropsCommentsAndBlanks) {
  EXPECT_EQ(split_words("  add  --iif a\t--zone 1 # comment"),
            (std::vector<std::string>{"add", "--iif", "a", "--zone", "1"}));
  EXPECT_TRUE(split_words("# only a comment").empty());
  EXPECT_TRUE(split_words("").empty());
}

TEST(CliParse, TimesAreIsoUtcOrNever) {
  EXPECT_EQ(format_time_ms(0), "unknown");
  EXPECT_EQ(format_time_ms(1700000000123), "2023-11-14T22:13:20.123Z");
}

TEST(CliJson, StringsAreEscaped) {
  JsonWriter j;
  j.begin_object()
      .field("a\"b", std::string("line\nbreak\\\x01"))
      .key("n")
      .begin_array()
      .value(1)
      .value(true)
      .end_array();
  j.end_object();
  EXPECT_EQ(j.str(), "{\"a\\\"b\":\"line\\nbreak\\\\\\u0001\",\"n\":[1,true]}");
}

TEST(CliRun, HelpForEveryCommandExitsZero) {
  EXPECT_EQ(ctl({"--help"}).rc, kExitOk);
  for (const char* cmd : {"probe", "add", "del", "show", "update", "flush", "batch", "watch"}) {
    auto r = ctl({cmd, "--help"});
    EXPECT_EQ(r.rc, kExitOk) << cmd;
    EXPECT_NE(r.out.find(std::string("usage: ctoffloadctl ") + cmd), std::string::npos) << r.out;
  }
}

TEST(CliRun, UsageErrorsExitTwoWithAHint) {
  auto none = ctl({});
  EXPECT_EQ(none.rc, kExitUsage);
  EXPECT_NE(none.err.find("missing command"), std::string::npos);
  auto bogus = ctl({"bogus"});
  EXPECT_EQ(bogus.rc, kExitUsage);
  EXPECT_NE(bogus.err.find("unknown command 'bogus'"), std::string::npos);
  auto opt = ctl({"--frobnicate", "probe"});
  EXPECT_EQ(opt.rc, kExitUsage);
  auto add = ctl({"--providers", "software", "add", "--iif", "lo", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2"});
  EXPECT_EQ(add.rc, kExitUsage);
  EXPECT_NE(add.err.find("add needs --proto"), std::string::npos) << add.err;
  auto prov = ctl({"--providers", "warp", "probe"});
  EXPECT_EQ(prov.rc, kExitUsage);
  EXPECT_NE(prov.err.find("unknown provider 'warp'"), std::string::npos) << prov.err;
}

TEST(CliRun, GlobalOptionsMayFollowTheCommand) {
  auto r = ctl({"probe", "-j", "--providers", "software"});
  EXPECT_EQ(r.rc, kExitOk) << r.err;
  EXPECT_EQ(r.out.rfind('{', 0), 0u) << "-j after the command gives JSON: " << r.out;
  EXPECT_NE(r.out.find("\"name\":\"software\""), std::string::npos) << r.out;
  auto add = ctl({"add", "--iif", "lo", "--proto", "udp", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2",
                  "--providers=software", "--json"});
  EXPECT_EQ(add.rc, kExitOk) << add.err;
  EXPECT_NE(add.out.find("\"provider\":\"software\""), std::string::npos) << add.out;
}

TEST(CliRun, OptionSetsAnyConfigurationKeyAndABadOneIsAUsageError) {
  auto ok = ctl({"--providers", "software", "-o", "software.capacity=1", "add", "--iif", "lo", "--proto", "tcp",
                 "--src", "10.0.0.1:1000", "--dst", "10.0.0.2:80"});
  EXPECT_EQ(ok.rc, kExitOk) << ok.err;
  auto bad_key = ctl({"--providers", "software", "-o", "software.speed=11", "show"});
  EXPECT_EQ(bad_key.rc, kExitUsage);
  EXPECT_NE(bad_key.err.find("software.speed"), std::string::npos) << bad_key.err;
  auto bad_value = ctl({"--option", "nft_flowtable.capacity=0", "show"});
  EXPECT_EQ(bad_value.rc, kExitUsage);
  EXPECT_NE(bad_value.err.find("nft_flowtable.capacity=0"), std::string::npos) << bad_value.err;
  auto no_eq = ctl({"-o", "capacity", "show"});
  EXPECT_EQ(no_eq.rc, kExitUsage);
  EXPECT_NE(no_eq.err.find("KEY=VALUE"), std::string::npos) << no_eq.err;
}

TEST(CliRun, TheCommandsUsageIsCheckedBeforeTheProvidersStart) {
  // An unknown provider is a usage error too, but only once the registry
  // starts; the command's own mistake is reported first, without starting it.
  auto r = ctl({"--providers", "warp", "show", "--bogus"});
  EXPECT_EQ(r.rc, kExitUsage);
  EXPECT_NE(r.err.find("unknown option '--bogus' for show"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("warp"), std::string::npos) << r.err;
}

TEST(CliRun, AddThroughTheSoftwareProviderSaysWhoTookIt) {
  auto r = ctl({"-j", "--providers", "software", "add", "--iif", "lo", "--proto", "tcp", "--src", "10.0.0.1:1000",
                "--dst", "10.0.0.2:80"});
  EXPECT_EQ(r.rc, kExitOk) << r.err;
  EXPECT_NE(r.out.find("\"ok\":true"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"provider\":\"software\""), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\"mode\":\"sw\""), std::string::npos) << r.out;
}

TEST(CliRun, DelOfUnknownConnectionExitsOneWithEnoent) {
  auto r = ctl({"--providers", "software", "del", "--proto", "tcp", "--src", "10.0.0.1:1000", "--dst", "10.0.0.2:80"});
  EXPECT_EQ(r.rc, kExitFailed);
  EXPECT_NE(r.err.find("ENOENT"), std::string::npos) << r.err;
}

TEST(CliRun, ProbeJsonHasTheDocumentedShape) {
  auto r = ctl({"-j", "--providers", "software", "probe"});
  EXPECT_EQ(r.rc, kExitOk) << r.err;
  for (const char* k : {"\"flowtable\":", "\"reason\":\"", "\"providers\":[", "\"name\":\"software\""}) {
    EXPECT_NE(r.out.find(k), std::string::npos) << k << " in " << r.out;
  }
}

TEST(CliRun, BatchReportsBadLinesByNumberAndRunsTheRest) {
  char path[] = "/tmp/ctoffload-batch-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << "# a batch\n"
      << "add --iif lo --proto tcp --src 10.0.0.1:1000 --dst 10.0.0.2:80\n"
      << "add --iif lo --proto tcp --src 10.0.0.1:1000\n"  // line 3: no --dst
      << "\n"
      << "add --iif lo --proto tcp --src 10.0.0.1:1001 --dst 10.0.0.2:80\n"
      << "update --proto tcp --src 10.0.0.1:1000 --dst 10.0.0.2:80\n"  // never hit: ENODATA
      << "launch --proto tcp\n"                                        // line 7: unknown op
      << "del --proto tcp --src 10.0.0.1:1001 --dst 10.0.0.2:80\n";
  }
  auto r = ctl({"--providers", "software", "batch", path});
  (void)std::remove(path);
  EXPECT_EQ(r.rc, kExitFailed);
  EXPECT_NE(r.out.find("line 2: ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("line 3: error EINVAL: add needs --dst"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("line 5: ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("line 6: error ENODATA"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("line 7: error EINVAL: unknown operation 'launch'"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("line 8: ok"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("3 ok, 3 failed"), std::string::npos) << r.out;
}

TEST(CliRun, BatchOfOnlyGoodLinesExitsZeroAndJsonCountsThem) {
  char path[] = "/tmp/ctoffload-batch-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    for (int i = 0; i < 50; ++i) {
      f << "add --iif lo --proto udp --src [fd00::1]:" << 1000 + i << " --dst [fd00::2]:53\n";
    }
    f << "flush\n";
  }
  auto r = ctl({"-j", "--providers", "software", "batch", "--batch-size", "7", path});
  (void)std::remove(path);
  EXPECT_EQ(r.rc, kExitOk) << r.out << r.err;
  // JSON Lines: 51 results, then the summary as the last line.
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 52) << r.out;
  EXPECT_NE(r.out.find("\n{\"ok\":51,\"failed\":0}\n"), std::string::npos) << r.out;
}

TEST(CliRun, BatchFileThatDoesNotExistExitsOne) {
  auto r = ctl({"--providers", "software", "batch", "/nonexistent/ops.txt"});
  EXPECT_EQ(r.rc, kExitFailed);
  EXPECT_NE(r.err.find("/nonexistent/ops.txt"), std::string::npos);
}

TEST(CliRun, ShowWithoutTheKernelProviderSaysSo) {
  auto r = ctl({"-j", "--providers", "software", "show"});
  EXPECT_EQ(r.rc, kExitFailed);
  EXPECT_NE(r.out.find("{\"connections\":[]"), std::string::npos) << r.out;
}

// ---- Streaming batch ----
//
// These feed `batch` through a fifo the test keeps open, as a daemon or a
// script would, and look for each answer before the input ends.  Waits are
// bounded generously; none asserts how fast an answer came.

constexpr auto kPatience = std::chrono::seconds(30);

// Output that one thread writes while another reads it.
class SharedOutput : public std::streambuf {
 public:
  std::string text() {
    std::lock_guard lock(mu_);
    return text_;
  }
  // Waits (at most kPatience) until the output contains 'what'; the output
  // at that moment, or nullopt when it never did.
  std::optional<std::string> wait_for(const std::string& what) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, kPatience, [&] { return text_.find(what) != std::string::npos; })) return std::nullopt;
    return text_;
  }

 protected:
  int_type overflow(int_type c) override {
    if (c != traits_type::eof()) {
      const char ch = traits_type::to_char_type(c);
      xsputn(&ch, 1);
    }
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    {
      std::lock_guard lock(mu_);
      text_.append(s, static_cast<size_t>(n));
    }
    cv_.notify_all();
    return n;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::string text_;
};

// `ctoffloadctl --providers software [-j] batch OPTIONS... FIFO` on a
// thread of its own, fed through a fifo this object holds open.
class StreamedBatch {
 public:
  explicit StreamedBatch(std::vector<std::string> options, bool json = false) {
    char tmpl[] = "/tmp/ctoffload-cli-XXXXXX";
    const char* d = mkdtemp(tmpl);
    if (d == nullptr) throw std::runtime_error("mkdtemp failed");
    dir_ = d;
    fifo_ = dir_ + "/ops";
    if (mkfifo(fifo_.c_str(), 0600) != 0) throw std::runtime_error("mkfifo failed");
    std::vector<std::string> args{"--providers", "software"};
    if (json) args.emplace_back("-j");
    args.emplace_back("batch");
    args.insert(args.end(), options.begin(), options.end());
    args.push_back(fifo_);
    thread_ = std::thread([this, args] {
      std::ostream o(&out), e(&err);
      rc_ = run(args, o, e);
    });
    // Non-blocking, so a batch that never opens its end cannot hang the
    // test: ENXIO until it does.
    const auto deadline = std::chrono::steady_clock::now() + kPatience;
    while ((fd_ = open(fifo_.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0 && errno == ENXIO &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (fd_ >= 0) (void)fcntl(fd_, F_SETFL, 0);
  }
  ~StreamedBatch() {
    (void)finish();
    unlink(fifo_.c_str());
    rmdir(dir_.c_str());
  }
  StreamedBatch(const StreamedBatch&) = delete;
  StreamedBatch& operator=(const StreamedBatch&) = delete;

  bool writable() const { return fd_ >= 0; }
  void write(std::string_view text) const {
    ASSERT_EQ(::write(fd_, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  }
  // Ends the input and waits for the batch to end; its exit status.
  int finish() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    if (thread_.joinable()) thread_.join();
    return rc_;
  }

  SharedOutput out, err;

 private:
  std::string dir_, fifo_;
  int fd_ = -1;
  std::thread thread_;
  int rc_ = -1;
};

std::string add_line(int port) {
  return "add --iif lo --proto tcp --src 10.0.0.1:" + std::to_string(port) + " --dst 10.0.0.2:80\n";
}

TEST(CliBatchStream, ALineIsAnsweredWhileTheInputStaysOpen) {
  StreamedBatch b({});
  ASSERT_TRUE(b.writable());
  b.write(add_line(1000));
  auto seen = b.out.wait_for("line 1: ok\n");
  ASSERT_TRUE(seen) << "no answer to line 1 while the fifo is open: '" << b.out.text() << "' " << b.err.text();
  EXPECT_EQ(seen->find(" failed"), std::string::npos) << "summary before the end of input: " << *seen;
  b.write(add_line(1001));
  EXPECT_TRUE(b.out.wait_for("line 2: ok\n")) << b.out.text();
  EXPECT_EQ(b.finish(), kExitOk) << b.err.text();
  EXPECT_EQ(b.out.text(), "line 1: ok\nline 2: ok\n2 ok, 0 failed\n");
}

TEST(CliBatchStream, ABatchGoesOutWhenItReachesBatchSize) {
  // A quiet time of a minute: only the batch size can send lines 1-2 early.
  StreamedBatch b({"--batch-size", "2", "--flush-ms", "60000"});
  ASSERT_TRUE(b.writable());
  b.write(add_line(1000) + add_line(1001) + add_line(1002));
  auto seen = b.out.wait_for("line 2: ok\n");
  ASSERT_TRUE(seen) << "a full batch of 2 was not answered: '" << b.out.text() << "' " << b.err.text();
  EXPECT_EQ(*seen, "line 1: ok\nline 2: ok\n") << "line 3 waits for its batch to fill or the input to end";
  EXPECT_EQ(b.finish(), kExitOk) << b.err.text();
  EXPECT_EQ(b.out.text(), "line 1: ok\nline 2: ok\nline 3: ok\n3 ok, 0 failed\n");
}

TEST(CliBatchStream, FlushMsZeroAnswersEachLineWithoutWaitingForMore) {
  StreamedBatch b({"--flush-ms", "0"});
  ASSERT_TRUE(b.writable());
  for (int i = 1; i <= 3; ++i) {
    b.write(add_line(1000 + i));
    EXPECT_TRUE(b.out.wait_for("line " + std::to_string(i) + ": ok\n")) << b.out.text() << b.err.text();
  }
  EXPECT_EQ(b.finish(), kExitOk) << b.err.text();
}

TEST(CliBatchStream, ABadLineMidStreamIsAnsweredAndTheRestStillRun) {
  StreamedBatch b({});
  ASSERT_TRUE(b.writable());
  b.write(add_line(1000));
  ASSERT_TRUE(b.out.wait_for("line 1: ok\n")) << b.out.text();
  b.write("add --iif lo --proto tcp --src 10.0.0.1:1001\n");
  ASSERT_TRUE(b.out.wait_for("line 2: error EINVAL: add needs --dst ADDR:PORT\n")) << b.out.text();
  b.write("\n# a comment gives no answer\n" + add_line(1002));
  ASSERT_TRUE(b.out.wait_for("line 5: ok\n")) << b.out.text();
  EXPECT_EQ(b.finish(), kExitFailed);
  EXPECT_NE(b.out.text().find("\n2 ok, 1 failed\n"), std::string::npos) << b.out.text();
}

TEST(CliBatchStream, ALastLineWithoutNewlineIsRunAtTheEndOfInput) {
  StreamedBatch b({});
  ASSERT_TRUE(b.writable());
  std::string line = add_line(1000);
  line.pop_back();
  b.write(line);
  EXPECT_EQ(b.finish(), kExitOk) << b.err.text();
  EXPECT_EQ(b.out.text(), "line 1: ok\n1 ok, 0 failed\n");
}

TEST(CliBatchStream, JsonIsOneObjectPerLineAsSoonAsItIsKnown) {
  StreamedBatch b({}, /*json=*/true);
  ASSERT_TRUE(b.writable());
  b.write(add_line(1000));
  ASSERT_TRUE(b.out.wait_for("}\n")) << b.out.text() << b.err.text();
  EXPECT_EQ(b.out.text(),
            "{\"line\":1,\"ok\":true,\"op\":\"add\",\"connection\":\"tcp 10.0.0.1:1000 -> 10.0.0.2:80 zone 0\"}\n");
  b.write("update --proto tcp --src 10.0.0.1:1000 --dst 10.0.0.2:80\nteleport\n");
  EXPECT_EQ(b.finish(), kExitFailed);
  std::istringstream lines(b.out.text());
  std::vector<std::string> got;
  for (std::string l; std::getline(lines, l);) got.push_back(l);
  ASSERT_EQ(got.size(), 4u) << b.out.text();
  // Never hit, so no last used: ENODATA, as the RFC's UPD says.
  EXPECT_EQ(got[1].rfind("{\"line\":2,\"ok\":false,\"op\":\"update\",", 0), 0u) << got[1];
  EXPECT_NE(got[1].find("\"errno\":\"ENODATA\""), std::string::npos) << got[1];
  EXPECT_EQ(got[2].rfind("{\"line\":3,\"ok\":false,\"errno\":\"EINVAL\",\"error\":\"unknown operation 'teleport'", 0),
            0u)
      << got[2];
  EXPECT_EQ(got[3], "{\"ok\":1,\"failed\":2}");
}

TEST(CliBatchStream, AnOverlongLineIsAnErrorAndTheNextLineRuns) {
  char path[] = "/tmp/ctoffload-batch-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << "#" << std::string(4095, 'x') << "\n"  // 4096 bytes: a comment, no answer
      << "#" << std::string(4096, 'x') << "\n"  // 4097 bytes: too long
      << add_line(1000);
  }
  auto r = ctl({"--providers", "software", "batch", path});
  (void)std::remove(path);
  EXPECT_EQ(r.rc, kExitFailed);
  EXPECT_EQ(r.out, "line 2: error EINVAL: line longer than 4096 bytes\nline 3: ok\n1 ok, 1 failed\n");
}

TEST(CliBatchStream, BadStreamOptionsAreUsageErrors) {
  for (const char* v : {"60001", "-1", "soon"}) {
    auto r = ctl({"--providers", "software", "batch", "--flush-ms", v, "/dev/null"});
    EXPECT_EQ(r.rc, kExitUsage) << v;
    EXPECT_NE(r.err.find("--flush-ms"), std::string::npos) << r.err;
  }
}

// A stream that refuses every write, as std::cout does once its reader has
// gone (EPIPE).
class ClosedOutput : public std::streambuf {
 protected:
  int_type overflow(int_type) override { return traits_type::eof(); }
  std::streamsize xsputn(const char*, std::streamsize) override { return 0; }
};

TEST(CliBatchStream, AClosedOutputEndsTheBatchQuietlyWithStatusOne) {
  char path[] = "/tmp/ctoffload-batch-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    for (int i = 0; i < 3; ++i) f << add_line(1000 + i);
  }
  ClosedOutput closed;
  std::ostream out(&closed);
  std::ostringstream err;
  const int rc = run({"--providers", "software", "batch", "--batch-size", "1", path}, out, err);
  (void)std::remove(path);
  EXPECT_EQ(rc, kExitFailed);
  EXPECT_EQ(err.str(), "");
}

// ---- LineReader ----

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) == 0) {
      r = fds[0];
      w = fds[1];
    }
  }
  ~Pipe() {
    if (r >= 0) close(r);
    close_write();
  }
  void close_write() {
    if (w >= 0) close(w);
    w = -1;
  }
  void put(std::string_view s) const { ASSERT_EQ(write(w, s.data(), s.size()), static_cast<ssize_t>(s.size())); }
};

TEST(CliLineReader, ALineSplitAcrossReadsIsOneLine) {
  Pipe p;
  ASSERT_GE(p.r, 0);
  LineReader reader(p.r, 4096);
  std::vector<InputLine> lines;
  p.put("ab");
  ASSERT_EQ(*reader.read(-1, lines), LineReader::Event::kInput);
  EXPECT_TRUE(lines.empty()) << "a line without its newline is not complete while input may follow";
  p.put("c\nd\n");
  ASSERT_EQ(*reader.read(-1, lines), LineReader::Event::kInput);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0].number, 1u);
  EXPECT_EQ(lines[0].text, "abc");
  EXPECT_EQ(lines[1].number, 2u);
  EXPECT_EQ(lines[1].text, "d");
}

TEST(CliLineReader, NothingToReadIsATimeout) {
  Pipe p;
  ASSERT_GE(p.r, 0);
  LineReader reader(p.r, 4096);
  std::vector<InputLine> lines;
  EXPECT_EQ(*reader.read(1, lines), LineReader::Event::kTimeout);
  EXPECT_TRUE(lines.empty());
}

TEST(CliLineReader, TheEndOfInputCompletesAPartialLine) {
  Pipe p;
  ASSERT_GE(p.r, 0);
  LineReader reader(p.r, 4096);
  std::vector<InputLine> lines;
  p.put("x\ny");
  p.close_write();
  auto ev = reader.read(-1, lines);
  while (ev && *ev == LineReader::Event::kInput) ev = reader.read(-1, lines);
  ASSERT_TRUE(ev) << ev.message();
  EXPECT_EQ(*ev, LineReader::Event::kEnd);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[1].text, "y");
  EXPECT_EQ(lines[1].number, 2u);
}

TEST(CliLineReader, AnOverlongLineKeepsItsNumberAndDropsItsText) {
  Pipe p;
  ASSERT_GE(p.r, 0);
  LineReader reader(p.r, 4);
  std::vector<InputLine> lines;
  p.put("1234\n123");  // The second line is over the limit only once it goes on.
  ASSERT_EQ(*reader.read(-1, lines), LineReader::Event::kInput);
  p.put("45\nok\n");
  ASSERT_EQ(*reader.read(-1, lines), LineReader::Event::kInput);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_FALSE(lines[0].too_long);
  EXPECT_EQ(lines[0].text, "1234");
  EXPECT_TRUE(lines[1].too_long);
  EXPECT_EQ(lines[1].text, "");
  EXPECT_FALSE(lines[2].too_long);
  EXPECT_EQ(lines[2].number, 3u);
}

TEST(CliLineReader, AReadErrorIsReturnedWithItsErrno) {
  // A directory opens for reading; read(2) then fails with EISDIR.
  const int fd = open("/", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  LineReader reader(fd, 4096);
  std::vector<InputLine> lines;
  auto ev = reader.read(-1, lines);
  close(fd);
  EXPECT_EQ(ev.err(), EISDIR);
}

// ---- Which providers a command uses ----

// Takes CAP_NET_ADMIN out of this thread's effective set while it lives,
// so that the kernel provider cannot start on any host (EPERM), and puts it
// back if it was there.
class WithoutNetAdmin {
 public:
  WithoutNetAdmin() {
    if (syscall(SYS_capget, &hdr_, data_) != 0) return;
    had_ = (data_[0].effective & (1u << CAP_NET_ADMIN)) != 0;
    data_[0].effective &= ~(1u << CAP_NET_ADMIN);
    ok_ = syscall(SYS_capset, &hdr_, data_) == 0;
  }
  ~WithoutNetAdmin() {
    if (!ok_ || !had_) return;
    data_[0].effective |= 1u << CAP_NET_ADMIN;
    (void)syscall(SYS_capset, &hdr_, data_);
  }
  WithoutNetAdmin(const WithoutNetAdmin&) = delete;
  WithoutNetAdmin& operator=(const WithoutNetAdmin&) = delete;
  bool ok() const { return ok_; }

 private:
  __user_cap_header_struct hdr_{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data_[2]{};
  bool had_ = false, ok_ = false;
};

TEST(CliProviders, WithoutProvidersAnAddTheKernelRefusesFailsAndNothingElseTakesIt) {
  WithoutNetAdmin drop;
  ASSERT_TRUE(drop.ok());
  auto r = ctl({"add", "--iif", "lo", "--proto", "tcp", "--src", "10.0.0.1:1000", "--dst", "10.0.0.2:80"});
  EXPECT_EQ(r.rc, kExitFailed) << r.out << r.err;
  EXPECT_EQ(r.out, "") << "nothing may claim success";
  EXPECT_NE(r.err.find("nft_flowtable"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("(EPERM)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("CAP_NET_ADMIN"), std::string::npos) << "the kernel provider's reason: " << r.err;
  EXPECT_EQ(r.err.find("software provider took it"), std::string::npos) << r.err;
}

TEST(CliProviders, NamedSoftwareTakesTheAddAndSaysItLivesInThisProcessOnly) {
  WithoutNetAdmin drop;
  ASSERT_TRUE(drop.ok());
  auto r = ctl({"--providers", "nft_flowtable,software", "add", "--iif", "lo", "--proto", "tcp", "--src",
                "10.0.0.1:1000", "--dst", "10.0.0.2:80"});
  EXPECT_EQ(r.rc, kExitOk) << r.err;
  EXPECT_NE(r.out.find(": software (sw)"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("its cache lives in this process only"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("CAP_NET_ADMIN"), std::string::npos) << "why the kernel did not take it: " << r.err;
}

TEST(CliProviders, WithoutProvidersEveryDispatchingCommandFailsWhenTheKernelProviderCannotStart) {
  WithoutNetAdmin drop;
  ASSERT_TRUE(drop.ok());
  const std::vector<std::string> conn{"--proto", "tcp", "--src", "10.0.0.1:1000", "--dst", "10.0.0.2:80"};
  std::vector<std::vector<std::string>> commands{{"del"}, {"update"}, {"show"}, {"flush"}, {"batch", "/dev/null"}};
  commands[0].insert(commands[0].end(), conn.begin(), conn.end());
  commands[1].insert(commands[1].end(), conn.begin(), conn.end());
  for (const auto& c : commands) {
    auto r = ctl(c);
    EXPECT_EQ(r.rc, kExitFailed) << c[0] << ": " << r.out << r.err;
    EXPECT_NE(r.err.find("(EPERM)"), std::string::npos) << c[0] << ": " << r.err;
    EXPECT_EQ(r.out.find("ok"), std::string::npos) << c[0] << ": " << r.out;
  }
}

TEST(CliProviders, ProbeReportsEveryBuiltinAndWhichTheCommandsUse) {
  WithoutNetAdmin drop;
  ASSERT_TRUE(drop.ok());
  auto r = ctl({"-j", "probe"});
  EXPECT_EQ(r.rc, kExitOk) << r.err;
  EXPECT_NE(r.out.find("{\"name\":\"nft_flowtable\",\"fallback\":false,\"enabled\":true,\"available\":false}"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("{\"name\":\"software\",\"fallback\":true,\"enabled\":false,\"available\":true}"),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace ctoffload::cli
