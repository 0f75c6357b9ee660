// capi_test.cc - the C API over the global registry, with a provider
// written in C (tests/c_provider.c, compiled as C).
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <cstring>
#include <string>

#include "c_provider.h"
#include "ctoffload/ct-offload.h"
#include "test_support.h"

namespace {

using ctoffload::testing::ctx_of;
using ctoffload::testing::tcp4;

class CApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    c_provider_reset(81);
    ASSERT_EQ(ct_offload_register(c_provider_class()), 0) << ct_offload_last_error();
  }
  void TearDown() override { ct_offload_unregister(c_provider_class()); }
};

TEST_F(CApiTest, CProviderRegistersOnceAndInitRuns) {
  EXPECT_EQ(c_provider_get_counts().inits, 1);
  EXPECT_EQ(ct_offload_register(c_provider_class()), EEXIST);
  EXPECT_NE(std::string(ct_offload_last_error()).find("already registered"), std::string::npos);
  char names[64];
  ASSERT_EQ(ct_offload_providers(names, sizeof names), 0);
  EXPECT_STREQ(names, "c-provider");
}

TEST_F(CApiTest, DispatchReachesTheCProvider) {
  auto c = tcp4("10.0.0.1", 1000, "10.0.0.2", 80, 7);
  ct_offload_netdev dev{};
  std::strcpy(dev.name, "veth1");
  dev.ifindex = 5;
  ct_offload_ctx ctx{&c, &dev, 42};
  EXPECT_TRUE(ct_offload_can_offload(&ctx));
  EXPECT_EQ(ct_offload_conn_add(&ctx), 0);
  EXPECT_EQ(ct_offload_conn_update(&ctx), 1700000000777LL);
  ct_offload_conn_established(&ctx);
  ct_offload_conn_del(&ctx);
  ct_offload_flush();
  auto n = c_provider_get_counts();
  EXPECT_EQ(n.adds, 1);
  EXPECT_EQ(n.updates, 1);
  EXPECT_EQ(n.established, 1);
  EXPECT_EQ(n.dels, 1);
  EXPECT_EQ(n.flushes, 1);
  EXPECT_EQ(n.last_input_port, 42u);
  EXPECT_STREQ(n.last_netdev, "veth1");
}

TEST_F(CApiTest, ConnAddErrorComesBackWithAMessage) {
  auto c = tcp4("10.0.0.1", 1000, "10.0.0.2", 81);
  ct_offload_ctx ctx = ctx_of(c);
  EXPECT_EQ(ct_offload_conn_add(&ctx), ENOSPC);
  std::string msg = ct_offload_last_error();
  EXPECT_NE(msg.find("10.0.0.2:81"), std::string::npos) << msg;
}

TEST_F(CApiTest, BadInputIsRefusedBeforeAnyProviderSeesIt) {
  EXPECT_EQ(ct_offload_conn_add(nullptr), EINVAL);
  ct_offload_ctx no_conn{};
  EXPECT_EQ(ct_offload_conn_add(&no_conn), EINVAL);
  auto c = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  c.orig.dst_port = 0;
  ct_offload_ctx ctx = ctx_of(c);
  EXPECT_EQ(ct_offload_conn_add(&ctx), EINVAL);
  EXPECT_NE(std::string(ct_offload_last_error()).find("destination port is 0"), std::string::npos);
  EXPECT_EQ(std::string(ct_offload_last_error()).rfind("ct_offload_conn_add: ", 0), 0u) << ct_offload_last_error();
  EXPECT_FALSE(ct_offload_can_offload(&ctx));
  EXPECT_EQ(c_provider_get_counts().adds, 0);
  EXPECT_EQ(ct_offload_register(nullptr), EINVAL);
}

TEST_F(CApiTest, BatchAddOfAnInvalidConnectionFailsAloneBeforeAnyProviderSeesIt) {
  auto good = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  auto bad = good;
  bad.proto = IPPROTO_ICMP;
  ct_offload_ctx good_ctx = ctx_of(good);
  ct_offload_ctx bad_ctx = ctx_of(bad);
  ct_offload_op_batch batch;
  ct_offload_op_batch_init(&batch);
  ASSERT_EQ(ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, &bad_ctx), 0);
  ASSERT_EQ(ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, &good_ctx), 0);
  ASSERT_EQ(ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_POLICY, &bad_ctx), 0);
  ct_offload_op_batch_submit(&batch);
  EXPECT_EQ(batch.ops[0].error, EPROTONOSUPPORT);
  EXPECT_EQ(batch.ops[1].error, 0);
  EXPECT_EQ(batch.ops[2].error, EPERM);
  EXPECT_EQ(c_provider_get_counts().adds, 1);
  EXPECT_FALSE(ct_offload_conn_is_offloaded(&bad_ctx));
  ct_offload_conn_del(&good_ctx);
  ct_offload_op_batch_destroy(&batch);
}

TEST_F(CApiTest, CallerWrittenInCGetsPerOpResults) {
  int results[4] = {-1, -1, -1, -1};
  ASSERT_EQ(c_caller_run(results), 0);
  EXPECT_EQ(results[0], 0);        // ADD a.
  EXPECT_EQ(results[1], ENOSPC);   // ADD b: the provider refuses port 81.
  EXPECT_EQ(results[2], 0);        // UPD a: zone 7 has a last-used time.
  EXPECT_EQ(results[3], ENODATA);  // UPD b: nobody knows.
}

// The series' names from C: FOR_EACH, len/size, EST once after the ADD,
// is_offloaded / is_established.
TEST_F(CApiTest, CallerWrittenInCAgainstTheSeries) {
  int errors[5] = {-1, -1, -1, -1, -1};
  size_t len = 0, size = 0;
  bool established = false;
  ASSERT_EQ(c_series_run(errors, &len, &size, &established), 0);
  EXPECT_EQ(errors[0], EALREADY);  // EST before the ADD.
  EXPECT_EQ(errors[1], 0);         // ADD.
  EXPECT_EQ(errors[2], 0);         // EST: delivered.
  EXPECT_EQ(errors[3], EALREADY);  // EST again.
  EXPECT_EQ(errors[4], 0);         // UPD: zone 7 has a last-used time.
  EXPECT_EQ(len, 5u);
  EXPECT_EQ(size, 8u);
  EXPECT_TRUE(established);
  EXPECT_EQ(c_provider_get_counts().established, 1);
}

TEST_F(CApiTest, OffloadStateFromTheCApi) {
  auto c = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  ct_offload_ctx ctx = ctx_of(c);
  EXPECT_FALSE(ct_offload_conn_is_offloaded(&ctx));
  ct_offload_conn_established(&ctx);  // Not added: nothing reaches the provider.
  EXPECT_EQ(c_provider_get_counts().established, 0);
  ASSERT_EQ(ct_offload_conn_add(&ctx), 0);
  EXPECT_TRUE(ct_offload_conn_is_offloaded(&ctx));
  EXPECT_FALSE(ct_offload_conn_is_established(&ctx));
  ct_offload_conn_established(&ctx);
  ct_offload_conn_established(&ctx);
  EXPECT_EQ(c_provider_get_counts().established, 1);
  EXPECT_TRUE(ct_offload_conn_is_established(&ctx));
  ct_offload_flush();
  EXPECT_FALSE(ct_offload_conn_is_offloaded(&ctx));
  EXPECT_FALSE(ct_offload_conn_is_offloaded(nullptr));
  EXPECT_FALSE(ct_offload_conn_is_established(nullptr));
}

TEST_F(CApiTest, BatchOpWithoutConnectionFailsAloneWithEinval) {
  auto c = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  ct_offload_ctx ctx = ctx_of(c);
  ct_offload_op_batch batch;
  ct_offload_op_batch_init(&batch);
  ASSERT_EQ(ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, &ctx), 0);
  ASSERT_EQ(ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, &ctx), 0);
  batch.ops[1].ctx.conn = nullptr;  // Corrupted by the caller after adding.
  ASSERT_EQ(ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_FLUSH, nullptr), 0);
  EXPECT_EQ(ct_offload_op_batch_add(&batch, CT_OFFLOAD_OP_ADD, nullptr), EINVAL);
  EXPECT_EQ(batch.n_ops, 3u);
  ct_offload_op_batch_submit(&batch);
  EXPECT_EQ(batch.ops[0].error, 0);
  EXPECT_EQ(batch.ops[1].error, EINVAL);
  EXPECT_EQ(batch.ops[2].error, 0);
  EXPECT_EQ(c_provider_get_counts().adds, 1);
  EXPECT_EQ(c_provider_get_counts().flushes, 1);
  ct_offload_op_batch_destroy(&batch);
  EXPECT_EQ(batch.ops, nullptr);
}

TEST_F(CApiTest, ConnQueryWithoutHolderIsEnoent) {
  auto c = tcp4("10.0.0.1", 1000, "10.0.0.2", 80);
  ct_offload_ctx ctx = ctx_of(c);
  ct_offload_conn_status st;
  EXPECT_EQ(ct_offload_conn_query(&ctx, &st), ENOENT);
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_NONE);
  EXPECT_EQ(ct_offload_conn_query(&ctx, nullptr), EINVAL);
}

TEST(CApiConfig, KeysAreValidatedAndReadBack) {
  char buf[64];
  EXPECT_EQ(ct_offload_config_set("priority", "software"), 0);
  ASSERT_EQ(ct_offload_config_get("priority", buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "software");
  EXPECT_EQ(ct_offload_config_set("priority", "software,software"), EINVAL);
  EXPECT_NE(std::string(ct_offload_last_error()).find("twice"), std::string::npos);
  EXPECT_EQ(ct_offload_config_set("priority", "quantum"), EINVAL);
  EXPECT_NE(std::string(ct_offload_last_error()).find("unknown provider 'quantum'"), std::string::npos);
  EXPECT_EQ(ct_offload_config_set("software.capacity", "0"), EINVAL);
  EXPECT_EQ(ct_offload_config_set("software.capacity", "lots"), EINVAL);
  EXPECT_EQ(ct_offload_config_set("software.colour", "blue"), EINVAL);
  EXPECT_EQ(ct_offload_config_set("bogus", "1"), EINVAL);
  EXPECT_EQ(ct_offload_config_set("software.capacity", "2048"), 0);
  ASSERT_EQ(ct_offload_config_get("software.capacity", buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "2048");
  char tiny[2];
  EXPECT_EQ(ct_offload_config_get("software.capacity", tiny, sizeof tiny), ERANGE);
  EXPECT_EQ(ct_offload_config_get("nope", buf, sizeof buf), ENOENT);
  EXPECT_EQ(ct_offload_config_set(nullptr, "x"), EINVAL);
}

TEST(CApiModuleInit, RegistersBuiltinsOnceAndTheSoftwareProviderTakesConnections) {
  ASSERT_EQ(ct_offload_config_set("priority", "software"), 0);
  ct_offload_module_init();
  ct_offload_module_init();
  char names[64];
  ASSERT_EQ(ct_offload_providers(names, sizeof names), 0);
  EXPECT_STREQ(names, "software");

  auto c = tcp4("10.9.0.1", 1000, "10.9.0.2", 80);
  ct_offload_ctx ctx = ctx_of(c);
  EXPECT_EQ(ct_offload_conn_add(&ctx), 0);
  ct_offload_conn_status st;
  ASSERT_EQ(ct_offload_conn_query(&ctx, &st), 0);
  EXPECT_STREQ(st.provider, "software");
  EXPECT_EQ(st.mode, CT_OFFLOAD_MODE_SW);
  EXPECT_EQ(ct_offload_conn_update(&ctx), 0);  // Never hit yet.
  ct_offload_flush();
  EXPECT_EQ(ct_offload_conn_query(&ctx, &st), ENOENT);
}

TEST(CApiConfig, EnabledAndUpdateSemanticsAreRegistryKeys) {
  char buf[64];
  EXPECT_TRUE(ct_offload_enabled());
  ASSERT_EQ(ct_offload_config_get("enabled", buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "true");
  ASSERT_EQ(ct_offload_config_set("enabled", "false"), 0);
  EXPECT_FALSE(ct_offload_enabled());
  ct_offload_force_enable(true);
  EXPECT_TRUE(ct_offload_enabled());
  ct_offload_force_enable(false);
  EXPECT_FALSE(ct_offload_enabled());
  ASSERT_EQ(ct_offload_config_set("enabled", "true"), 0);
  EXPECT_EQ(ct_offload_config_set("enabled", "perhaps"), EINVAL);
  EXPECT_NE(std::string(ct_offload_last_error()).find("enabled"), std::string::npos);

  ASSERT_EQ(ct_offload_config_get("update_semantics", buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "last_used");
  ASSERT_EQ(ct_offload_config_set("update_semantics", "used_since_last_query"), 0);
  ASSERT_EQ(ct_offload_config_get("update_semantics", buf, sizeof buf), 0);
  EXPECT_STREQ(buf, "used_since_last_query");
  EXPECT_EQ(ct_offload_config_set("update_semantics", "never"), EINVAL);
  ASSERT_EQ(ct_offload_config_set("update_semantics", "last_used"), 0);
}

TEST(CApiLog, LevelsAreValidated) {
  EXPECT_EQ(ct_offload_log_level("debug"), 0);
  EXPECT_EQ(ct_offload_log_level("loud"), EINVAL);
  EXPECT_EQ(ct_offload_log_level("warn"), 0);
}

}  // namespace
