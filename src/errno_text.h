// errno_text.h - the text of an errno value, safe to call from any thread.
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

}  // namespace ctoffload
