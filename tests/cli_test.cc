// cli_test.cc - ctoffloadctl: parsing, usage errors, exit codes, JSON
// shape, batch files.  Runs with --providers software so it needs no
// privileges or flowtables.
#include "cli/cli.h"

#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli/json.h"

namespace ctoffload::cli {
namespace {

struct Run {
  int rc;
  std::string out, err;
};

Run ctl(std::vector<std::string> args) {
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
      {{"add", "--proto", "tcp", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2"}, "--iif"},
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

TEST(CliParse, SplitWordsDropsCommentsAndBlanks) {
  EXPECT_EQ(split_words("  add  --iif a\t--zone 1 # comment"),
            (std::vector<std::string>{"add", "--iif", "a", "--zone", "1"}));
  EXPECT_TRUE(split_words("# only a comment").empty());
  EXPECT_TRUE(split_words("").empty());
}

TEST(CliParse, TimesAreIsoUtcOrNever) {
  EXPECT_EQ(format_time_ms(0), "never");
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
  auto add = ctl({"--providers", "software", "add", "--proto", "tcp", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2"});
  EXPECT_EQ(add.rc, kExitUsage);
  EXPECT_NE(add.err.find("add needs --iif DEV"), std::string::npos) << add.err;
  auto prov = ctl({"--providers", "warp", "probe"});
  EXPECT_EQ(prov.rc, kExitUsage);
  EXPECT_NE(prov.err.find("unknown provider 'warp'"), std::string::npos) << prov.err;
}

TEST(CliRun, GlobalOptionsMayFollowTheCommand) {
  auto r = ctl({"probe", "-j", "--providers", "software"});
  EXPECT_EQ(r.rc, kExitOk) << r.err;
  EXPECT_EQ(r.out.rfind("{", 0), 0u) << "-j after the command gives JSON: " << r.out;
  EXPECT_NE(r.out.find("\"name\":\"software\""), std::string::npos) << r.out;
  auto add = ctl({"add", "--iif", "lo", "--proto", "udp", "--src", "10.0.0.1:1", "--dst", "10.0.0.2:2",
                  "--providers=software", "--json"});
  EXPECT_EQ(add.rc, kExitOk) << add.err;
  EXPECT_NE(add.out.find("\"provider\":\"software\""), std::string::npos) << add.out;
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
  std::remove(path);
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
  std::remove(path);
  EXPECT_EQ(r.rc, kExitOk) << r.out << r.err;
  EXPECT_NE(r.out.find("\"ok\":51,\"failed\":0"), std::string::npos) << r.out;
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

}  // namespace
}  // namespace ctoffload::cli
