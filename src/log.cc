// log.cc - named loggers on one shared stderr sink.
#include "log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>
#include <mutex>
#include <vector>

#include "sync.h"

namespace ctoffload::log {
namespace {

struct State {
  Mutex mutex;  // Guards the level and the loggers.
  spdlog::sink_ptr sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  spdlog::level::level_enum level CTO_GUARDED_BY(mutex) = spdlog::level::warn;
  std::vector<std::shared_ptr<spdlog::logger>> loggers CTO_GUARDED_BY(mutex);

  State() {
    // Read once, when the first logger is made; the library never sets it.
    if (const char* env = std::getenv("CTOFFLOAD_LOG")) {  // NOLINT(concurrency-mt-unsafe)
      auto lvl = spdlog::level::from_str(env);
      // from_str() maps unknown names to "off"; only accept real names.
      if (lvl != spdlog::level::off || std::string_view(env) == "off") level = lvl;
    }
  }
};

State& state() {
  static State* s = new State();  // Never destroyed: loggers outlive static teardown.
  return *s;
}

}  // namespace

std::shared_ptr<spdlog::logger> get(const std::string& module) {
  State& s = state();
  MutexLock lock(s.mutex);
  const std::string name = "ctoffload." + module;
  for (const auto& l : s.loggers) {
    if (l->name() == name) return l;
  }
  auto logger = std::make_shared<spdlog::logger>(name, s.sink);
  logger->set_level(s.level);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %n %l: %v");
  s.loggers.push_back(logger);
  // Registering lets embedders find it with spdlog::get(); a name clash
  // with an embedder's own logger is not our failure to report.
  if (!spdlog::get(name)) {
    try {
      spdlog::register_logger(logger);
    } catch (const spdlog::spdlog_ex&) {
    }
  }
  return logger;
}

Status set_level(std::string_view level) {
  static constexpr std::string_view kNames[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
  bool known = false;
  for (auto n : kNames) known = known || n == level;
  if (!known) {
    return Status::error(EINVAL, "unknown log level '" + std::string(level) +
                                     "' (expected trace, debug, info, warn, error, critical or off)");
  }
  State& s = state();
  MutexLock lock(s.mutex);
  s.level = spdlog::level::from_str(std::string(level));
  for (auto& l : s.loggers) l->set_level(s.level);
  return {};
}

}  // namespace ctoffload::log
