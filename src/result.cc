// result.cc - formatting of Status.
#include "ctoffload/result.h"

#include <cstring>

#include "errno_text.h"

namespace ctoffload {

std::string Status::to_string() const {
  if (ok()) return "ok";
  const std::string label = errno_name(err());
  // Messages from the netlink layer already name the errno; say it once.
  if (message_.find(label) != std::string::npos) return message_;
  return message_ + " (" + errno_text(err()) + ", " + label + ")";
}

}  // namespace ctoffload
