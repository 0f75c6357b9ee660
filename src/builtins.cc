// builtins.cc - the table of built-in providers.  Adding a provider means
// adding a row here; nothing registers itself behind the reader's back.
#include "builtins.h"

#include <algorithm>

#include "providers/software.h"

namespace ctoffload {
namespace {

std::function<Status(std::string_view)> uint_in(uint64_t min, uint64_t max) {
  return [min, max](std::string_view v) -> Status {
    auto r = parse_uint(v, min, max);
    return r ? Status() : r.status();
  };
}

std::vector<Builtin> make_table() {
  std::vector<Builtin> t;
  t.push_back(Builtin{
      .name = SoftwareProvider::kName,
      .fallback = true,
      .help = "userspace exact-match flow cache; takes what the kernel provider cannot",
      .options = {BuiltinOption{.name = "capacity",
                                .default_value = "65536",
                                .help = "connections the cache holds (1-16777216)",
                                .validate = uint_in(1, 16777216)}},
      .create = [](const ProviderOptions& opts) -> Result<std::shared_ptr<Provider>> {
        auto p = SoftwareProvider::create(opts);
        if (!p) return p.status();
        return std::shared_ptr<Provider>(std::move(*p));
      },
  });
  return t;
}

}  // namespace

const std::vector<Builtin>& builtins() {
  static const std::vector<Builtin> table = make_table();
  return table;
}

const Builtin* find_builtin(std::string_view name) {
  const auto& t = builtins();
  auto it = std::find_if(t.begin(), t.end(), [&](const Builtin& b) { return b.name == name; });
  return it == t.end() ? nullptr : &*it;
}

}  // namespace ctoffload
