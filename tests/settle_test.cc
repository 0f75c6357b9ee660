// settle_test.cc - the commit, read back, resend policy (netlink/settle.h).
#include "netlink/settle.h"

#include <gtest/gtest.h>

#include <vector>

namespace ctoffload::netlink {
namespace {

// The loop a site writes: the rounds in order, the first always, as many
// as the site's count at most, fewer when it breaks out.
std::vector<int> rounds_run(const Settle& settle, int stop_after) {
  std::vector<int> seen;
  for (const Settle::Round& r : settle) {
    seen.push_back(r.index);
    EXPECT_EQ(r.rounds, settle.rounds());
    EXPECT_EQ(r.first(), r.index == 0);
    EXPECT_EQ(r.more(), r.index + 1 < settle.rounds());
    if (r.index == stop_after) break;
  }
  return seen;
}

TEST(SettleTest, RunsTheFirstRoundAndResendsWhileRoundsRemain) {
  EXPECT_EQ(rounds_run(Settle(3), -1), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(rounds_run(Settle(3), 1), (std::vector<int>{0, 1})) << "a site that has nothing to resend stops";
  EXPECT_EQ(rounds_run(Settle(1), -1), (std::vector<int>{0}));
  EXPECT_EQ(Settle(0).rounds(), 1) << "the first send always happens";
  EXPECT_EQ(rounds_run(Settle(0), -1), (std::vector<int>{0}));
}

TEST(SettleTest, ALostVerdictIsReadBackAndResentOnlyWhileARoundRemains) {
  const Settle::Round first{0, 2};
  const Settle::Round last{1, 2};
  EXPECT_TRUE(first.first());
  EXPECT_TRUE(first.more());
  EXPECT_FALSE(last.more());
  EXPECT_EQ(first.lost(ReadBack::kApplied), Fate::kApplied);
  EXPECT_EQ(first.lost(ReadBack::kNotApplied), Fate::kResend);
  EXPECT_EQ(first.lost(ReadBack::kIdempotent), Fate::kResend);
  EXPECT_EQ(first.lost(ReadBack::kFailed), Fate::kFailed) << "never a success that may be false";
  EXPECT_EQ(last.lost(ReadBack::kApplied), Fate::kApplied);
  EXPECT_EQ(last.lost(ReadBack::kNotApplied), Fate::kFailed) << "out of rounds: the lost verdict's error";
  EXPECT_EQ(last.lost(ReadBack::kIdempotent), Fate::kFailed);
  EXPECT_EQ(first.again(), Fate::kResend);
  EXPECT_EQ(last.again(), Fate::kFailed);
}

}  // namespace
}  // namespace ctoffload::netlink
