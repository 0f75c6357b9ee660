// registry_test.cc - the contract of DESIGN.md section 3, line by line, plus
// fallback, batch and concurrency, on private Registry instances.
#include "ctoffload/registry.h"

#include <gtest/gtest.h>
#include <netinet/in.h>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "providers/software.h"
#include "test_support.h"

namespace ctoffload {
namespace {

using testing::ctx_of;
using testing::tcp4;

// Every call any Recorder sees, in order, as "name:call".
class CallLog {
 public:
  void add(const std::string& s) {
    std::lock_guard lock(mutex_);
    calls_.push_back(s);
  }
  std::vector<std::string> take() {
    std::lock_guard lock(mutex_);
    return std::exchange(calls_, {});
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> calls_;
};

// A provider that records its calls and answers as configured.
class Recorder : public Provider {
 public:
  Recorder(std::string name, CallLog* log) : name_(std::move(name)), log_(log) {}

  std::string name_;
  CallLog* log_;
  bool fallback_ = false;
  int init_error_ = 0;
  bool can_ = true;
  int add_error_ = 0;
  long long last_used_ = 0;
  bool batch_ = false;
  bool est_ = true;
  std::atomic<int> adds_{0};

  std::string name() const override { return name_; }
  bool is_fallback() const override { return fallback_; }
  int init() override {
    log_->add(name_ + ":init");
    return init_error_;
  }
  int conn_add(const Ctx&) override {
    ++adds_;
    log_->add(name_ + ":add");
    return add_error_;
  }
  void conn_del(const Ctx&) override { log_->add(name_ + ":del"); }
  long long conn_update(const Ctx&) override {
    log_->add(name_ + ":upd");
    return last_used_;
  }
  bool has_conn_established() const override { return est_; }
  void conn_established(const Ctx&) override { log_->add(name_ + ":est"); }
  bool can_offload(const Ctx&) override {
    log_->add(name_ + ":can");
    return can_;
  }
  void flush() override { log_->add(name_ + ":flush"); }
  bool has_batch() const override { return batch_; }
  void batch_submit(std::span<Op> ops) override {
    log_->add(name_ + ":batch" + std::to_string(ops.size()));
    for (auto& op : ops) {
      if (op.type == CT_OFFLOAD_OP_ADD) op.error = add_error_;
      if (op.type == CT_OFFLOAD_OP_UPD) op.last_used = last_used_;
    }
  }
  bool conn_query(const Ctx&, ConnStatus* st) override {
    if (adds_ == 0 || add_error_ != 0) return false;
    st->mode = CT_OFFLOAD_MODE_SW;
    st->packets = 7;
    return true;
  }
};

class RegistryTest : public ::testing::Test {
 protected:
  std::shared_ptr<Recorder> make(const std::string& name) { return std::make_shared<Recorder>(name, &log_); }
  std::shared_ptr<Recorder> add(const std::string& name) {
    auto p = make(name);
    EXPECT_TRUE(reg_.add(p).ok());
    log_.take();  // Drop the init call.
    return p;
  }

  CallLog log_;
  Registry reg_;
  Conn conn_ = tcp4("10.0.0.1", 1234, "10.0.0.2", 80);
  Ctx ctx_ = ctx_of(conn_);
};

using Calls = std::vector<std::string>;

// ---- Contract line 1: register ----

TEST_F(RegistryTest, RegisterNullProviderReturnsEinval) {
  EXPECT_EQ(reg_.add(std::shared_ptr<Provider>()).err(), EINVAL);
  EXPECT_EQ(reg_.add(static_cast<const ct_offload_class*>(nullptr)).err(), EINVAL);
  ct_offload_class nameless{};
  EXPECT_EQ(reg_.add(&nameless).err(), EINVAL);
  EXPECT_EQ(reg_.add(make("")).err(), EINVAL);
  EXPECT_EQ(reg_.add(make(std::string(32, 'x'))).err(), EINVAL);
  EXPECT_TRUE(reg_.providers().empty());
}

TEST_F(RegistryTest, RegisterDuplicateNameReturnsEexist) {
  add("a");
  auto again = make("a");
  Status s = reg_.add(again);
  EXPECT_EQ(s.err(), EEXIST);
  EXPECT_EQ(log_.take(), Calls{}) << "init must not run for a refused duplicate";
  EXPECT_EQ(reg_.providers(), (std::vector<std::string>{"a"}));
}

TEST_F(RegistryTest, RegisterInitFailureIsReturnedAndNothingRegistered) {
  auto p = make("a");
  p->init_error_ = ENODEV;
  EXPECT_EQ(reg_.add(p).err(), ENODEV);
  EXPECT_EQ(log_.take(), Calls{"a:init"});
  EXPECT_TRUE(reg_.providers().empty());
  reg_.flush();
  EXPECT_EQ(log_.take(), Calls{});
}

TEST_F(RegistryTest, RegisterAppendsInRegistrationOrder) {
  add("b");
  add("a");
  add("c");
  EXPECT_EQ(reg_.providers(), (std::vector<std::string>{"b", "a", "c"}));
  reg_.flush();
  EXPECT_EQ(log_.take(), (Calls{"b:flush", "a:flush", "c:flush"}));
}

// ---- Contract line 2: unregister ----

TEST_F(RegistryTest, UnregisterIsByIdentity) {
  auto a = add("a");
  auto impostor = make("a");
  EXPECT_FALSE(reg_.remove(impostor.get()));
  EXPECT_EQ(reg_.providers().size(), 1u);
  EXPECT_TRUE(reg_.remove(a.get()));
  EXPECT_TRUE(reg_.providers().empty());
}

TEST_F(RegistryTest, UnregisterUnknownIsANoOp) {
  add("a");
  auto stranger = make("z");
  EXPECT_FALSE(reg_.remove(stranger.get()));
  EXPECT_FALSE(reg_.remove(static_cast<const Provider*>(nullptr)));
  EXPECT_EQ(reg_.providers(), (std::vector<std::string>{"a"}));
}

TEST_F(RegistryTest, UnregisteredProviderIsNotCalledAgain) {
  auto a = add("a");
  add("b");
  ASSERT_TRUE(reg_.remove(a.get()));
  reg_.conn_del(ctx_);
  EXPECT_EQ(log_.take(), Calls{"b:del"});
}

// ---- Contract line 3: module_init ----

TEST_F(RegistryTest, ModuleInitTwiceIsHarmless) {
  ASSERT_TRUE(reg_.config().set("priority", "software").ok());
  EXPECT_TRUE(reg_.module_init().ok());
  EXPECT_TRUE(reg_.module_init().ok());
  EXPECT_EQ(reg_.providers(), (std::vector<std::string>{"software"}));
}

TEST_F(RegistryTest, ModuleInitRegistersNothingForAnEmptyPriority) {
  ASSERT_TRUE(reg_.config().set("priority", "").ok());
  EXPECT_TRUE(reg_.module_init().ok());
  EXPECT_TRUE(reg_.providers().empty());
}

TEST_F(RegistryTest, ModuleInitAppliesOptionsAndLocksThemWhileRegistered) {
  ASSERT_TRUE(reg_.config().set("priority", "software").ok());
  ASSERT_TRUE(reg_.config().set("software.capacity", "1000").ok());
  EXPECT_TRUE(reg_.module_init().ok());
  auto sw = std::dynamic_pointer_cast<SoftwareProvider>(reg_.find("software"));
  ASSERT_NE(sw, nullptr);
  EXPECT_EQ(sw->capacity(), 1000u);
  EXPECT_TRUE(sw->is_fallback());
  EXPECT_EQ(reg_.config().set("software.capacity", "10").err(), EBUSY);
  ASSERT_TRUE(reg_.remove(sw.get()));
  EXPECT_TRUE(reg_.config().set("software.capacity", "10").ok());
}

// ---- Contract line 4: conn_add ----

TEST_F(RegistryTest, ConnAddSkipsProviderThatCannotOffload) {
  auto a = add("a");
  add("b");
  a->can_ = false;
  EXPECT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_EQ(log_.take(), (Calls{"a:can", "b:can", "b:add"}));
}

TEST_F(RegistryTest, ConnAddReturnsFirstErrorButNotifiesTheRest) {
  auto a = add("a");
  auto b = add("b");
  auto c = add("c");
  b->add_error_ = ENOSPC;
  c->add_error_ = EIO;
  EXPECT_EQ(reg_.conn_add(ctx_), ENOSPC);
  EXPECT_EQ(log_.take(), (Calls{"a:can", "a:add", "b:can", "b:add", "c:can", "c:add"}));
}

TEST_F(RegistryTest, ConnAddWithoutProvidersReturnsZero) { EXPECT_EQ(reg_.conn_add(ctx_), 0); }

TEST_F(RegistryTest, ConnAddSkipsClassWithoutConnAdd) {
  static CallLog* s_log = nullptr;
  s_log = &log_;
  ct_offload_class cls{};
  cls.name = "c-no-add";
  cls.can_offload = [](const ct_offload_ctx*) {
    s_log->add("c:can");
    return true;
  };
  ASSERT_TRUE(reg_.add(&cls).ok());
  add("b");
  EXPECT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_EQ(log_.take(), (Calls{"b:can", "b:add"}));
  EXPECT_TRUE(reg_.remove(&cls));
}

TEST_F(RegistryTest, ConnAddDoesNotAskAProviderThatTakesEverything) {
  struct TakesAll : Recorder {
    using Recorder::Recorder;
    bool has_can_offload() const override { return false; }
  };
  ASSERT_TRUE(reg_.add(std::make_shared<TakesAll>("all", &log_)).ok());
  add("b");
  log_.take();
  EXPECT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_EQ(log_.take(), (Calls{"all:add", "b:can", "b:add"}));
  // The same in a batch.
  Op op{};
  op.type = CT_OFFLOAD_OP_ADD;
  op.ctx = ctx_;
  reg_.submit({&op, 1});
  EXPECT_EQ(op.error, 0);
  EXPECT_EQ(log_.take(), (Calls{"all:add", "b:can", "b:add"}));
  // Registry::can_offload still asks every provider: it is the question
  // itself, and the default answer is yes.
  EXPECT_TRUE(reg_.can_offload(ctx_));
}

// A C class is called on its own function pointers; the ones it leaves NULL
// must be skipped, not called, on every path.
TEST_F(RegistryTest, CClassCallbacksLeftNullAreSkippedOnEveryPath) {
  static CallLog* s_log = nullptr;
  s_log = &log_;
  ct_offload_class only_add{};
  only_add.name = "c-only-add";
  only_add.conn_add = [](const ct_offload_ctx*) {
    s_log->add("c:add");
    return 0;
  };
  ASSERT_TRUE(reg_.add(&only_add).ok());
  EXPECT_EQ(reg_.conn_add(ctx_), 0);
  reg_.conn_del(ctx_);
  EXPECT_EQ(reg_.conn_update(ctx_), 0);
  reg_.conn_established(ctx_);
  std::array<Op, 4> ops{};
  for (size_t i = 0; i < ops.size(); ++i) ops[i].ctx = ctx_;
  ops[0].type = CT_OFFLOAD_OP_ADD;
  ops[1].type = CT_OFFLOAD_OP_DEL;
  ops[2].type = CT_OFFLOAD_OP_UPD;
  ops[3].type = CT_OFFLOAD_OP_EST;
  reg_.submit(ops);
  EXPECT_EQ(ops[0].error, 0);
  EXPECT_EQ(ops[1].error, 0);
  EXPECT_EQ(ops[2].error, ENODATA);  // Nobody knows when it was last used.
  EXPECT_EQ(ops[2].last_used, 0);
  EXPECT_EQ(ops[3].error, EALREADY);  // After the DEL the connection is not added.
  EXPECT_EQ(log_.take(), (Calls{"c:add", "c:add"}));
  EXPECT_TRUE(reg_.remove(&only_add));
}

TEST_F(RegistryTest, CClassWhoseCanOffloadSaysNoIsSkipped) {
  static CallLog* s_log = nullptr;
  s_log = &log_;
  ct_offload_class picky{};
  picky.name = "c-picky";
  picky.can_offload = [](const ct_offload_ctx* ctx) {
    s_log->add("c:can");
    return ctx->conn->orig.dst_port != 80;
  };
  picky.conn_add = [](const ct_offload_ctx*) {
    s_log->add("c:add");
    return 0;
  };
  picky.conn_update = [](const ct_offload_ctx*) { return 1234LL; };
  ASSERT_TRUE(reg_.add(&picky).ok());
  EXPECT_EQ(reg_.conn_add(ctx_), 0);  // Port 80: refused, and nobody else.
  EXPECT_EQ(log_.take(), (Calls{"c:can"}));
  Conn other = tcp4("10.0.0.1", 1234, "10.0.0.2", 443);
  EXPECT_EQ(reg_.conn_add(ctx_of(other)), 0);
  EXPECT_EQ(log_.take(), (Calls{"c:can", "c:add"}));
  EXPECT_EQ(reg_.conn_update(ctx_of(other)), 1234);
  EXPECT_TRUE(reg_.remove(&picky));
}

// Every callback of a C class - the registration's init, the per-connection
// ones, can_offload for can_offload() and POLICY, flush, batch_submit and
// conn_query - is made on the class's own function pointer: the registry
// makes no Provider of it, so find() has none to give.
TEST_F(RegistryTest, CClassIsCalledOnItsOwnPointersOnEveryPath) {
  static CallLog* s_log = nullptr;
  s_log = &log_;
  ct_offload_class full{};
  full.name = "c-full";
  full.init = [] {
    s_log->add("c:init");
    return 0;
  };
  full.can_offload = [](const ct_offload_ctx* ctx) {
    s_log->add("c:can");
    return ctx->conn->orig.dst_port == 80;
  };
  full.flush = [] { s_log->add("c:flush"); };
  full.conn_query = [](const ct_offload_ctx*, ct_offload_conn_status* st) {
    s_log->add("c:query");
    st->packets = 3;
    return true;
  };
  full.batch_submit = [](ct_offload_op_batch* b) {
    s_log->add("c:batch" + std::to_string(b->n_ops));
    for (size_t i = 0; i < b->n_ops; ++i) b->ops[i].error = 0;
  };
  full.conn_add = [](const ct_offload_ctx*) { return 0; };
  ASSERT_TRUE(reg_.add(&full).ok());
  EXPECT_EQ(log_.take(), (Calls{"c:init"}));
  EXPECT_EQ(reg_.find("c-full"), nullptr);
  EXPECT_EQ(reg_.providers(), (std::vector<std::string>{"c-full"}));

  EXPECT_TRUE(reg_.can_offload(ctx_));
  Conn other = tcp4("10.0.0.1", 1234, "10.0.0.2", 443);
  EXPECT_FALSE(reg_.can_offload(ctx_of(other)));
  EXPECT_EQ(log_.take(), (Calls{"c:can", "c:can"}));

  std::vector<Op> ops = {Op{CT_OFFLOAD_OP_POLICY, ctx_, -1, -1}, Op{CT_OFFLOAD_OP_POLICY, ctx_of(other), -1, -1},
                         Op{CT_OFFLOAD_OP_ADD, ctx_, -1, -1}, Op{CT_OFFLOAD_OP_FLUSH, ctx_, -1, -1}};
  reg_.submit(ops);
  EXPECT_EQ(ops[0].error, 0);
  EXPECT_EQ(ops[1].error, EPERM);
  EXPECT_EQ(ops[2].error, 0);
  EXPECT_EQ(ops[3].error, 0);
  // The batch callback gets the ADD and the FLUSH in one call.
  EXPECT_EQ(log_.take(), (Calls{"c:can", "c:batch2", "c:can", "c:can"}));

  auto st = reg_.conn_query(ctx_);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->packets, 3u);
  EXPECT_STREQ(st->provider, "c-full");
  reg_.flush();
  EXPECT_EQ(log_.take(), (Calls{"c:query", "c:flush"}));
  EXPECT_TRUE(reg_.remove(&full));
}

// A C class named like a built-in holds that name: module_init() leaves it
// alone and the built-in's options stay locked while it is registered.
TEST_F(RegistryTest, CClassWithABuiltinsNameKeepsTheBuiltinOut) {
  ct_offload_class named{};
  named.name = "software";
  ASSERT_TRUE(reg_.add(&named).ok());
  ASSERT_TRUE(reg_.set("priority", "software").ok());
  EXPECT_TRUE(reg_.module_init().ok());
  EXPECT_EQ(reg_.providers(), (std::vector<std::string>{"software"}));
  EXPECT_EQ(reg_.find("software"), nullptr);  // Still the C class.
  EXPECT_EQ(reg_.set("software.capacity", "100").err(), EBUSY);
  EXPECT_TRUE(reg_.remove(&named));
  EXPECT_TRUE(reg_.set("software.capacity", "100").ok());
}

// The registry is the boundary: a connection validate() refuses is refused
// there, once, with validate()'s errno and sentence, and no provider - C++
// or C, primary or fallback - is asked anything about it, single or batched.
TEST_F(RegistryTest, InvalidConnectionIsRefusedOnceBeforeAnyProviderSeesIt) {
  static CallLog* s_log = nullptr;
  s_log = &log_;
  auto a = add("a");
  auto fb = make("fb");
  fb->fallback_ = true;
  ASSERT_TRUE(reg_.add(fb).ok());
  ct_offload_class cls{};
  cls.name = "c";
  cls.can_offload = [](const ct_offload_ctx*) {
    s_log->add("c:can");
    return true;
  };
  cls.conn_add = [](const ct_offload_ctx*) {
    s_log->add("c:add");
    return 0;
  };
  ASSERT_TRUE(reg_.add(&cls).ok());
  log_.take();

  Conn zero_port = conn_;
  zero_port.orig.dst_port = 0;
  std::string why;
  EXPECT_EQ(reg_.conn_add(ctx_of(zero_port), &why), EINVAL);
  EXPECT_NE(why.find("original destination port is 0"), std::string::npos) << why;
  Conn sctp = conn_;
  sctp.proto = IPPROTO_SCTP;
  EXPECT_EQ(reg_.conn_add(ctx_of(sctp)), EPROTONOSUPPORT);
  EXPECT_FALSE(reg_.can_offload(ctx_of(zero_port)));
  EXPECT_FALSE(reg_.is_offloaded(ctx_of(zero_port)));

  std::vector<Op> ops = {Op{CT_OFFLOAD_OP_ADD, ctx_of(zero_port), -1, -1},
                         Op{CT_OFFLOAD_OP_POLICY, ctx_of(zero_port), -1, -1},
                         Op{CT_OFFLOAD_OP_ADD, ctx_of(sctp), -1, -1}};
  reg_.submit(ops);
  EXPECT_EQ(ops[0].error, EINVAL);
  EXPECT_EQ(ops[1].error, EPERM);
  EXPECT_EQ(ops[2].error, EPROTONOSUPPORT);
  EXPECT_EQ(log_.take(), Calls{});  // Nobody was asked.
  EXPECT_EQ(a->adds_, 0);
  EXPECT_EQ(fb->adds_, 0);

  // A valid connection in the same batch still gets through.
  std::vector<Op> mixed = {Op{CT_OFFLOAD_OP_ADD, ctx_of(zero_port), -1, -1}, Op{CT_OFFLOAD_OP_ADD, ctx_, -1, -1}};
  reg_.submit(mixed);
  EXPECT_EQ(mixed[0].error, EINVAL);
  EXPECT_EQ(mixed[1].error, 0);
  EXPECT_EQ(log_.take(), (Calls{"a:can", "a:add", "c:can", "c:add"}));
  EXPECT_TRUE(reg_.remove(&cls));
}

// A provider's own error comes back with the connection and what it means.
TEST_F(RegistryTest, ConnAddSaysWhyAProviderRefused) {
  auto a = add("a");
  a->add_error_ = ENOSPC;
  std::string why;
  EXPECT_EQ(reg_.conn_add(ctx_, &why), ENOSPC);
  EXPECT_NE(why.find("10.0.0.2:80"), std::string::npos) << why;
  EXPECT_NE(why.find("No space left on device"), std::string::npos) << why;
}

// ---- Contract line 5: conn_del ----

TEST_F(RegistryTest, ConnDelReachesEveryProviderUnconditionally) {
  auto a = add("a");
  auto f = make("f");
  f->fallback_ = true;
  ASSERT_TRUE(reg_.add(f).ok());
  add("b");
  log_.take();
  a->can_ = false;
  f->can_ = false;
  reg_.conn_del(ctx_);
  EXPECT_EQ(log_.take(), (Calls{"a:del", "b:del", "f:del"}));
}

// ---- Contract line 6: conn_established ----
//
// Changed by the series' patch 07: the event reaches the providers that
// have it once per connection, and only after an accepted add.

TEST_F(RegistryTest, ConnEstablishedReachesEveryProviderThatHasIt) {
  add("a");
  auto b = add("b");
  add("c");
  b->est_ = false;
  // has_conn_established() is read at registration: re-register b.
  ASSERT_TRUE(reg_.remove(b.get()));
  ASSERT_TRUE(reg_.add(b).ok());
  ASSERT_EQ(reg_.conn_add(ctx_), 0);
  log_.take();
  EXPECT_EQ(reg_.conn_established(ctx_), 0);
  EXPECT_EQ(log_.take(), (Calls{"a:est", "c:est"}));
}

// ---- Contract line 7: conn_update ----

TEST_F(RegistryTest, ConnUpdateReturnsFirstNonZeroInOrder) {
  auto a = add("a");
  auto b = add("b");
  auto c = add("c");
  b->last_used_ = 1700000000123;
  c->last_used_ = 1800000000000;
  EXPECT_EQ(reg_.conn_update(ctx_), 1700000000123);
  EXPECT_EQ(log_.take(), (Calls{"a:upd", "b:upd"}));
}

TEST_F(RegistryTest, ConnUpdateReturnsZeroWhenNoProviderKnows) {
  add("a");
  add("b");
  EXPECT_EQ(reg_.conn_update(ctx_), 0);
  EXPECT_EQ(log_.take(), (Calls{"a:upd", "b:upd"}));
}

// ---- Contract line 8: can_offload ----

TEST_F(RegistryTest, CanOffloadIsTrueIfAnyProviderSaysYes) {
  auto a = add("a");
  auto b = add("b");
  a->can_ = false;
  b->can_ = true;
  EXPECT_TRUE(reg_.can_offload(ctx_));
  b->can_ = false;
  EXPECT_FALSE(reg_.can_offload(ctx_));
  Registry empty;
  EXPECT_FALSE(empty.can_offload(ctx_));
}

// ---- Contract line 9: flush ----

TEST_F(RegistryTest, FlushReachesEveryProvider) {
  add("a");
  add("b");
  reg_.flush();
  EXPECT_EQ(log_.take(), (Calls{"a:flush", "b:flush"}));
}

// ---- Contract line 10: batches, each op with its own error ----

TEST_F(RegistryTest, BatchGivesEveryOpItsOwnResult) {
  auto a = add("a");
  a->last_used_ = 0;
  Conn other = tcp4("10.0.0.3", 1, "10.0.0.4", 2);
  std::vector<Op> ops(7);
  ops[0] = Op{CT_OFFLOAD_OP_ADD, ctx_, -1, -1};
  ops[1] = Op{CT_OFFLOAD_OP_UPD, ctx_of(other), -1, -1};
  ops[2] = Op{CT_OFFLOAD_OP_POLICY, ctx_, -1, -1};
  ops[3] = Op{CT_OFFLOAD_OP_EST, ctx_, -1, -1};
  ops[4] = Op{CT_OFFLOAD_OP_DEL, ctx_, -1, -1};
  ops[5] = Op{CT_OFFLOAD_OP_FLUSH, ctx_, -1, -1};
  ops[6] = Op{static_cast<ct_offload_op_type>(42), ctx_, -1, -1};
  reg_.submit(ops);
  EXPECT_EQ(ops[0].error, 0);
  EXPECT_EQ(ops[1].error, ENODATA);
  EXPECT_EQ(ops[1].last_used, 0);
  EXPECT_EQ(ops[2].error, 0);
  EXPECT_EQ(ops[3].error, 0);
  EXPECT_EQ(ops[4].error, 0);
  EXPECT_EQ(ops[5].error, 0);
  EXPECT_EQ(ops[6].error, EINVAL);

  a->can_ = false;
  a->last_used_ = 42;
  std::vector<Op> more = {Op{CT_OFFLOAD_OP_POLICY, ctx_, -1, -1}, Op{CT_OFFLOAD_OP_UPD, ctx_, -1, -1}};
  reg_.submit(more);
  EXPECT_EQ(more[0].error, EPERM);
  EXPECT_EQ(more[1].error, 0);
  EXPECT_EQ(more[1].last_used, 42);
}

TEST_F(RegistryTest, BatchWithoutBatchCallbackIsSplitIntoSingleCallsInOrder) {
  add("a");
  std::vector<Op> ops = {Op{CT_OFFLOAD_OP_ADD, ctx_, 0, 0}, Op{CT_OFFLOAD_OP_DEL, ctx_, 0, 0},
                         Op{CT_OFFLOAD_OP_ADD, ctx_, 0, 0}};
  reg_.submit(ops);
  EXPECT_EQ(log_.take(), (Calls{"a:can", "a:can", "a:add", "a:del", "a:add"}));
}

TEST_F(RegistryTest, BatchGoesToTheBatchCallbackInOneCall) {
  auto a = add("a");
  a->batch_ = true;
  ASSERT_TRUE(reg_.remove(a.get()));
  ASSERT_TRUE(reg_.add(a).ok());
  add("b");
  log_.take();
  a->add_error_ = ENOSPC;
  std::vector<Op> ops = {Op{CT_OFFLOAD_OP_ADD, ctx_, 0, 0}, Op{CT_OFFLOAD_OP_ADD, ctx_, 0, 0},
                         Op{CT_OFFLOAD_OP_DEL, ctx_, 0, 0}};
  reg_.submit(ops);
  EXPECT_EQ(log_.take(), (Calls{"a:can", "a:can", "a:batch3", "b:can", "b:can", "b:add", "b:add", "b:del"}));
  EXPECT_EQ(ops[0].error, ENOSPC);  // First error, as a single conn_add would return.
  EXPECT_EQ(ops[1].error, ENOSPC);
  EXPECT_EQ(ops[2].error, 0);
}

TEST_F(RegistryTest, BatchCallbackGetsOnlyTheOpsItMayTake) {
  auto a = add("a");
  a->batch_ = true;
  ASSERT_TRUE(reg_.remove(a.get()));
  ASSERT_TRUE(reg_.add(a).ok());
  log_.take();
  a->can_ = false;
  std::vector<Op> ops = {Op{CT_OFFLOAD_OP_ADD, ctx_, 0, 0}, Op{CT_OFFLOAD_OP_DEL, ctx_, 0, 0}};
  reg_.submit(ops);
  EXPECT_EQ(log_.take(), (Calls{"a:can", "a:batch1"}));
}

// ---- Extension: fallback providers ----

class FallbackTest : public RegistryTest {
 protected:
  void SetUp() override {
    primary_ = add("primary");
    fallback_ = make("fallback");
    fallback_->fallback_ = true;
    ASSERT_TRUE(reg_.add(fallback_).ok());
    log_.take();
  }
  std::shared_ptr<Recorder> primary_, fallback_;
};

TEST_F(FallbackTest, FallbackNotCalledWhenAPrimaryAccepts) {
  EXPECT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_EQ(log_.take(), (Calls{"primary:can", "primary:add"}));
}

TEST_F(FallbackTest, FallbackTakesWhatThePrimaryRefused) {
  primary_->add_error_ = EOPNOTSUPP;
  EXPECT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_EQ(log_.take(), (Calls{"primary:can", "primary:add", "fallback:can", "fallback:add"}));
  auto st = reg_.conn_query(ctx_);
  ASSERT_TRUE(st.has_value());
  EXPECT_STREQ(st->provider, "fallback");
  EXPECT_EQ(st->mode, CT_OFFLOAD_MODE_SW);
}

TEST_F(FallbackTest, FallbackTakesWhatNoPrimaryCouldOffload) {
  primary_->can_ = false;
  EXPECT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_EQ(log_.take(), (Calls{"primary:can", "fallback:can", "fallback:add"}));
}

TEST_F(FallbackTest, BothFailingReturnsThePrimarysError) {
  primary_->add_error_ = EOPNOTSUPP;
  fallback_->add_error_ = ENOSPC;
  EXPECT_EQ(reg_.conn_add(ctx_), EOPNOTSUPP);
}

TEST_F(FallbackTest, APrimaryThatAlreadyHoldsTheConnectionKeepsItFromTheFallback) {
  primary_->add_error_ = EEXIST;
  EXPECT_EQ(reg_.conn_add(ctx_), EEXIST) << "a duplicate add is reported, not hidden by the fallback";
  EXPECT_EQ(log_.take(), (Calls{"primary:can", "primary:add"}));
  std::vector<Op> ops = {Op{CT_OFFLOAD_OP_ADD, ctx_, 0, 0}};
  reg_.submit(ops);
  EXPECT_EQ(ops[0].error, EEXIST);
  EXPECT_EQ(log_.take(), (Calls{"primary:can", "primary:add"}));
}

// EINVAL and ENODEV say the input is wrong: a fallback taking the
// connection would report success for what cannot work (a device that does
// not exist), so none is offered it, single call or batch alike.
TEST_F(FallbackTest, BadInputFromAPrimaryIsNotOfferedToTheFallback) {
  for (int err : {ENODEV, EINVAL}) {
    SCOPED_TRACE(err);
    EXPECT_TRUE(ct_offload_error_is_input(err));
    primary_->add_error_ = err;
    EXPECT_EQ(reg_.conn_add(ctx_), err);
    EXPECT_EQ(log_.take(), (Calls{"primary:can", "primary:add"}));
    EXPECT_FALSE(reg_.conn_query(ctx_).has_value()) << "nothing may hold it";
    log_.take();
    std::vector<Op> ops = {Op{CT_OFFLOAD_OP_ADD, ctx_, 0, 0}};
    reg_.submit(ops);
    EXPECT_EQ(ops[0].error, err);
    EXPECT_EQ(log_.take(), (Calls{"primary:can", "primary:add"}));
  }
}

// Everything else says "this provider cannot": the fallback is asked.
TEST_F(FallbackTest, EveryOtherPrimaryErrorIsOfferedToTheFallback) {
  for (int err : {EOPNOTSUPP, EPROTONOSUPPORT, ENOSPC, EPERM, EACCES, ENOTCONN, ENOENT, ENOMEM, ETIMEDOUT, EBUSY}) {
    SCOPED_TRACE(err);
    EXPECT_FALSE(ct_offload_error_is_input(err));
    primary_->add_error_ = err;
    EXPECT_EQ(reg_.conn_add(ctx_), 0);
    EXPECT_EQ(log_.take(), (Calls{"primary:can", "primary:add", "fallback:can", "fallback:add"}));
    std::vector<Op> ops = {Op{CT_OFFLOAD_OP_ADD, ctx_, 0, 0}};
    reg_.submit(ops);
    EXPECT_EQ(ops[0].error, 0);
    EXPECT_EQ(log_.take(), (Calls{"primary:can", "primary:add", "fallback:can", "fallback:add"}));
  }
}

TEST_F(FallbackTest, OnlyTheFirstAcceptingFallbackTakesIt) {
  auto second = make("second");
  second->fallback_ = true;
  ASSERT_TRUE(reg_.add(second).ok());
  log_.take();
  primary_->can_ = false;
  EXPECT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_EQ(log_.take(), (Calls{"primary:can", "fallback:can", "fallback:add"}));
}

TEST_F(FallbackTest, FallbacksDispatchAfterPrimariesWhateverTheRegistrationOrder) {
  add("late-primary");
  EXPECT_EQ(reg_.providers(), (std::vector<std::string>{"primary", "late-primary", "fallback"}));
}

TEST_F(FallbackTest, BatchAddsGoToFallbackOnlyWhereThePrimaryFailed) {
  Conn c2 = tcp4("10.0.0.5", 5, "10.0.0.6", 6);
  primary_->add_error_ = 0;
  // Make the primary refuse only the second connection.
  struct Picky : Recorder {
    using Recorder::Recorder;
    const Conn* refuse = nullptr;
    int conn_add(const Ctx& ctx) override {
      log_->add(name_ + ":add");
      return ctx.conn == refuse ? ENOSPC : 0;
    }
  };
  Registry reg;
  CallLog log;
  auto p = std::make_shared<Picky>("p", &log);
  p->refuse = &c2;
  auto f = std::make_shared<Recorder>("f", &log);
  f->fallback_ = true;
  ASSERT_TRUE(reg.add(p).ok());
  ASSERT_TRUE(reg.add(f).ok());
  log.take();
  std::vector<Op> ops = {Op{CT_OFFLOAD_OP_ADD, ctx_, 0, 0}, Op{CT_OFFLOAD_OP_ADD, ctx_of(c2), 0, 0}};
  reg.submit(ops);
  EXPECT_EQ(log.take(), (Calls{"p:can", "p:can", "p:add", "p:add", "f:can", "f:add"}));
  EXPECT_EQ(ops[0].error, 0);
  EXPECT_EQ(ops[1].error, 0);
}

// ---- Status ----

TEST_F(RegistryTest, ConnStatusNamesTheProviderHoldingIt) {
  add("a");
  EXPECT_FALSE(reg_.conn_query(ctx_).has_value());
  ASSERT_EQ(reg_.conn_add(ctx_), 0);
  auto st = reg_.conn_query(ctx_);
  ASSERT_TRUE(st.has_value());
  EXPECT_STREQ(st->provider, "a");
  EXPECT_EQ(st->packets, 7u);
}

// ---- The series (patches 06-09): offload state, established once ----

TEST_F(RegistryTest, EstablishedReachesProvidersOnceAndOnlyAfterAnAcceptedAdd) {
  add("a");
  EXPECT_EQ(reg_.conn_state(ctx_), Registry::ConnState::kNone);
  EXPECT_EQ(reg_.conn_established(ctx_), EALREADY) << "never added";
  EXPECT_EQ(log_.take(), Calls{});
  ASSERT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_TRUE(reg_.is_offloaded(ctx_));
  EXPECT_FALSE(reg_.is_established(ctx_));
  log_.take();
  EXPECT_EQ(reg_.conn_established(ctx_), 0);
  EXPECT_EQ(reg_.conn_established(ctx_), EALREADY);
  EXPECT_EQ(log_.take(), Calls{"a:est"});
  EXPECT_TRUE(reg_.is_offloaded(ctx_));
  EXPECT_TRUE(reg_.is_established(ctx_));
  ASSERT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_TRUE(reg_.is_established(ctx_)) << "a repeated add leaves it established";
  EXPECT_EQ(reg_.conn_established(ctx_), EALREADY);
}

TEST_F(RegistryTest, EveryProviderRefusingLeavesTheConnectionNotOffloaded) {
  auto a = add("a");
  a->add_error_ = ENOSPC;
  EXPECT_EQ(reg_.conn_add(ctx_), ENOSPC);
  EXPECT_FALSE(reg_.is_offloaded(ctx_));
  log_.take();
  EXPECT_EQ(reg_.conn_established(ctx_), EALREADY);
  EXPECT_EQ(log_.take(), Calls{});
  a->can_ = false;
  a->add_error_ = 0;
  EXPECT_EQ(reg_.conn_add(ctx_), 0) << "nobody asked: no error";
  EXPECT_FALSE(reg_.is_offloaded(ctx_)) << "but nobody holds it either";
}

TEST_F(RegistryTest, OneProviderAcceptingOrHoldingItAlreadyMakesItAdded) {
  auto a = add("a");
  auto b = add("b");
  b->add_error_ = ENOSPC;
  EXPECT_EQ(reg_.conn_add(ctx_), ENOSPC) << "the first error, as the contract says";
  EXPECT_TRUE(reg_.is_offloaded(ctx_)) << "a holds it";
  reg_.conn_del(ctx_);
  a->add_error_ = EEXIST;
  EXPECT_EQ(reg_.conn_add(ctx_), EEXIST);
  EXPECT_TRUE(reg_.is_offloaded(ctx_)) << "EEXIST: a holds it already (an adopted connection)";
}

TEST_F(FallbackTest, AConnectionTheFallbackTookIsAdded) {
  primary_->add_error_ = EOPNOTSUPP;
  EXPECT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_TRUE(reg_.is_offloaded(ctx_));
  primary_->add_error_ = ENODEV;
  reg_.conn_del(ctx_);
  EXPECT_EQ(reg_.conn_add(ctx_), ENODEV);
  EXPECT_FALSE(reg_.is_offloaded(ctx_)) << "bad input: nobody holds it";
}

TEST_F(RegistryTest, DelAndFlushReturnConnectionsToNone) {
  add("a");
  Conn other = tcp4("10.0.0.3", 1, "10.0.0.4", 2);
  ASSERT_EQ(reg_.conn_add(ctx_), 0);
  ASSERT_EQ(reg_.conn_add(ctx_of(other)), 0);
  ASSERT_EQ(reg_.conn_established(ctx_), 0);
  reg_.conn_del(ctx_);
  EXPECT_FALSE(reg_.is_offloaded(ctx_));
  EXPECT_TRUE(reg_.is_offloaded(ctx_of(other)));
  // Added again: established again, once.
  ASSERT_EQ(reg_.conn_add(ctx_), 0);
  EXPECT_EQ(reg_.conn_established(ctx_), 0);
  reg_.flush();
  EXPECT_FALSE(reg_.is_offloaded(ctx_));
  EXPECT_FALSE(reg_.is_offloaded(ctx_of(other)));
}

// The state is the registry's: a context built afresh for each call, with
// the reply direction's netdev, finds it.
TEST_F(RegistryTest, StateIsFoundFromAContextBuiltAfresh) {
  add("a");
  ASSERT_EQ(reg_.conn_add(ctx_), 0);
  const Conn copy = conn_;
  Netdev reply_dev{};
  std::strcpy(reply_dev.name, "eth1");
  EXPECT_EQ(reg_.conn_established(ctx_of(copy, &reply_dev)), 0);
  EXPECT_TRUE(reg_.is_established(ctx_));
  Conn other_zone = conn_;
  other_zone.zone = 9;
  EXPECT_FALSE(reg_.is_offloaded(ctx_of(other_zone)));
}

TEST_F(RegistryTest, BatchEstIsOnceAndOnlyAfterAnAcceptedAdd) {
  add("a");
  std::vector<Op> ops = {Op{CT_OFFLOAD_OP_EST, ctx_, -1, -1}, Op{CT_OFFLOAD_OP_ADD, ctx_, -1, -1},
                         Op{CT_OFFLOAD_OP_EST, ctx_, -1, -1}, Op{CT_OFFLOAD_OP_EST, ctx_, -1, -1}};
  reg_.submit(ops);
  EXPECT_EQ(ops[0].error, EALREADY) << "not added yet at that point of the batch";
  EXPECT_EQ(ops[1].error, 0);
  EXPECT_EQ(ops[2].error, 0) << "sees the ADD before it";
  EXPECT_EQ(ops[3].error, EALREADY) << "the repeat";
  EXPECT_EQ(log_.take(), (Calls{"a:can", "a:add", "a:est"}));
  EXPECT_TRUE(reg_.is_established(ctx_));

  std::vector<Op> more = {Op{CT_OFFLOAD_OP_DEL, ctx_, -1, -1}, Op{CT_OFFLOAD_OP_EST, ctx_, -1, -1}};
  reg_.submit(more);
  EXPECT_EQ(more[1].error, EALREADY) << "deleted before it";
  EXPECT_FALSE(reg_.is_offloaded(ctx_));

  ASSERT_EQ(reg_.conn_add(ctx_), 0);
  std::vector<Op> flushed = {Op{CT_OFFLOAD_OP_FLUSH, ctx_, -1, -1}, Op{CT_OFFLOAD_OP_EST, ctx_, -1, -1}};
  reg_.submit(flushed);
  EXPECT_EQ(flushed[1].error, EALREADY) << "flushed before it";

  add("b")->add_error_ = ENOSPC;
  auto refused = Op{CT_OFFLOAD_OP_ADD, ctx_, -1, -1};
  reg_.submit({&refused, 1});
  EXPECT_EQ(refused.error, ENOSPC);
  ASSERT_TRUE(reg_.is_offloaded(ctx_)) << "a accepted it";
}

TEST_F(RegistryTest, BatchCallbackGetsOnlyTheEstOpsToDeliver) {
  auto a = add("a");
  a->batch_ = true;
  ASSERT_TRUE(reg_.remove(a.get()));
  ASSERT_TRUE(reg_.add(a).ok());
  ASSERT_EQ(reg_.conn_add(ctx_), 0);
  log_.take();
  Conn stranger = tcp4("10.0.0.7", 7, "10.0.0.8", 8);
  std::vector<Op> ops = {Op{CT_OFFLOAD_OP_EST, ctx_, -1, -1}, Op{CT_OFFLOAD_OP_EST, ctx_of(stranger), -1, -1},
                         Op{CT_OFFLOAD_OP_EST, ctx_, -1, -1}};
  reg_.submit(ops);
  EXPECT_EQ(log_.take(), Calls{"a:batch1"});
  EXPECT_EQ(ops[0].error, 0);
  EXPECT_EQ(ops[1].error, EALREADY);
  EXPECT_EQ(ops[2].error, EALREADY);
}

// A provider that answers conn_update with a per-connection last use the
// test moves, as traffic would (keyed by source port).
class Clock : public Provider {
 public:
  std::string name() const override { return "clock"; }
  int conn_add(const Ctx& ctx) override {
    std::lock_guard lock(m_);
    last_[ctx.conn->orig.src_port] = 1000;
    return 0;
  }
  void conn_del(const Ctx& ctx) override {
    std::lock_guard lock(m_);
    last_.erase(ctx.conn->orig.src_port);
  }
  long long conn_update(const Ctx& ctx) override {
    std::lock_guard lock(m_);
    auto it = last_.find(ctx.conn->orig.src_port);
    return it == last_.end() ? 0 : it->second;
  }
  void use(uint16_t port, long long at) {
    std::lock_guard lock(m_);
    last_[port] = at;
  }

 private:
  std::mutex m_;
  std::map<uint16_t, long long> last_;
};

TEST(RegistryUpdateSemantics, LastUsedAnswersTheSameTimeForAnIdleConnection) {
  Registry reg;
  auto clock = std::make_shared<Clock>();
  ASSERT_TRUE(reg.add(clock).ok());
  EXPECT_EQ(*reg.get("update_semantics"), "last_used");
  Conn c = tcp4("10.0.0.1", 1, "10.0.0.2", 80);
  ASSERT_EQ(reg.conn_add(ctx_of(c)), 0);
  EXPECT_EQ(reg.conn_update(ctx_of(c)), 1000);
  EXPECT_EQ(reg.conn_update(ctx_of(c)), 1000);
}

TEST(RegistryUpdateSemantics, UsedSinceLastQueryAnswersOnlyWhenTheConnectionWasUsed) {
  Registry reg;
  auto clock = std::make_shared<Clock>();
  ASSERT_TRUE(reg.add(clock).ok());
  ASSERT_TRUE(reg.set("update_semantics", "used_since_last_query").ok());
  EXPECT_EQ(reg.update_semantics(), Registry::UpdateSemantics::kUsedSinceLastQuery);
  Conn c = tcp4("10.0.0.1", 1, "10.0.0.2", 80);
  ASSERT_EQ(reg.conn_add(ctx_of(c)), 0);
  EXPECT_EQ(reg.conn_update(ctx_of(c)), 1000) << "the first query has nothing to compare with";
  EXPECT_EQ(reg.conn_update(ctx_of(c)), 0) << "idle since";
  clock->use(1, 2000);
  EXPECT_EQ(reg.conn_update(ctx_of(c)), 2000);
  // Batches: two UPDs of one connection in one batch, the second is idle.
  clock->use(1, 3000);
  std::vector<Op> ops = {Op{CT_OFFLOAD_OP_UPD, ctx_of(c), -1, -1}, Op{CT_OFFLOAD_OP_UPD, ctx_of(c), -1, -1}};
  reg.submit(ops);
  EXPECT_EQ(ops[0].error, 0);
  EXPECT_EQ(ops[0].last_used, 3000);
  EXPECT_EQ(ops[1].error, ENODATA);
  EXPECT_EQ(ops[1].last_used, 0);
  // Deleted and added again: a new connection, a new first query.
  reg.conn_del(ctx_of(c));
  ASSERT_EQ(reg.conn_add(ctx_of(c)), 0);
  EXPECT_EQ(reg.conn_update(ctx_of(c)), 1000);
}

// The sweep of the RFC's conntrack (patch 08), as a datapath writes it:
// every interval, batch an UPD for each expired offloaded connection; keep
// (extend by one interval) those whose op->error is 0, delete the rest.
struct SweepResult {
  std::vector<bool> kept;
};
SweepResult rfc_sweep(Registry& reg, std::vector<Conn>& expired) {
  std::vector<Op> ops;
  for (const Conn& c : expired) ops.push_back(Op{CT_OFFLOAD_OP_UPD, ctx_of(c), 0, 0});
  reg.submit(ops);
  SweepResult r;
  for (size_t i = 0; i < ops.size(); ++i) {
    r.kept.push_back(ops[i].error == 0);
    if (ops[i].error != 0) reg.conn_del(ctx_of(expired[i]));
  }
  return r;
}

TEST(RegistryUpdateSemantics, UnderTheRfcSweepAnIdleConnectionGoesOnTheSecondSweepAndABusyOneStays) {
  for (const char* mode : {"last_used", "used_since_last_query"}) {
    SCOPED_TRACE(mode);
    Registry reg;
    auto clock = std::make_shared<Clock>();
    ASSERT_TRUE(reg.add(clock).ok());
    ASSERT_TRUE(reg.set("update_semantics", mode).ok());
    std::vector<Conn> conns = {tcp4("10.0.0.1", 1, "10.0.0.2", 80), tcp4("10.0.0.1", 2, "10.0.0.2", 80)};
    for (const Conn& c : conns) ASSERT_EQ(reg.conn_add(ctx_of(c)), 0);
    // Both expire (in conntrack's eyes: the fast path hides their packets).
    auto first = rfc_sweep(reg, conns);
    EXPECT_EQ(first.kept, (std::vector<bool>{true, true})) << "both have a last use";
    clock->use(2, 5000);  // Port 2 is busy; port 1 idle.
    auto second = rfc_sweep(reg, conns);
    if (std::string(mode) == "last_used") {
      EXPECT_EQ(second.kept, (std::vector<bool>{true, true})) << "the idle one is kept forever";
    } else {
      EXPECT_EQ(second.kept, (std::vector<bool>{false, true})) << "idle: cleaned; busy: kept";
      EXPECT_FALSE(reg.is_offloaded(ctx_of(conns[0])));
      EXPECT_TRUE(reg.is_offloaded(ctx_of(conns[1])));
    }
  }
}

// ---- Registry settings: enabled, update_semantics ----

TEST(RegistrySettings, KeysAreValidatedAndOthersGoToTheConfig) {
  Registry reg;
  EXPECT_EQ(*reg.get("enabled"), "true");
  EXPECT_EQ(reg.set("enabled", "maybe").err(), EINVAL);
  EXPECT_EQ(reg.set("update_semantics", "sometimes").err(), EINVAL);
  EXPECT_TRUE(reg.set("update_semantics", "last_used").ok());
  EXPECT_TRUE(reg.set("priority", "software").ok());
  EXPECT_EQ(*reg.get("priority"), "software");
  EXPECT_EQ(reg.set("bogus", "1").err(), EINVAL);
  EXPECT_EQ(reg.get("bogus").status().err(), ENOENT);
}

TEST(RegistrySettings, DisabledRegistersNoBuiltinAndTurningItOffFlushes) {
  Registry reg;
  CallLog log;
  ASSERT_TRUE(reg.set("priority", "software").ok());
  ASSERT_TRUE(reg.set("enabled", "false").ok());
  EXPECT_FALSE(reg.enabled());
  EXPECT_TRUE(reg.module_init().ok());
  EXPECT_TRUE(reg.providers().empty());
  reg.force_enable(true);
  EXPECT_TRUE(reg.enabled());
  EXPECT_EQ(*reg.get("enabled"), "false") << "the setting is unchanged by forcing";
  reg.force_enable(false);
  EXPECT_FALSE(reg.enabled());

  ASSERT_TRUE(reg.set("enabled", "true").ok());
  auto a = std::make_shared<Recorder>("a", &log);
  ASSERT_TRUE(reg.add(a).ok());
  Conn c = tcp4("10.0.0.1", 1, "10.0.0.2", 80);
  ASSERT_EQ(reg.conn_add(ctx_of(c)), 0);
  log.take();
  ASSERT_TRUE(reg.set("enabled", "false").ok());
  EXPECT_EQ(log.take(), Calls{"a:flush"});
  EXPECT_FALSE(reg.is_offloaded(ctx_of(c)));
  ASSERT_TRUE(reg.set("enabled", "false").ok());
  EXPECT_EQ(log.take(), Calls{}) << "only the change from on to off flushes";
}

// ---- Extension: dispatch that does not serialize ----

// Two dispatches inside provider callbacks at the same moment: impossible if
// dispatch held one lock across callbacks (the RFC's design).
TEST(RegistryConcurrency, DispatchesRunInsideCallbacksAtTheSameTime) {
  struct Rendezvous : Provider {
    std::atomic<int> inside{0};
    std::atomic<bool> met{false};
    std::string name() const override { return "rendezvous"; }
    int conn_add(const Ctx&) override {
      ++inside;
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (inside.load() < 2 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
      if (inside.load() >= 2) met = true;
      return 0;
    }
    void conn_del(const Ctx&) override {}
  };
  Registry reg;
  auto p = std::make_shared<Rendezvous>();
  ASSERT_TRUE(reg.add(p).ok());
  Conn c = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  Ctx ctx = ctx_of(c);
  std::thread t1([&] { (void)reg.conn_add(ctx); });
  std::thread t2([&] { (void)reg.conn_add(ctx); });
  t1.join();
  t2.join();
  EXPECT_TRUE(p->met.load());
}

// unregister must not return while a dispatch is still inside the provider.
TEST(RegistryConcurrency, UnregisterWaitsForTheDispatchInsideTheProvider) {
  struct Gate : Provider {
    std::mutex m;
    std::condition_variable cv;
    bool entered = false, release = false;
    std::string name() const override { return "gate"; }
    int conn_add(const Ctx&) override {
      std::unique_lock lock(m);
      entered = true;
      cv.notify_all();
      cv.wait(lock, [&] { return release; });
      return 0;
    }
    void conn_del(const Ctx&) override {}
  };
  Registry reg;
  auto gate = std::make_shared<Gate>();
  ASSERT_TRUE(reg.add(gate).ok());
  Conn c = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  Ctx ctx = ctx_of(c);
  std::thread dispatcher([&] { (void)reg.conn_add(ctx); });
  {
    std::unique_lock lock(gate->m);
    gate->cv.wait(lock, [&] { return gate->entered; });
  }
  std::atomic<bool> removed{false};
  std::thread remover([&] {
    EXPECT_TRUE(reg.remove(gate.get()));
    removed = true;
  });
  // The dispatcher is parked inside conn_add: remove() cannot have returned,
  // however long we give it.
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(removed.load());
  {
    std::lock_guard lock(gate->m);
    gate->release = true;
  }
  gate->cv.notify_all();
  dispatcher.join();
  remover.join();
  EXPECT_TRUE(removed.load());
  EXPECT_TRUE(reg.providers().empty());
}

// Many dispatching threads while providers come and go: a provider is never
// called after its unregister returned, and nothing crashes (TSan checks the
// rest in the sanitizer build).
TEST(RegistryConcurrency, NoCallbackAfterUnregisterReturnsUnderLoad) {
  struct Tracked : Provider {
    explicit Tracked(std::string n) : n_(std::move(n)) {}
    std::string n_;
    std::atomic<bool> gone{false};
    std::atomic<int> late{0};
    std::atomic<long> calls{0};
    std::string name() const override { return n_; }
    int conn_add(const Ctx&) override {
      ++calls;
      if (gone.load()) ++late;
      return 0;
    }
    void conn_del(const Ctx&) override {
      if (gone.load()) ++late;
    }
    long long conn_update(const Ctx&) override {
      if (gone.load()) ++late;
      return 0;
    }
  };
  Registry reg;
  auto stable = std::make_shared<Tracked>("stable");
  ASSERT_TRUE(reg.add(stable).ok());
  Conn c = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  Ctx ctx = ctx_of(c);
  std::atomic<bool> stop{false};
  std::atomic<int> running{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      bool counted = false;
      while (!stop.load(std::memory_order_relaxed)) {
        (void)reg.conn_add(ctx);
        reg.conn_del(ctx);
        (void)reg.conn_update(ctx);
        if (!counted) {
          counted = true;
          ++running;
        }
      }
    });
  }
  // Churn only once both dispatchers run, and go on until they have
  // dispatched meanwhile: on a loaded machine they can be off the CPU for
  // the whole of 150 quick add/remove pairs, and nothing would be tested.
  while (running.load() < 2) std::this_thread::yield();
  const long before = stable->calls.load();
  int late = 0;
  for (int i = 0; i < 150 || (stable->calls.load() - before < 1000 && i < 100000); ++i) {
    auto p = std::make_shared<Tracked>("churn" + std::to_string(i % 3));
    ASSERT_TRUE(reg.add(p).ok());
    std::this_thread::yield();
    ASSERT_TRUE(reg.remove(p.get()));
    p->gone = true;
    std::this_thread::yield();
    late += p->late.load();
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_EQ(late, 0);
  EXPECT_GE(stable->calls.load() - before, 1000);
}

// Two threads delivering conn_established for the same connections at once:
// each connection's providers hear it exactly once.
TEST(RegistryConcurrency, EstablishedIsDeliveredOncePerConnectionAcrossThreads) {
  struct Counter : Provider {
    std::atomic<int> est{0};
    std::string name() const override { return "counter"; }
    int conn_add(const Ctx&) override { return 0; }
    void conn_del(const Ctx&) override {}
    bool has_conn_established() const override { return true; }
    void conn_established(const Ctx&) override { ++est; }
  };
  Registry reg;
  auto p = std::make_shared<Counter>();
  ASSERT_TRUE(reg.add(p).ok());
  std::vector<Conn> conns;
  for (uint16_t i = 1; i <= 1000; ++i) conns.push_back(tcp4("10.0.0.1", i, "10.0.0.2", 80));
  for (const Conn& c : conns) ASSERT_EQ(reg.conn_add(ctx_of(c)), 0);
  auto deliver = [&] {
    for (const Conn& c : conns) (void)reg.conn_established(ctx_of(c));
  };
  std::thread t1(deliver), t2(deliver);
  t1.join();
  t2.join();
  EXPECT_EQ(p->est.load(), 1000);
}

TEST(RegistryConcurrency, NestedDispatchFromACallbackWorks) {
  struct Nested : Provider {
    Registry* inner = nullptr;
    std::string name() const override { return "outer"; }
    int conn_add(const Ctx& ctx) override { return inner->conn_add(ctx); }
    void conn_del(const Ctx&) override {}
  };
  Registry outer_reg, inner_reg;
  CallLog log;
  ASSERT_TRUE(inner_reg.add(std::make_shared<Recorder>("inner", &log)).ok());
  auto outer = std::make_shared<Nested>();
  outer->inner = &inner_reg;
  ASSERT_TRUE(outer_reg.add(outer).ok());
  log.take();
  Conn c = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  EXPECT_EQ(outer_reg.conn_add(ctx_of(c)), 0);
  EXPECT_EQ(log.take(), (Calls{"inner:can", "inner:add"}));
}

// Each nesting level holds a hazard of its own; past the last one dispatch
// is refused with ELOOP instead of overwriting an outer level's.  Unwinding
// must give every level back: a writer then finds no hazard to wait for.
TEST(RegistryConcurrency, DispatchNestedTooDeepIsRefusedAndEveryLevelIsGivenBack) {
  struct Recursive : Provider {
    Registry* reg = nullptr;
    int depth = 0;
    std::vector<int> results;  // What each nested conn_add returned, innermost first.
    std::string name() const override { return "recursive"; }
    int conn_add(const Ctx& ctx) override {
      if (++depth > 20) return 0;  // Never reached: the registry stops it first.
      const int err = reg->conn_add(ctx);
      results.push_back(err);
      return err == ELOOP ? 0 : err;
    }
    void conn_del(const Ctx&) override {}
  };
  Registry reg;
  auto p = std::make_shared<Recursive>();
  p->reg = &reg;
  ASSERT_TRUE(reg.add(p).ok());
  Conn c = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  EXPECT_EQ(reg.conn_add(ctx_of(c)), 0);
  // The outermost dispatch and seven nested ones ran; the eighth nested one
  // found no free hazard.
  EXPECT_EQ(p->depth, 8);
  ASSERT_FALSE(p->results.empty());
  EXPECT_EQ(p->results.front(), ELOOP);
  // Every level was released: the next dispatch nests as deep again, and an
  // unregister from another thread does not wait for a hazard left behind.
  p->depth = 0;
  p->results.clear();
  EXPECT_EQ(reg.conn_add(ctx_of(c)), 0);
  EXPECT_EQ(p->depth, 8);
  std::thread([&] { EXPECT_TRUE(reg.remove(p.get())); }).join();
  EXPECT_TRUE(reg.providers().empty());
}

TEST(RegistryConcurrency, UnregisterFromInsideACallbackDoesNotDeadlock) {
  struct SelfRemover : Provider {
    Registry* reg = nullptr;
    bool removed = false;
    std::string name() const override { return "self"; }
    int conn_add(const Ctx&) override {
      removed = reg->remove(this);
      return 0;
    }
    void conn_del(const Ctx&) override {}
  };
  Registry reg;
  auto p = std::make_shared<SelfRemover>();
  p->reg = &reg;
  ASSERT_TRUE(reg.add(p).ok());
  Conn c = tcp4("10.0.0.1", 1, "10.0.0.2", 2);
  EXPECT_EQ(reg.conn_add(ctx_of(c)), 0);
  EXPECT_TRUE(p->removed);
  EXPECT_TRUE(reg.providers().empty());
}

}  // namespace
}  // namespace ctoffload

namespace ctoffload {
namespace {

// The library logs through named spdlog loggers to stderr; stdout belongs to
// the program embedding it.
TEST(RegistryLogging, WarningsGoToStderrWithTheModuleNameNeverToStdout) {
  CallLog log;
  Registry reg;
  ASSERT_TRUE(reg.add(std::make_shared<Recorder>("dup", &log)).ok());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(reg.add(std::make_shared<Recorder>("dup", &log)).err(), EEXIST);
  std::string out = ::testing::internal::GetCapturedStdout();
  std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(out, "");
  EXPECT_NE(err.find("ctoffload.registry"), std::string::npos) << err;
  EXPECT_NE(err.find("refusing to register a second provider named 'dup'"), std::string::npos) << err;
}

}  // namespace
}  // namespace ctoffload
