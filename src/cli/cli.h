// cli.h - ctoffloadctl: the registry driven by hand or from scripts.
//
// Exit status: 0 success, 1 an operation failed (the message names the
// errno and what was wrong), 2 usage error.  Human output goes to 'out',
// diagnostics to 'err'; -j makes 'out' JSON (JSON Lines for batch).
// Without --providers only the kernel provider is used: what a command
// reports done is in the kernel, where the next process finds it.
#pragma once

#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

#include "ctoffload/conn.h"
#include "ctoffload/result.h"

namespace ctoffload::cli {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;
inline constexpr int kExitUsage = 2;

// One add/del/update/flush operation parsed from arguments or a batch line.
struct OpSpec {
  ct_offload_op_type type = CT_OFFLOAD_OP_ADD;
  Conn conn{};
  Netdev dev{};
  bool has_dev = false;
};

// Parses "add --iif veth0 --proto tcp --src 10.0.0.1:1 --dst 10.0.0.2:80
// [--reply-src A:P --reply-dst A:P] [--zone N]", "del ...", "update ...",
// "flush".  'words' starts with the command.  EINVAL names the bad or
// missing option.  --iif is optional: without it, add leaves the kernel
// provider to find the device from the route towards --src.
Result<OpSpec> parse_op(const std::vector<std::string>& words);

// Splits a batch line into words; text after '#' is a comment.  Quotes are
// not needed by the syntax and are not interpreted.
std::vector<std::string> split_words(std::string_view line);

// "2026-11-26T00:45:12.345Z"; "never" for 0.
std::string format_time_ms(long long ms);

// Runs ctoffloadctl with 'args' (without the program name).
int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

}  // namespace ctoffload::cli
