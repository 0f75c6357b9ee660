// builtins.cc - the table of built-in providers.  Adding a provider means
// adding a row here; nothing registers itself behind the reader's back.
#include "builtins.h"

#include <algorithm>

#include "providers/nft_flowtable.h"
#include "providers/nft_layout.h"
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
      .name = NftFlowtableProvider::kName,
      .fallback = false,
      .help = "nftables flowtable offload (hardware where devices can, software elsewhere)",
      .options = {BuiltinOption{.name = "table",
                                .default_value = "ctoffload",
                                .help = "name of the inet table the provider owns",
                                .validate = [](std::string_view v) -> Status {
                                  if (nft::valid_table_name(v)) return {};
                                  return Status::error(EINVAL, "'" + std::string(v) +
                                                                   "' is not a valid nft table name (a letter, "
                                                                   "then letters, digits, '_' or '-', at most 31)");
                                }},
                  BuiltinOption{.name = "hw_offload",
                                .default_value = "auto",
                                .help = "auto: hardware offload on devices advertising hw-tc-offload; on: ask on "
                                        "every device; off: never",
                                .validate = [](std::string_view v) -> Status {
                                  auto m = parse_hw_offload(v);
                                  return m ? Status() : m.status();
                                }},
                  BuiltinOption{.name = "capacity",
                                .default_value = "262144",
                                .help = "connections the provider offloads at most (1-16777216)",
                                .validate = uint_in(1, NftFlowtableProvider::kMaxCapacity)},
                  BuiltinOption{.name = "refresh_ms",
                                .default_value = "250",
                                .help = "how old conntrack counters may be before conn_update reads them again "
                                        "(0-60000 ms)",
                                .validate = uint_in(0, 60000)},
                  BuiltinOption{.name = "adopt",
                                .default_value = "full",
                                .help = "what a new process reads of an existing table at init: full (every "
                                        "connection) or lazy (each when first named; for one-shot commands)",
                                .validate = [](std::string_view v) -> Status {
                                  auto m = parse_adopt_mode(v);
                                  return m ? Status() : m.status();
                                }}},
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
