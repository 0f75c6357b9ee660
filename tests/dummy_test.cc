// dummy_test.cc - the dummy provider (ct-offload-dummy.h) through the C API,
// as a datapath's unit tests use it.
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>
#include <thread>
#include <vector>

#include "ctoffload/ct-offload-dummy.h"
#include "ctoffload/ct-offload.h"
#include "test_support.h"

namespace {

using ctoffload::testing::ctx_of;
using ctoffload::testing::tcp4;

class DummyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ct_offload_force_enable(true);
    ASSERT_EQ(ct_offload_dummy_register(), 0) << ct_offload_last_error();
  }
  void TearDown() override {
    ct_offload_flush();  // The registry's state too.
    ct_offload_dummy_unregister();
    ct_offload_force_enable(false);
    ASSERT_EQ(ct_offload_config_set("update_semantics", "last_used"), 0);
  }
};

TEST_F(DummyTest, RegistersByNameAndCountsEveryCallback) {
  char names[64];
  ASSERT_EQ(ct_offload_providers(names, sizeof names), 0);
  EXPECT_STREQ(names, "dummy");
  EXPECT_STREQ(ct_offload_dummy_class.name, "dummy");
  EXPECT_EQ(ct_offload_register(&ct_offload_dummy_class), EEXIST);
  EXPECT_TRUE(ct_offload_enabled());

  auto c = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  ct_offload_netdev fwd{}, rev{};
  std::strcpy(fwd.name, "eth0");
  std::strcpy(rev.name, "eth1");
  ct_offload_ctx ctx{&c, &fwd, 1};
  ct_offload_ctx reply{&c, &rev, 2};
  EXPECT_FALSE(ct_offload_dummy_contains(&c));
  EXPECT_TRUE(ct_offload_can_offload(&ctx));
  ASSERT_EQ(ct_offload_conn_add(&ctx), 0);
  EXPECT_TRUE(ct_offload_dummy_contains(&c));
  EXPECT_FALSE(ct_offload_dummy_is_bidirectional(&c));
  ct_offload_conn_established(&reply);
  ct_offload_conn_established(&reply);  // Once: the registry stops the repeat.
  EXPECT_TRUE(ct_offload_dummy_is_bidirectional(&c));
  EXPECT_NE(ct_offload_conn_update(&ctx), 0);
  ct_offload_conn_status st;
  ASSERT_EQ(ct_offload_conn_query(&ctx, &st), 0);
  EXPECT_STREQ(st.provider, "dummy");
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_SW);
  ct_offload_conn_del(&ctx);
  EXPECT_FALSE(ct_offload_dummy_contains(&c));

  ct_offload_dummy_counts n;
  ct_offload_dummy_get_counts(&n);
  EXPECT_EQ(n.init, 1u) << "register resets the dummy, then init runs";
  EXPECT_EQ(n.can_offload, 2u);  // ct_offload_can_offload() and conn_add's question.
  EXPECT_EQ(n.conn_add, 1u);
  EXPECT_EQ(n.conn_established, 1u);
  EXPECT_EQ(n.conn_update, 1u);
  EXPECT_EQ(n.conn_query, 1u);
  EXPECT_EQ(n.conn_del, 1u);
  EXPECT_EQ(ct_offload_dummy_n_added(), 1u);
  EXPECT_EQ(ct_offload_dummy_n_established(), 1u);
  EXPECT_EQ(ct_offload_dummy_n_updated(), 1u);
  EXPECT_EQ(ct_offload_dummy_n_deleted(), 1u);
  ct_offload_dummy_reset_counters();
  EXPECT_EQ(ct_offload_dummy_n_added(), 0u);
}

TEST_F(DummyTest, MatchesConnectionsByIdentityNotByPointer) {
  auto c = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  ct_offload_ctx ctx = ctx_of(c);
  ASSERT_EQ(ct_offload_conn_add(&ctx), 0);
  const auto copy = c;
  EXPECT_TRUE(ct_offload_dummy_contains(&copy));
  auto other_zone = c;
  other_zone.zone = 4;
  EXPECT_FALSE(ct_offload_dummy_contains(&other_zone));
  EXPECT_EQ(ct_offload_dummy_n_held(), 1u);
  EXPECT_EQ(ct_offload_conn_add(&ctx), EEXIST) << "it holds it already";
}

TEST_F(DummyTest, RefusesWhenToldAndFlushForgetsEverything) {
  auto a = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  auto b = tcp4("10.0.0.1", 1001, "10.0.0.2", 80);
  ct_offload_ctx ca = ctx_of(a), cb = ctx_of(b);
  ct_offload_dummy_set_add_error(ENOSPC);
  EXPECT_EQ(ct_offload_conn_add(&ca), ENOSPC);
  EXPECT_FALSE(ct_offload_conn_is_offloaded(&ca));
  ct_offload_dummy_counts n;
  ct_offload_dummy_get_counts(&n);
  EXPECT_EQ(n.conn_add_refused, 1u);
  ct_offload_dummy_set_add_error(0);
  ASSERT_EQ(ct_offload_conn_add(&ca), 0);
  ASSERT_EQ(ct_offload_conn_add(&cb), 0);
  ct_offload_flush();
  EXPECT_EQ(ct_offload_dummy_n_held(), 0u);
  EXPECT_EQ(ct_offload_dummy_n_deleted(), 2u);
  EXPECT_FALSE(ct_offload_conn_is_offloaded(&ca));
  ct_offload_dummy_reset();
  EXPECT_EQ(ct_offload_dummy_n_deleted(), 0u);
}

TEST_F(DummyTest, LastUseIsTheAddUntilTouchedAndAlwaysMovesForward) {
  auto c = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  ct_offload_ctx ctx = ctx_of(c);
  EXPECT_EQ(ct_offload_dummy_touch(&c), 0) << "not held";
  ASSERT_EQ(ct_offload_conn_add(&ctx), 0);
  const long long added = ct_offload_dummy_last_used(&c);
  EXPECT_GT(added, 1700000000000LL);
  EXPECT_EQ(ct_offload_conn_update(&ctx), added);
  EXPECT_EQ(ct_offload_conn_update(&ctx), added) << "idle: the same answer (last_used semantics)";
  const long long t1 = ct_offload_dummy_touch(&c);
  const long long t2 = ct_offload_dummy_touch(&c);
  EXPECT_GT(t1, added);
  EXPECT_GT(t2, t1);
  EXPECT_EQ(ct_offload_conn_update(&ctx), t2);
}

// The RFC's conntrack sweep over the dummy, the way a datapath's unit test
// would run it: expired offloaded connections get an UPD each; those whose
// op->error is 0 stay one more interval, the others are deleted.
TEST_F(DummyTest, UnderUsedSinceLastQueryTheSweepAgesOutTheIdleAndKeepsTheBusy) {
  ASSERT_EQ(ct_offload_config_set("update_semantics", "used_since_last_query"), 0);
  auto idle = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  auto busy = tcp4("10.0.0.1", 1001, "10.0.0.2", 80);
  std::vector<ct_offload_ctx> ctxs = {ctx_of(idle), ctx_of(busy)};
  for (auto& ctx : ctxs) ASSERT_EQ(ct_offload_conn_add(&ctx), 0);
  auto sweep = [&] {
    std::vector<bool> kept;
    ct_offload_op_batch batch;
    ct_offload_op* op;
    ct_offload_op_batch_init(&batch);
    for (auto& ctx : ctxs) {
      if (ct_offload_conn_is_offloaded(&ctx)) ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_UPD, &ctx);
    }
    ct_offload_op_batch_submit(&batch);
    CT_OFFLOAD_BATCH_OP_FOR_EACH(i, op, &batch) {
      kept.push_back(op->error == 0);
      if (op->error != 0) ct_offload_conn_del(&op->ctx);
    }
    ct_offload_op_batch_destroy(&batch);
    return kept;
  };
  EXPECT_EQ(sweep(), (std::vector<bool>{true, true})) << "first sweep: both were used since the add";
  ct_offload_dummy_touch(&busy);
  EXPECT_EQ(sweep(), (std::vector<bool>{false, true})) << "second sweep: the idle one is reported idle";
  EXPECT_FALSE(ct_offload_dummy_contains(&idle));
  EXPECT_TRUE(ct_offload_dummy_contains(&busy));
  EXPECT_EQ(sweep(), (std::vector<bool>{false})) << "busy, then idle for a sweep: it goes too";
  EXPECT_EQ(ct_offload_dummy_n_held(), 0u);
}

TEST(DummyConcurrency, CountsAreExactUnderConcurrentDispatch) {
  ct_offload_force_enable(true);
  ASSERT_EQ(ct_offload_dummy_register(), 0);
  auto worker = [](uint16_t base) {
    for (uint16_t i = 0; i < 500; ++i) {
      auto c = tcp4("10.0.0.1", static_cast<uint16_t>(base + i), "10.0.0.2", 80);
      ct_offload_ctx ctx = ctx_of(c);
      (void)ct_offload_conn_add(&ctx);
      ct_offload_conn_established(&ctx);
      (void)ct_offload_conn_update(&ctx);
      ct_offload_conn_del(&ctx);
    }
  };
  std::thread a(worker, 1000), b(worker, 2000);
  a.join();
  b.join();
  EXPECT_EQ(ct_offload_dummy_n_added(), 1000u);
  EXPECT_EQ(ct_offload_dummy_n_established(), 1000u);
  EXPECT_EQ(ct_offload_dummy_n_updated(), 1000u);
  EXPECT_EQ(ct_offload_dummy_n_deleted(), 1000u);
  EXPECT_EQ(ct_offload_dummy_n_held(), 0u);
  ct_offload_dummy_unregister();
  ct_offload_force_enable(false);
}

}  // namespace
