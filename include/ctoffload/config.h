// config.h - which built-in providers are enabled, in what order, and their
// options.
//
// Keys (the same through the C API's ct_offload_config_set()):
//   priority                 comma-separated built-in provider names, in
//                            dispatch order ("nft_flowtable,software").
//   <provider>.<option>      a built-in provider's option, validated against
//                            that provider's option table.
// Every set() is validated at once; a bad key or value is refused with
// EINVAL and a message naming it, and nothing changes.  Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ctoffload/result.h"

namespace ctoffload {

// The options of one provider, as validated strings with typed getters.
class ProviderOptions {
 public:
  ProviderOptions() = default;
  explicit ProviderOptions(std::map<std::string, std::string> values) : values_(std::move(values)) {}

  // The value of 'name', or 'fallback' when unset.
  std::string get(std::string_view name, std::string_view fallback = {}) const;
  // Typed views; EINVAL names the option when the value does not parse.
  Result<uint64_t> get_uint(std::string_view name, uint64_t fallback) const;
  Result<bool> get_bool(std::string_view name, bool fallback) const;
  void set(std::string name, std::string value) { values_[std::move(name)] = std::move(value); }
  const std::map<std::string, std::string>& values() const { return values_; }

 private:
  std::map<std::string, std::string> values_;
};

// Parses "yes/no/true/false/on/off/1/0".
Result<bool> parse_bool(std::string_view text);
// Parses a decimal unsigned integer within [min, max].
Result<uint64_t> parse_uint(std::string_view text, uint64_t min, uint64_t max);

class Config {
 public:
  // Defaults: every built-in enabled in its default order, options at their
  // documented defaults.
  Config();

  // Sets one key (see the top of this file).  EINVAL for an unknown key,
  // an unknown or repeated provider name in 'priority', or a bad value;
  // EBUSY when is_busy() says the provider of an option is registered.
  Status set(std::string_view key, std::string_view value);
  Result<std::string> get(std::string_view key) const;
  // Every key with its current value, sorted.
  std::vector<std::pair<std::string, std::string>> all() const;

  std::vector<std::string> priority() const;
  ProviderOptions options(std::string_view provider) const;

  // Installed by the registry: true when 'provider' is registered, so its
  // options cannot change under it.
  void set_busy_check(std::function<bool(std::string_view provider)> check);

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> priority_;
  std::map<std::string, ProviderOptions, std::less<>> options_;
  std::function<bool(std::string_view)> is_busy_;
};

}  // namespace ctoffload
