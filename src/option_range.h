// option_range.h - a numeric provider option, written once: its key, its
// default and its range.
//
// A provider's options struct holds one UintOption per numeric option
// (NftFlowtableOptions::kCapacity, ...).  Everything that reads or checks
// the option goes through it: the configuration table (builtins.cc, hence
// `ct_offload_config_set` and docs/ARCHITECTURE.md's option table), the
// provider's create() from configuration options, and its create() from
// the options struct, so the three cannot disagree on a bound or word the
// same refusal three ways.
#pragma once

#include <cerrno>
#include <cstdint>
#include <string>
#include <string_view>

#include "ctoffload/config.h"
#include "ctoffload/result.h"

namespace ctoffload {

struct UintOption {
  std::string_view key;  // As in the configuration, after "<provider>.".
  uint64_t def = 0;
  uint64_t min = 0;
  uint64_t max = UINT64_MAX;

  // "1-16777216": what the option accepts, for people.
  std::string range() const { return std::to_string(min) + "-" + std::to_string(max); }

  // 'text' as this option's value: EINVAL "'<text>' is not a decimal
  // number" or "... is out of range [<min>, <max>]" (parse_uint's words).
  Result<uint64_t> parse(std::string_view text) const { return parse_uint(text, min, max); }

  // EINVAL "<provider>.<key>: <value> is out of range [<min>, <max>]".
  Status check(std::string_view provider, uint64_t value) const {
    if (value >= min && value <= max) return {};
    return Status::error(EINVAL, std::string(provider) + "." + std::string(key) + ": " + std::to_string(value) +
                                     " is out of range [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  }

  // The option's value in 'options' (the default when absent), checked;
  // EINVAL names "<provider>.<key>" and says what is wrong.
  Result<uint64_t> read(std::string_view provider, const ProviderOptions& options) const {
    const auto it = options.values().find(std::string(key));
    if (it == options.values().end()) return def;
    auto v = parse(it->second);
    if (!v) return Status::error(EINVAL, std::string(provider) + "." + std::string(key) + ": " + v.message());
    return v;
  }
};

}  // namespace ctoffload
