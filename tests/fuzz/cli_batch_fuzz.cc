// cli_batch_fuzz.cc - fuzzes `ctoffloadctl batch FILE` end to end.
//
// Feeds: the input as a whole batch file, through
// cli::run({"--providers", "software", "batch", FILE}) (and with "-j" when
// the input's first byte is odd): the line reader, the per-line parser, the
// registry's batch dispatch into the software provider, and the result
// printer.  The software provider only: the kernel provider is never
// configured, so nothing leaves the process.  The file is a memfd, named by
// its /proc/self/fd path; nothing is written to disk.
//
// Checks, beyond not crashing:
//   * the exit status is 0 or 1, never a usage error, and nothing is
//     printed on the error stream;
//   * exactly one result line per line that holds a word or is over 4096
//     bytes, with N counting every line of the file, in order: without -j
//     "line N: ok|error ...", with -j (JSON Lines) an object starting
//     '{"line":N,"ok":true|false' on a line of its own (the JSON writer's
//     escaping is exercised by the echoed text); then the summary, "X ok,
//     Y failed" or '{"ok":X,"failed":Y}', with X + Y the number of those
//     lines, Y counting the failed ones, and the status 1 exactly when
//     Y > 0;
//   * a line whose words parse_op() refuses is reported as an error.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "cli/cli.h"
#include "fuzz_support.h"

namespace {

using namespace ctoffload;

struct Expected {
  size_t number;
  bool parse_error;
};

std::vector<Expected> expected_lines(std::string_view text) {
  std::vector<Expected> out;
  size_t number = 0;
  while (!text.empty()) {
    ++number;
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    if (line.size() > 4096) {
      out.push_back({number, true});
    } else if (auto words = cli::split_words(line); !words.empty()) {
      out.push_back({number, !cli::parse_op(words).ok()});
    }
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return -1;
  static const int fd = memfd_create("ctoffload-batch-fuzz", MFD_CLOEXEC);
  FUZZ_CHECK(fd >= 0, "memfd_create failed");
  FUZZ_CHECK(ftruncate(fd, 0) == 0, "ftruncate failed");
  FUZZ_CHECK(pwrite(fd, data, size, 0) == static_cast<ssize_t>(size), "pwrite failed");
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  const bool json = size > 0 && (data[0] & 1) != 0;

  std::vector<std::string> args{"--providers", "software", "batch", path};
  if (json) args.insert(args.begin(), "-j");
  std::ostringstream out, err;
  const int rc = cli::run(args, out, err);
  FUZZ_CHECK(rc == cli::kExitOk || rc == cli::kExitFailed, "exit status %d; stderr: %s", rc, err.str().c_str());
  FUZZ_CHECK(err.str().empty(), "stderr: %s", err.str().c_str());

  const std::vector<Expected> want = expected_lines(std::string_view(reinterpret_cast<const char*>(data), size));
  std::istringstream lines(out.str());
  std::string l;
  size_t failed = 0;
  for (const Expected& e : want) {
    FUZZ_CHECK(std::getline(lines, l), "output ends before line %zu", e.number);
    const std::string prefix =
        json ? "{\"line\":" + std::to_string(e.number) + ",\"ok\":" : "line " + std::to_string(e.number) + ": ";
    FUZZ_CHECK(l.rfind(prefix, 0) == 0, "expected '%s...', got '%s'", prefix.c_str(), l.c_str());
    const std::string_view verdict = std::string_view(l).substr(prefix.size());
    const bool ok = verdict.rfind(json ? "true," : "ok", 0) == 0 || (json && verdict == "true}");
    FUZZ_CHECK(ok || verdict.rfind(json ? "false," : "error ", 0) == 0, "line verdict '%s'", l.c_str());
    if (json) FUZZ_CHECK(l.back() == '}', "JSON result is not one object on its line: '%s'", l.c_str());
    if (e.parse_error) FUZZ_CHECK(!ok, "line %zu does not parse but was reported ok", e.number);
    if (!ok) ++failed;
  }
  FUZZ_CHECK(std::getline(lines, l), "no summary line");
  const std::string n_ok = std::to_string(want.size() - failed), n_failed = std::to_string(failed);
  const std::string summary =
      json ? "{\"ok\":" + n_ok + ",\"failed\":" + n_failed + "}" : n_ok + " ok, " + n_failed + " failed";
  FUZZ_CHECK(l == summary, "summary '%s', expected '%s'", l.c_str(), summary.c_str());
  FUZZ_CHECK(!std::getline(lines, l), "output after the summary: '%s'", l.c_str());
  FUZZ_CHECK(rc == (failed ? cli::kExitFailed : cli::kExitOk), "exit status %d with %zu failed", rc, failed);
  return 0;
}
