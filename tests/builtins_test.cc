// builtins_test.cc - the table of built-in providers and their options: one
// truth for defaults and ranges, and docs that say what the code does.
#include "builtins.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "ctoffload/registry.h"
#include "providers/nft_flowtable.h"
#include "providers/software.h"

namespace ctoffload {
namespace {

std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const BuiltinOption* option(std::string_view provider, std::string_view name) {
  const Builtin* b = find_builtin(provider);
  if (b == nullptr) return nullptr;
  for (const auto& o : b->options) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

TEST(Builtins, DefaultsAreTheProvidersOwn) {
  const NftFlowtableOptions n;
  EXPECT_EQ(option("nft_flowtable", "table")->default_value, n.table);
  EXPECT_EQ(option("nft_flowtable", "capacity")->default_value, std::to_string(n.capacity));
  EXPECT_EQ(option("nft_flowtable", "refresh_ms")->default_value, std::to_string(n.refresh_ms));
  EXPECT_EQ(option("nft_flowtable", "hw_offload")->default_value, hw_offload_name(n.hw_offload));
  EXPECT_EQ(option("nft_flowtable", "adopt")->default_value, adopt_mode_name(n.adopt));
  EXPECT_EQ(option("nft_flowtable", "usage_dir")->default_value, n.usage_dir);
  EXPECT_EQ(option("software", "capacity")->default_value, std::to_string(SoftwareOptions{}.capacity));
}

TEST(Builtins, EveryDefaultPassesItsOwnCheckAndTheProviderTakesIt) {
  for (const auto& b : builtins()) {
    for (const auto& o : b.options) {
      EXPECT_TRUE(o.validate(o.default_value).ok()) << b.name << "." << o.name;
    }
  }
  // Ranges: the configuration refuses what the provider would refuse.
  Config cfg;
  EXPECT_TRUE(cfg.set("nft_flowtable.refresh_ms", std::to_string(NftFlowtableOptions::kMaxRefreshMs)).ok());
  EXPECT_EQ(cfg.set("nft_flowtable.refresh_ms", std::to_string(NftFlowtableOptions::kMaxRefreshMs + 1)).err(), EINVAL);
  EXPECT_EQ(cfg.set("nft_flowtable.capacity", std::to_string(NftFlowtableOptions::kMaxCapacity + 1)).err(), EINVAL);
  EXPECT_EQ(cfg.set("nft_flowtable.capacity", "0").err(), EINVAL);
  EXPECT_EQ(cfg.set("software.capacity", std::to_string(SoftwareOptions::kMaxCapacity + 1)).err(), EINVAL);
  EXPECT_EQ(cfg.set("nft_flowtable.adopt", "sometimes").err(), EINVAL);
  NftFlowtableOptions too_slow;
  too_slow.refresh_ms = NftFlowtableOptions::kMaxRefreshMs + 1;
  EXPECT_EQ(NftFlowtableProvider::create(too_slow).err(), EINVAL);
}

// A numeric option's bounds are written once (option_range.h): the
// configuration, create() from configuration options and create() from the
// options struct refuse the same values, in the same words.
TEST(Builtins, ANumericOptionIsRefusedAlikeOnEveryPath) {
  struct Case {
    std::string provider;
    std::string key;
    uint64_t bad;
    std::function<Status()> from_struct;
  };
  const std::vector<Case> cases = {
      {"nft_flowtable", "capacity", 0,
       [] {
         NftFlowtableOptions o;
         o.capacity = 0;
         return NftFlowtableProvider::create(o).status();
       }},
      {"nft_flowtable", "refresh_ms", NftFlowtableOptions::kRefreshMs.max + 1,
       [] {
         NftFlowtableOptions o;
         o.refresh_ms = NftFlowtableOptions::kRefreshMs.max + 1;
         return NftFlowtableProvider::create(o).status();
       }},
      {"software", "capacity", SoftwareOptions::kCapacity.max + 1,
       [] {
         return SoftwareProvider::create(SoftwareOptions{.capacity = SoftwareOptions::kCapacity.max + 1}).status();
       }},
  };
  for (const auto& c : cases) {
    const std::string full = c.provider + "." + c.key;
    const std::string text = std::to_string(c.bad);
    const BuiltinOption* row = nullptr;
    for (const auto& o : find_builtin(c.provider)->options) {
      if (o.name == c.key) row = &o;
    }
    ASSERT_NE(row, nullptr) << full;
    const auto bounds = row->values;  // "min-max"
    const std::string range =
        "[" + bounds.substr(0, bounds.find('-')) + ", " + bounds.substr(bounds.find('-') + 1) + "]";

    Config cfg;
    const Status by_config = cfg.set(full, text);
    EXPECT_EQ(by_config.err(), EINVAL) << full;
    EXPECT_NE(by_config.message().find("is out of range " + range), std::string::npos) << by_config.message();

    ProviderOptions po;
    po.set(c.key, text);
    const Status by_options =
        c.provider == "software" ? SoftwareProvider::create(po).status() : NftFlowtableProvider::create(po).status();
    EXPECT_EQ(by_options.err(), EINVAL) << full;
    EXPECT_EQ(by_options.message(), full + ": '" + text + "' is out of range " + range);

    const Status by_struct = c.from_struct();
    EXPECT_EQ(by_struct.err(), EINVAL) << full;
    EXPECT_EQ(by_struct.message(), full + ": " + text + " is out of range " + range);
  }
}

// docs/ARCHITECTURE.md shows the table options_markdown() makes, between
// its markers.  After changing an option, run this test once with
// CTOFFLOAD_WRITE_DOCS=1 to write the table into the page (then review the
// diff); without it, a mismatch fails and prints the expected text.
TEST(Builtins, ArchitectureDocShowsTheOptionTable) {
  const auto path = std::filesystem::path(CTOFFLOAD_SOURCE_DIR) / "docs" / "ARCHITECTURE.md";
  std::string doc = read_file(path);
  const std::string begin = "<!-- options: begin -->\n", end = "<!-- options: end -->";
  const size_t b = doc.find(begin), e = doc.find(end);
  ASSERT_NE(b, std::string::npos) << "docs/ARCHITECTURE.md lacks " << begin;
  ASSERT_NE(e, std::string::npos) << "docs/ARCHITECTURE.md lacks " << end;
  const char* write = std::getenv("CTOFFLOAD_WRITE_DOCS");  // NOLINT(concurrency-mt-unsafe): one thread
  if (write != nullptr && std::string(write) == "1") {
    doc.replace(b + begin.size(), e - b - begin.size(), options_markdown());
    std::ofstream(path) << doc;
    return;
  }
  EXPECT_EQ(doc.substr(b + begin.size(), e - b - begin.size()), options_markdown());
}

// Wherever README or docs/ name an option's default on one line, it is the
// default the code has ("`refresh_ms`, default 1000" once said otherwise).
TEST(Builtins, DocsNameNoOtherDefault) {
  std::vector<std::filesystem::path> docs = {std::filesystem::path(CTOFFLOAD_SOURCE_DIR) / "README.md"};
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(CTOFFLOAD_SOURCE_DIR) / "docs")) {
    if (entry.path().extension() == ".md" && entry.path().filename() != "BENCHMARKS.md") docs.push_back(entry.path());
  }
  size_t checked = 0;
  for (const auto& path : docs) {
    std::istringstream in(read_file(path));
    std::string line;
    for (size_t n = 1; std::getline(in, line); ++n) {
      if (line.find("default") == std::string::npos) continue;
      for (const auto& b : builtins()) {
        for (const auto& o : b.options) {
          // The key spelled out, or the option name alone in backquotes.
          const bool named = line.find("`" + b.name + "." + o.name + "`") != std::string::npos ||
                             line.find("`" + o.name + "`") != std::string::npos;
          if (!named) continue;
          // An option name shared by two providers (capacity) must name its
          // provider's default, whichever it is.
          bool any = false;
          for (const auto& b2 : builtins()) {
            for (const auto& o2 : b2.options) {
              if (o2.name == o.name && line.find(o2.default_value) != std::string::npos) any = true;
            }
          }
          ++checked;
          EXPECT_TRUE(any) << path.filename().string() << ":" << n << " names a default for `" << o.name
                           << "` other than the code's: " << line;
        }
      }
    }
  }
  EXPECT_GT(checked, 0u) << "no doc line names a default: the check checks nothing";
}

}  // namespace
}  // namespace ctoffload
