// config.cc - validated configuration keys, checked against the built-in
// provider table.
#include "ctoffload/config.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <set>

#include "builtins.h"

namespace ctoffload {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

Result<std::vector<std::string>> parse_priority(std::string_view value) {
  std::vector<std::string> names;
  std::set<std::string, std::less<>> seen;
  if (trim(value).empty()) return names;
  size_t pos = 0;
  while (pos <= value.size()) {
    size_t comma = value.find(',', pos);
    if (comma == std::string_view::npos) comma = value.size();
    std::string_view name = trim(value.substr(pos, comma - pos));
    if (name.empty()) return Status::error(EINVAL, "empty provider name in priority '" + std::string(value) + "'");
    if (!find_builtin(name)) {
      std::string known;
      for (const auto& b : builtins()) known += (known.empty() ? "" : ", ") + b.name;
      return Status::error(EINVAL, "unknown provider '" + std::string(name) + "' in priority (known: " + known + ")");
    }
    if (!seen.insert(std::string(name)).second) {
      return Status::error(EINVAL, "provider '" + std::string(name) + "' listed twice in priority");
    }
    names.emplace_back(name);
    pos = comma + 1;
  }
  return names;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s;
}

}  // namespace

Result<bool> parse_bool(std::string_view text) {
  if (text == "1" || text == "true" || text == "yes" || text == "on") return true;
  if (text == "0" || text == "false" || text == "no" || text == "off") return false;
  return Status::error(EINVAL, "'" + std::string(text) + "' is not a boolean (true/false, yes/no, on/off, 1/0)");
}

Result<uint64_t> parse_uint(std::string_view text, uint64_t min, uint64_t max) {
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (text.empty() || ec != std::errc() || ptr != text.data() + text.size()) {
    return Status::error(EINVAL, "'" + std::string(text) + "' is not a decimal number");
  }
  if (v < min || v > max) {
    return Status::error(EINVAL, "'" + std::string(text) + "' is out of range [" + std::to_string(min) + ", " +
                                     std::to_string(max) + "]");
  }
  return v;
}

std::string ProviderOptions::get(std::string_view name, std::string_view fallback) const {
  auto it = values_.find(std::string(name));
  return it == values_.end() ? std::string(fallback) : it->second;
}

Result<uint64_t> ProviderOptions::get_uint(std::string_view name, uint64_t fallback) const {
  auto it = values_.find(std::string(name));
  if (it == values_.end()) return fallback;
  auto v = parse_uint(it->second, 0, UINT64_MAX);
  if (!v) return Status::error(EINVAL, "option " + std::string(name) + ": " + v.message());
  return v;
}

Result<bool> ProviderOptions::get_bool(std::string_view name, bool fallback) const {
  auto it = values_.find(std::string(name));
  if (it == values_.end()) return fallback;
  auto v = parse_bool(it->second);
  if (!v) return Status::error(EINVAL, "option " + std::string(name) + ": " + v.message());
  return v;
}

Config::Config() {
  for (const auto& b : builtins()) {
    priority_.push_back(b.name);
    ProviderOptions opts;
    for (const auto& o : b.options) opts.set(o.name, o.default_value);
    options_.emplace(b.name, std::move(opts));
  }
}

Status Config::set(std::string_view key, std::string_view value) {
  if (key == "priority") {
    auto names = parse_priority(value);
    if (!names) return names.status();
    std::lock_guard lock(mutex_);
    priority_ = std::move(*names);
    return {};
  }
  auto dot = key.find('.');
  if (dot == std::string_view::npos) {
    return Status::error(
        EINVAL, "unknown configuration key '" + std::string(key) + "' (expected 'priority' or '<provider>.<option>')");
  }
  std::string_view provider = key.substr(0, dot);
  std::string_view option = key.substr(dot + 1);
  const Builtin* b = find_builtin(provider);
  if (!b)
    return Status::error(EINVAL, "unknown provider '" + std::string(provider) + "' in key '" + std::string(key) + "'");
  auto o = std::find_if(b->options.begin(), b->options.end(), [&](const BuiltinOption& x) { return x.name == option; });
  if (o == b->options.end()) {
    std::string known;
    for (const auto& x : b->options) known += (known.empty() ? "" : ", ") + x.name;
    return Status::error(EINVAL, "provider '" + std::string(provider) + "' has no option '" + std::string(option) +
                                     "' (options: " + known + ")");
  }
  if (o->validate) {
    if (auto s = o->validate(value); !s) return Status::error(EINVAL, std::string(key) + ": " + s.message());
  }
  std::lock_guard lock(mutex_);
  if (is_busy_ && is_busy_(provider)) {
    return Status::error(EBUSY, "cannot change " + std::string(key) + " while provider '" + std::string(provider) +
                                    "' is registered; unregister it first");
  }
  options_[std::string(provider)].set(std::string(option), std::string(value));
  return {};
}

Result<std::string> Config::get(std::string_view key) const {
  std::lock_guard lock(mutex_);
  if (key == "priority") return join(priority_);
  auto dot = key.find('.');
  if (dot != std::string_view::npos) {
    auto it = options_.find(key.substr(0, dot));
    if (it != options_.end()) {
      const auto& values = it->second.values();
      auto v = values.find(std::string(key.substr(dot + 1)));
      if (v != values.end()) return v->second;
    }
  }
  return Status::error(ENOENT, "unknown configuration key '" + std::string(key) + "'");
}

std::vector<std::pair<std::string, std::string>> Config::all() const {
  std::lock_guard lock(mutex_);
  std::vector<std::pair<std::string, std::string>> out;
  out.emplace_back("priority", join(priority_));
  for (const auto& [provider, opts] : options_) {
    for (const auto& [name, value] : opts.values()) {
      std::string key = provider;
      key += '.';
      key += name;
      out.emplace_back(std::move(key), value);
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> Config::priority() const {
  std::lock_guard lock(mutex_);
  return priority_;
}

ProviderOptions Config::options(std::string_view provider) const {
  std::lock_guard lock(mutex_);
  auto it = options_.find(provider);
  return it == options_.end() ? ProviderOptions() : it->second;
}

void Config::set_busy_check(std::function<bool(std::string_view)> check) {
  std::lock_guard lock(mutex_);
  is_busy_ = std::move(check);
}

}  // namespace ctoffload
