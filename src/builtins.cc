// builtins.cc - the table of built-in providers.  Adding a provider means
// adding a row here; nothing registers itself behind the reader's back.
#include "builtins.h"

#include <algorithm>

#include "providers/nft_flowtable.h"
#include "providers/nft_layout.h"
#include "providers/software.h"

namespace ctoffload {
namespace {

// A numeric option's row, from its one definition.
BuiltinOption uint_option(const UintOption& o, std::string help) {
  return BuiltinOption{.name = std::string(o.key),
                       .default_value = std::to_string(o.def),
                       .values = o.range(),
                       .help = std::move(help),
                       .validate = [o](std::string_view v) -> Status {
                         auto r = o.parse(v);
                         return r ? Status() : r.status();
                       }};
}

template <typename Parse>
std::function<Status(std::string_view)> parses(Parse parse) {
  return [parse](std::string_view v) -> Status {
    auto r = parse(v);
    return r ? Status() : r.status();
  };
}

std::vector<Builtin> make_table() {
  using N = NftFlowtableOptions;
  using S = SoftwareOptions;
  const N nft_defaults;
  std::vector<Builtin> t;
  t.push_back(Builtin{
      .name = NftFlowtableProvider::kName,
      .fallback = false,
      .help = "nftables flowtable offload (hardware where devices can, software elsewhere)",
      .options = {BuiltinOption{.name = "table",
                                .default_value = std::string(N::kDefaultTable),
                                .values = "an nft identifier: a letter, then letters, digits, _ or -, at most 31",
                                .help = "the inet table the provider owns",
                                .validate = [](std::string_view v) -> Status {
                                  if (nft::valid_table_name(v)) return {};
                                  return Status::error(EINVAL, "'" + std::string(v) +
                                                                   "' is not a valid nft table name (a letter, "
                                                                   "then letters, digits, '_' or '-', at most 31)");
                                }},
                  BuiltinOption{.name = "hw_offload",
                                .default_value = std::string(hw_offload_name(nft_defaults.hw_offload)),
                                .values = "auto, on, off",
                                .help = "auto: hardware offload on devices advertising hw-tc-offload; on: ask on "
                                        "every device; off: never",
                                .validate = parses(parse_hw_offload)},
                  uint_option(N::kCapacity, "connections held at most; beyond it conn_add says ENOSPC"),
                  uint_option(N::kRefreshMs, "how old the conntrack counters behind conn_update may be (ms)"),
                  BuiltinOption{.name = "adopt",
                                .default_value = std::string(adopt_mode_name(nft_defaults.adopt)),
                                .values = "full, lazy",
                                .help = "what a new process reads of an existing table: each connection when an "
                                        "operation first names it (lazy), or every connection before init returns "
                                        "(full: exact capacity and restores from the start, at the cost of the "
                                        "kernel's quadratic set dump)",
                                .validate = parses(parse_adopt_mode)},
                  BuiltinOption{.name = "usage_dir",
                                .default_value = std::string(N::kDefaultUsageDir),
                                .values = "a directory, or empty (off)",
                                .help = "where counter readings are shared between the processes of a table, so "
                                        "that a new process knows last used; empty keeps them in the process",
                                .validate = [](std::string_view) -> Status { return {}; }}},
      .create = [](const ProviderOptions& opts) -> Result<std::shared_ptr<Provider>> {
        auto p = NftFlowtableProvider::create(opts);
        if (!p) return p.status();
        return std::shared_ptr<Provider>(std::move(*p));
      },
  });
  t.push_back(Builtin{
      .name = SoftwareProvider::kName,
      .fallback = true,
      .help = "userspace exact-match flow cache; takes what the kernel provider cannot",
      .options = {uint_option(S::kCapacity, "connections the cache holds")},
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

std::string options_markdown() {
  std::string md = "| key | default | values | meaning |\n|---|---|---|---|\n";
  std::string order;
  for (const auto& b : builtins()) order += (order.empty() ? "" : ",") + b.name;
  md += "| `priority` | `" + order +
        "` | built-in provider names, comma-separated | the built-ins module_init() registers, in dispatch order "
        "(fallbacks after primaries whatever their place) |\n";
  for (const auto& b : builtins()) {
    for (const auto& o : b.options) {
      md += "| `" + b.name + "." + o.name + "` | " +
            (o.default_value.empty() ? "(empty)" : "`" + o.default_value + "`") + " | " + o.values + " | " + o.help +
            " |\n";
    }
  }
  return md;
}

const Builtin* find_builtin(std::string_view name) {
  const auto& t = builtins();
  auto it = std::find_if(t.begin(), t.end(), [&](const Builtin& b) { return b.name == name; });
  return it == t.end() ? nullptr : &*it;
}

}  // namespace ctoffload
