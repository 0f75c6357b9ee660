// capi_error.h - the C API's error reporting: a positive errno returned,
// and a per-thread sentence for ct_offload_last_error().
#pragma once

#include <string>

#include "ctoffload/result.h"

namespace ctoffload::capi {

// Records 'message' as the calling thread's last error and returns 'err'.
int fail(int err, std::string message);
// Records s's message when it failed; returns s.err() (0 on success).
int fail(const Status& s);
// The calling thread's last error ("" if none).
const char* last_error();

}  // namespace ctoffload::capi
