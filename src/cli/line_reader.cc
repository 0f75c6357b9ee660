// line_reader.cc - poll(2), read(2) and the split into lines.
#include "cli/line_reader.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "netlink/nl_error.h"

namespace ctoffload::cli {

LineReader::LineReader(int fd, size_t max_line) : fd_(fd), max_line_(max_line) {}

Result<LineReader::Event> LineReader::read(int timeout_ms, std::vector<InputLine>& lines) {
  pollfd p{fd_, POLLIN, 0};
  const int n = ::poll(&p, 1, timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return Event::kInput;
    return netlink::errno_status(errno, "poll on the batch input");
  }
  if (n == 0) return Event::kTimeout;
  // POLLHUP without data (the writer went away) reads as end of file below,
  // as does a regular file, which poll always reports ready.
  char buf[65536];
  const ssize_t got = ::read(fd_, buf, sizeof buf);
  if (got < 0) {
    // EAGAIN: a descriptor somebody made non-blocking had nothing after all.
    if (errno == EINTR || errno == EAGAIN) return Event::kInput;
    return netlink::errno_status(errno, "read the batch input");
  }
  if (got == 0) {
    if (!partial_.empty() || too_long_) complete(lines);
    return Event::kEnd;
  }
  split(buf, static_cast<size_t>(got), lines);
  return Event::kInput;
}

void LineReader::split(const char* data, size_t n, std::vector<InputLine>& lines) {
  while (n > 0) {
    const auto* nl = static_cast<const char*>(std::memchr(data, '\n', n));
    const size_t len = nl ? static_cast<size_t>(nl - data) : n;
    if (!too_long_) {
      partial_.append(data, len);
      if (partial_.size() > max_line_) {
        // The rest of this line is skipped up to its newline.
        too_long_ = true;
        partial_.clear();
        partial_.shrink_to_fit();
      }
    }
    if (!nl) return;
    complete(lines);
    data += len + 1;
    n -= len + 1;
  }
}

void LineReader::complete(std::vector<InputLine>& lines) {
  lines.push_back(InputLine{++number_, std::move(partial_), too_long_});
  partial_.clear();
  too_long_ = false;
}

}  // namespace ctoffload::cli
