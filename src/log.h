// log.h - one named spdlog logger per module, all writing to stderr.
//
// Loggers are named "ctoffload.<module>" and registered with spdlog, so an
// embedding program can find them with spdlog::get() and replace their sinks.
// The library never writes to stdout.  The initial level is "warn", or the
// value of the CTOFFLOAD_LOG environment variable (trace, debug, info, warn,
// error, critical, off).
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <string_view>

#include "ctoffload/result.h"

namespace ctoffload::log {

// The logger of 'module', created on first use.  Thread-safe.
std::shared_ptr<spdlog::logger> get(const std::string& module);

// Sets the level of every ctoffload logger, present and future.  EINVAL
// for an unknown level name.
Status set_level(std::string_view level);

}  // namespace ctoffload::log
