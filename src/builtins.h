// builtins.h - the explicit table of built-in providers.
//
// One row per built-in: its name, whether it is a fallback, its options
// (with defaults and validators) and a factory.  Config validates keys
// against this table; Registry::module_init() creates providers from it.
// Nothing registers itself through static initialisers.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ctoffload/config.h"
#include "ctoffload/provider.h"
#include "ctoffload/result.h"

namespace ctoffload {

struct BuiltinOption {
  std::string name;
  std::string default_value;
  // What it accepts, for people: "1-16777216", "auto, on, off", ...
  std::string values;
  std::string help;
  // Returns ok or EINVAL naming what is wrong with 'value'.
  std::function<Status(std::string_view value)> validate;
};

struct Builtin {
  std::string name;
  bool fallback = false;
  std::string help;
  std::vector<BuiltinOption> options;
  std::function<Result<std::shared_ptr<Provider>>(const ProviderOptions&)> create;
};

// The built-ins, in default priority order.
const std::vector<Builtin>& builtins();
const Builtin* find_builtin(std::string_view name);

// The configuration keys as a Markdown table (key, default, values,
// meaning): docs/ARCHITECTURE.md shows exactly this between the markers
// "<!-- options: begin -->" and "<!-- options: end -->", which a unit test
// checks (tests/builtins_test.cc), so the docs cannot drift from the code.
std::string options_markdown();

}  // namespace ctoffload
