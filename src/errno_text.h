// errno_text.h - the text and the name of an errno value, safe to call from
// any thread.
#pragma once

#include <cstring>
#include <string>

namespace ctoffload {

// What strerror() says for 'err', without strerror()'s shared static
// buffer (strerrordesc_np, glibc 2.32 and later).
inline std::string errno_text(int err) {
  const char* desc = strerrordesc_np(err);
  return desc != nullptr ? std::string(desc) : "Unknown error " + std::to_string(err);
}

// The symbolic name of 'err' ("EEXIST"), or "errno N" when it has none.
inline std::string errno_name(int err) {
  const char* name = strerrorname_np(err);
  return name != nullptr ? std::string(name) : "errno " + std::to_string(err);
}

}  // namespace ctoffload
