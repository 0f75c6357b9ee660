// line_reader.h - lines from a descriptor as they arrive, for `batch`.
//
// A script or daemon keeps one `ctoffloadctl batch -` open and feeds it a
// line at a time, so input is read with poll(2) and read(2) and split here:
// a line is complete at its newline, not when a buffer fills.  The reader
// never blocks longer than it is told to, which lets the caller send a
// partly filled batch when the input goes quiet.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "ctoffload/result.h"

namespace ctoffload::cli {

struct InputLine {
  size_t number = 0;  // 1 for the first line; every line counts.
  std::string text;   // Without its newline; empty when too_long.
  bool too_long = false;
};

class LineReader {
 public:
  // What one read() saw.
  enum class Event {
    kInput,    // Something was read (possibly no complete line yet).
    kTimeout,  // Nothing arrived within the time given.
    kEnd,      // End of input; the last lines are in 'lines'.
  };

  // Reads 'fd' (not owned; it stays open).  A line longer than 'max_line'
  // bytes is returned with too_long set and its text dropped, so memory
  // stays bounded whatever the input.
  LineReader(int fd, size_t max_line);

  // Waits up to 'timeout_ms' (-1: as long as it takes) for input, reads
  // what is there, and appends the lines it completed to 'lines'.  At the
  // end of input a last line without a newline is complete too.  A signal
  // interrupting the wait is kInput with no line.  A read error is
  // returned with its errno.
  Result<Event> read(int timeout_ms, std::vector<InputLine>& lines);

 private:
  void split(const char* data, size_t n, std::vector<InputLine>& lines);
  void complete(std::vector<InputLine>& lines);

  int fd_;
  size_t max_line_;
  std::string partial_;  // The line read so far, without a newline yet.
  bool too_long_ = false;
  size_t number_ = 0;  // Lines completed so far.
};

}  // namespace ctoffload::cli
