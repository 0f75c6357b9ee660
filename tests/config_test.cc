// config_test.cc - configuration keys, validation and the busy check.
#include "ctoffload/config.h"

#include <gtest/gtest.h>

namespace ctoffload {
namespace {

TEST(Config, DefaultsListEveryBuiltinInPriority) {
  Config c;
  auto p = c.priority();
  ASSERT_FALSE(p.empty());
  EXPECT_EQ(p.back(), "software");
  EXPECT_EQ(*c.get("software.capacity"), "65536");
}

TEST(Config, PriorityIsTrimmedAndValidated) {
  Config c;
  EXPECT_TRUE(c.set("priority", " software ").ok());
  EXPECT_EQ(c.priority(), std::vector<std::string>{"software"});
  EXPECT_EQ(c.set("priority", "software,").err(), EINVAL);
  EXPECT_EQ(c.set("priority", "nope").err(), EINVAL);
  EXPECT_EQ(c.priority(), std::vector<std::string>{"software"}) << "a refused set changes nothing";
}

TEST(Config, OptionsAreValidatedAgainstTheProviderTable) {
  Config c;
  EXPECT_EQ(c.set("software.capacity", "16777217").err(), EINVAL);
  auto s = c.set("software.capacity", "-5");
  EXPECT_EQ(s.err(), EINVAL);
  EXPECT_NE(s.message().find("software.capacity"), std::string::npos) << s.message();
  EXPECT_EQ(c.set("nft.table", "x").err(), EINVAL);
  EXPECT_EQ(c.set("software.", "x").err(), EINVAL);
  EXPECT_TRUE(c.set("software.capacity", "100").ok());
  EXPECT_EQ(c.options("software").get("capacity"), "100");
  EXPECT_EQ(*c.options("software").get_uint("capacity", 1), 100u);
}

TEST(Config, BusyProviderOptionsAreEbusy) {
  Config c;
  c.set_busy_check([](std::string_view p) { return p == "software"; });
  EXPECT_EQ(c.set("software.capacity", "100").err(), EBUSY);
  EXPECT_TRUE(c.set("priority", "software").ok()) << "priority is read at module_init only";
}

TEST(Config, BoolAndUintParsing) {
  EXPECT_TRUE(*parse_bool("yes"));
  EXPECT_FALSE(*parse_bool("off"));
  EXPECT_EQ(parse_bool("maybe").err(), EINVAL);
  EXPECT_EQ(*parse_uint("42", 0, 100), 42u);
  EXPECT_EQ(parse_uint("101", 0, 100).err(), EINVAL);
  EXPECT_EQ(parse_uint("", 0, 100).err(), EINVAL);
  EXPECT_EQ(parse_uint("4x", 0, 100).err(), EINVAL);
}

TEST(Config, AllListsEveryKeySorted) {
  Config c;
  auto all = c.all();
  ASSERT_GE(all.size(), 2u);
  EXPECT_TRUE(std::is_sorted(all.begin(), all.end()));
}

}  // namespace
}  // namespace ctoffload
