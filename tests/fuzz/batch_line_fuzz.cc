// batch_line_fuzz.cc - fuzzes the line parser of `ctoffloadctl batch`.
//
// Feeds: the input as the text of a batch file; each line goes through
// cli::split_words() and cli::parse_op() (src/cli/cli.h), exactly what
// cmd_batch() does per line.
//
// Checks, beyond not crashing:
//   * split_words() returns non-empty words without whitespace or '#', and
//     joining them with single spaces and splitting again gives the same
//     words;
//   * parse_op() accepts a line only if its first word names the op type
//     it returns; an accepted add/del/update carries a connection that
//     validate() accepts, and a device name (optional: an add without one
//     takes the route's) is non-empty and NUL-terminated within IFNAMSIZ;
//   * round trip: the accepted op written back as a canonical batch line
//     ("add --iif D --proto P --src A --dst B [--reply-src ...] --zone Z")
//     parses to the same op;
//   * a refused line is refused with EINVAL or EPROTONOSUPPORT and a
//     message.
#include <net/if.h>

#include <cctype>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "cli/cli.h"
#include "ctoffload/conn.h"
#include "fuzz_support.h"

namespace {

using namespace ctoffload;

std::vector<std::string> canonical_words(const cli::OpSpec& op) {
  std::vector<std::string> w;
  switch (op.type) {
    case CT_OFFLOAD_OP_ADD:
      w.emplace_back("add");
      break;
    case CT_OFFLOAD_OP_DEL:
      w.emplace_back("del");
      break;
    case CT_OFFLOAD_OP_UPD:
      w.emplace_back("update");
      break;
    default:
      w.emplace_back("flush");
      return w;
  }
  const Conn& c = op.conn;
  if (op.has_dev) {
    w.emplace_back("--iif");
    w.emplace_back(op.dev.name);
  }
  w.emplace_back("--proto");
  w.push_back(proto_name(c.proto));
  w.push_back("--src=" + format_endpoint(c.family, c.orig.src, c.orig.src_port));
  w.emplace_back("--dst");
  w.push_back(format_endpoint(c.family, c.orig.dst, c.orig.dst_port));
  if (is_natted(c)) {
    w.emplace_back("--reply-src");
    w.push_back(format_endpoint(c.family, c.reply.src, c.reply.src_port));
    w.push_back("--reply-dst=" + format_endpoint(c.family, c.reply.dst, c.reply.dst_port));
  }
  w.emplace_back("--zone");
  w.push_back(std::to_string(c.zone));
  return w;
}

void check_words(const std::vector<std::string>& words) {
  std::string joined;
  for (const auto& w : words) {
    FUZZ_CHECK(!w.empty(), "an empty word");
    for (char ch : w) {
      FUZZ_CHECK(!std::isspace(static_cast<unsigned char>(ch)) && ch != '#', "word '%s' holds a separator", w.c_str());
    }
    if (!joined.empty()) joined += ' ';
    joined += w;
  }
  FUZZ_CHECK(cli::split_words(joined) == words, "splitting '%s' again gives other words", joined.c_str());
}

void check_line(std::string_view line) {
  const std::vector<std::string> words = cli::split_words(line);
  check_words(words);
  if (words.empty()) return;
  auto op = cli::parse_op(words);
  if (!op) {
    FUZZ_CHECK(op.err() == EINVAL || op.err() == EPROTONOSUPPORT, "parse_op errno %d: %s", op.err(),
               op.message().c_str());
    FUZZ_CHECK(!op.message().empty(), "parse_op failed without a message");
    return;
  }
  const std::string& cmd = words[0];
  const ct_offload_op_type want = cmd == "add"      ? CT_OFFLOAD_OP_ADD
                                  : cmd == "del"    ? CT_OFFLOAD_OP_DEL
                                  : cmd == "update" ? CT_OFFLOAD_OP_UPD
                                                    : CT_OFFLOAD_OP_FLUSH;
  FUZZ_CHECK(cmd == "add" || cmd == "del" || cmd == "update" || cmd == "flush", "accepted command '%s'", cmd.c_str());
  FUZZ_CHECK(op->type == want, "'%s' parsed as op type %d", cmd.c_str(), static_cast<int>(op->type));
  if (op->type == CT_OFFLOAD_OP_FLUSH) {
    FUZZ_CHECK(words.size() == 1, "flush accepted options");
    return;
  }
  const Status valid = validate(op->conn);
  FUZZ_CHECK(valid.ok(), "parse_op accepted a connection validate() refuses: %s", valid.message().c_str());
  if (op->has_dev) {
    const size_t len = strnlen(op->dev.name, sizeof op->dev.name);
    FUZZ_CHECK(len > 0 && len < IFNAMSIZ, "device name of %zu bytes", len);
  }

  const std::vector<std::string> canon = canonical_words(*op);
  check_words(canon);
  auto again = cli::parse_op(canon);
  FUZZ_CHECK(again.ok(), "the canonical form of an accepted line is refused: %s", again.message().c_str());
  FUZZ_CHECK(again->type == op->type && same_conn(again->conn, op->conn) && again->has_dev == op->has_dev &&
                 std::strcmp(again->dev.name, op->dev.name) == 0,
             "the canonical form parses to another op");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 64 * 1024) return -1;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  // Lines as std::getline() cuts them; cmd_batch() refuses lines over 4096
  // bytes before parsing them.
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    if (line.size() <= 4096) check_line(line);
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return 0;
}
