// capi.cc - the C API (ct-offload.h) over Registry::global().
//
// Each function checks its pointers, turns C++ results into a positive
// errno plus a per-thread message, and never lets an exception out.
#include <cstdlib>
#include <cstring>
#include <new>

#include "capi_error.h"
#include "ctoffload/ct-offload.h"
#include "ctoffload/registry.h"
#include "errno_text.h"
#include "log.h"

namespace ctoffload::capi {
namespace {
thread_local std::string t_last_error;
}  // namespace

int fail(int err, std::string message) {
  if (err != 0) t_last_error = std::move(message);
  return err;
}

int fail(const Status& s) { return s.ok() ? 0 : fail(s.err(), s.message()); }

const char* last_error() { return t_last_error.c_str(); }

}  // namespace ctoffload::capi

using ctoffload::Registry;
using ctoffload::capi::fail;

namespace {

bool ctx_ok(const ct_offload_ctx* ctx, const char* fn) {
  if (ctx && ctx->conn) return true;
  fail(EINVAL, std::string(fn) + ": null context or connection");
  return false;
}

// Copies 'text' into 'buf', or ERANGE naming the size needed.
int copy_out(const std::string& text, char* buf, size_t size, const char* fn) {
  if (!buf || size <= text.size()) {
    return fail(ERANGE, std::string(fn) + ": buffer of " + std::to_string(size) + " bytes is too small for " +
                            std::to_string(text.size() + 1));
  }
  std::memcpy(buf, text.c_str(), text.size() + 1);
  return 0;
}

}  // namespace

extern "C" {

int ct_offload_register(const struct ct_offload_class* cls) {
  try {
    return fail(Registry::global().add(cls));
  } catch (const std::bad_alloc&) {
    return fail(ENOMEM, "ct_offload_register: out of memory");
  }
}

void ct_offload_unregister(const struct ct_offload_class* cls) {
  if (!cls) {
    fail(EINVAL, "ct_offload_unregister: null class");
    return;
  }
  (void)Registry::global().remove(cls);
}

void ct_offload_module_init(void) {
  try {
    auto s = Registry::global().module_init();
    fail(s);
  } catch (const std::bad_alloc&) {
    fail(ENOMEM, "ct_offload_module_init: out of memory");
  }
}

bool ct_offload_enabled(void) { return Registry::global().enabled(); }

void ct_offload_force_enable(bool force) { Registry::global().force_enable(force); }

bool ct_offload_error_is_input(int err) { return err == EINVAL || err == ENODEV; }

int ct_offload_conn_add(const struct ct_offload_ctx* ctx) {
  if (!ctx_ok(ctx, "ct_offload_conn_add")) return EINVAL;
  // The registry validates the connection, once, before any provider sees it.
  std::string why;
  const int err = Registry::global().conn_add(*ctx, &why);
  return err == 0 ? 0 : fail(err, "ct_offload_conn_add: " + why);
}

void ct_offload_conn_del(const struct ct_offload_ctx* ctx) {
  if (ctx_ok(ctx, "ct_offload_conn_del")) Registry::global().conn_del(*ctx);
}

long long ct_offload_conn_update(const struct ct_offload_ctx* ctx) {
  return ctx_ok(ctx, "ct_offload_conn_update") ? Registry::global().conn_update(*ctx) : 0;
}

void ct_offload_conn_established(const struct ct_offload_ctx* ctx) {
  // The RFC's single call returns nothing: a connection not in state added
  // (EALREADY) is no failure of the caller's.
  if (ctx_ok(ctx, "ct_offload_conn_established")) (void)Registry::global().conn_established(*ctx);
}

bool ct_offload_can_offload(const struct ct_offload_ctx* ctx) {
  return ctx_ok(ctx, "ct_offload_can_offload") && Registry::global().can_offload(*ctx);
}

void ct_offload_flush(void) { Registry::global().flush(); }

bool ct_offload_conn_is_offloaded(const struct ct_offload_ctx* ctx) {
  return ctx_ok(ctx, "ct_offload_conn_is_offloaded") && Registry::global().is_offloaded(*ctx);
}

bool ct_offload_conn_is_established(const struct ct_offload_ctx* ctx) {
  return ctx_ok(ctx, "ct_offload_conn_is_established") && Registry::global().is_established(*ctx);
}

void ct_offload_op_batch_init(struct ct_offload_op_batch* batch) {
  if (!batch) return;
  batch->ops = nullptr;
  batch->n_ops = 0;
  batch->allocated = 0;
}

int ct_offload_op_batch_add(struct ct_offload_op_batch* batch, enum ct_offload_op_type type,
                            const struct ct_offload_ctx* ctx) {
  if (!batch) return fail(EINVAL, "ct_offload_op_batch_add: null batch");
  if (type != CT_OFFLOAD_OP_FLUSH && !ctx_ok(ctx, "ct_offload_op_batch_add")) return EINVAL;
  if (batch->n_ops == batch->allocated) {
    size_t want = batch->allocated ? batch->allocated * 2 : 8;
    void* grown = std::realloc(batch->ops, want * sizeof *batch->ops);
    if (!grown)
      return fail(ENOMEM, "ct_offload_op_batch_add: cannot grow the batch to " + std::to_string(want) + " ops");
    batch->ops = static_cast<ct_offload_op*>(grown);
    batch->allocated = want;
  }
  ct_offload_op& op = batch->ops[batch->n_ops++];
  op.type = type;
  op.ctx = ctx ? *ctx : ct_offload_ctx{};
  op.error = 0;
  op.last_used = 0;
  return 0;
}

void ct_offload_op_batch_submit(struct ct_offload_op_batch* batch) {
  if (!batch || (batch->n_ops && !batch->ops)) {
    fail(EINVAL, "ct_offload_op_batch_submit: null batch");
    return;
  }
  // An op whose context is unusable is refused alone; the others run.
  std::vector<size_t> bad;
  for (size_t i = 0; i < batch->n_ops; ++i) {
    auto& op = batch->ops[i];
    if (op.type != CT_OFFLOAD_OP_FLUSH && !op.ctx.conn) bad.push_back(i);
  }
  if (bad.empty()) {
    Registry::global().submit({batch->ops, batch->n_ops});
    return;
  }
  std::vector<ct_offload_op> good;
  std::vector<size_t> where;
  for (size_t i = 0, b = 0; i < batch->n_ops; ++i) {
    if (b < bad.size() && bad[b] == i) {
      ++b;
      continue;
    }
    good.push_back(batch->ops[i]);
    where.push_back(i);
  }
  Registry::global().submit(good);
  for (size_t k = 0; k < good.size(); ++k) batch->ops[where[k]] = good[k];
  for (size_t i : bad) {
    batch->ops[i].error = EINVAL;
    fail(EINVAL, "ct_offload_op_batch_submit: op " + std::to_string(i) + " has no connection");
  }
}

void ct_offload_op_batch_destroy(struct ct_offload_op_batch* batch) {
  if (!batch) return;
  std::free(batch->ops);
  ct_offload_op_batch_init(batch);
}

int ct_offload_conn_query(const struct ct_offload_ctx* ctx, struct ct_offload_conn_status* status) {
  if (!status) return fail(EINVAL, "ct_offload_conn_query: null status");
  std::memset(status, 0, sizeof *status);
  if (!ctx_ok(ctx, "ct_offload_conn_query")) return EINVAL;
  auto st = Registry::global().conn_query(*ctx);
  if (!st) return fail(ENOENT, "no provider holds " + ctoffload::format_conn(*ctx->conn));
  *status = *st;
  return 0;
}

int ct_offload_config_set(const char* key, const char* value) {
  if (!key || !value) return fail(EINVAL, "ct_offload_config_set: null key or value");
  try {
    return fail(Registry::global().set(key, value));
  } catch (const std::bad_alloc&) {
    return fail(ENOMEM, "ct_offload_config_set: out of memory");
  }
}

int ct_offload_config_get(const char* key, char* buf, size_t size) {
  if (!key) return fail(EINVAL, "ct_offload_config_get: null key");
  auto v = Registry::global().get(key);
  if (!v) return fail(v.status());
  return copy_out(*v, buf, size, "ct_offload_config_get");
}

int ct_offload_providers(char* buf, size_t size) {
  std::string names;
  for (const auto& n : Registry::global().providers()) names += (names.empty() ? "" : ",") + n;
  return copy_out(names, buf, size, "ct_offload_providers");
}

const char* ct_offload_last_error(void) { return ctoffload::capi::last_error(); }

int ct_offload_log_level(const char* level) {
  if (!level) return fail(EINVAL, "ct_offload_log_level: null level");
  return fail(ctoffload::log::set_level(level));
}

}  // extern "C"
