// result.cc - formatting of Status.
#include "ctoffload/result.h"

#include <cstring>

namespace ctoffload {

std::string Status::to_string() const {
  if (ok()) return "ok";
  const char* name = strerrorname_np(err());
  return message_ + " (" + std::strerror(err()) + ", " + (name ? std::string(name) : "errno " + std::to_string(err())) + ")";
}

}  // namespace ctoffload
