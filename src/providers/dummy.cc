// dummy.cc - the dummy provider for a datapath's unit tests
// (include/ctoffload/ct-offload-dummy.h).
//
// One process-wide instance, as the class is one object: a mutex, the held
// connections, and the counters.  Every callback takes the mutex for a map
// operation; the dummy is for tests, not for speed.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "conn_state.h"
#include "ctoffload/ct-offload-dummy.h"
#include "sync.h"

namespace ctoffload {
namespace {

long long now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct KeyHash {
  size_t operator()(const ConnKey& k) const { return hash_tuple(k.family, k.proto, k.zone, k.orig); }
};

struct Held {
  long long last_used = 0;
  bool fwd_dev = false;  // conn_add's netdev_in was set.
  bool rev_dev = false;  // conn_established's netdev_in was set.
  bool established = false;
};

struct Dummy {
  Mutex mutex;  // Guards what follows.
  std::unordered_map<ConnKey, Held, KeyHash> held CTO_GUARDED_BY(mutex);
  ct_offload_dummy_counts counts CTO_GUARDED_BY(mutex){};
  unsigned int n_added CTO_GUARDED_BY(mutex) = 0;
  unsigned int n_deleted CTO_GUARDED_BY(mutex) = 0;
  unsigned int n_updated CTO_GUARDED_BY(mutex) = 0;
  unsigned int n_established CTO_GUARDED_BY(mutex) = 0;
  int add_error CTO_GUARDED_BY(mutex) = 0;

  void reset_counters() CTO_REQUIRES(mutex) {
    counts = {};
    n_added = n_deleted = n_updated = n_established = 0;
  }
};

Dummy& dummy() {
  // Never destroyed: a datapath's threads may still call into it at exit.
  static Dummy* d = new Dummy();
  return *d;
}

Held* find(Dummy& d, const ct_offload_conn* c) CTO_REQUIRES(d.mutex) {
  if (c == nullptr) return nullptr;
  auto it = d.held.find(ConnKey::of(*c));
  return it == d.held.end() ? nullptr : &it->second;
}

int dummy_init() {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  ++d.counts.init;
  return 0;
}

int dummy_conn_add(const ct_offload_ctx* ctx) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  ++d.counts.conn_add;
  if (d.add_error != 0) {
    ++d.counts.conn_add_refused;
    return d.add_error;
  }
  auto [it, fresh] = d.held.try_emplace(ConnKey::of(*ctx->conn));
  if (!fresh) return EEXIST;
  it->second.last_used = now_ms();
  it->second.fwd_dev = ctx->netdev_in != nullptr;
  ++d.n_added;
  return 0;
}

void dummy_conn_del(const ct_offload_ctx* ctx) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  ++d.counts.conn_del;
  if (d.held.erase(ConnKey::of(*ctx->conn)) != 0) ++d.n_deleted;
}

long long dummy_conn_update(const ct_offload_ctx* ctx) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  ++d.counts.conn_update;
  const Held* h = find(d, ctx->conn);
  if (h == nullptr) return 0;
  ++d.n_updated;
  return h->last_used;
}

void dummy_conn_established(const ct_offload_ctx* ctx) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  ++d.counts.conn_established;
  Held* h = find(d, ctx->conn);
  if (h == nullptr) return;
  if (!h->established) ++d.n_established;
  h->established = true;
  h->rev_dev = h->rev_dev || ctx->netdev_in != nullptr;
}

bool dummy_can_offload(const ct_offload_ctx*) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  ++d.counts.can_offload;
  return true;
}

void dummy_flush() {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  ++d.counts.flush;
  d.n_deleted += static_cast<unsigned int>(d.held.size());
  d.held.clear();
}

bool dummy_conn_query(const ct_offload_ctx* ctx, ct_offload_conn_status* st) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  ++d.counts.conn_query;
  const Held* h = find(d, ctx->conn);
  if (h == nullptr) return false;
  st->mode = CT_OFFLOAD_MODE_SW;
  st->last_used = h->last_used;
  return true;
}

}  // namespace
}  // namespace ctoffload

using ctoffload::Dummy;
using ctoffload::dummy;
using ctoffload::MutexLock;

extern "C" {

const struct ct_offload_class ct_offload_dummy_class = {
    .name = "dummy",
    .init = ctoffload::dummy_init,
    .batch_submit = nullptr,
    .conn_add = ctoffload::dummy_conn_add,
    .conn_del = ctoffload::dummy_conn_del,
    .conn_update = ctoffload::dummy_conn_update,
    .conn_established = ctoffload::dummy_conn_established,
    .can_offload = ctoffload::dummy_can_offload,
    .flush = ctoffload::dummy_flush,
    .flags = 0,
    .conn_query = ctoffload::dummy_conn_query,
};

int ct_offload_dummy_register(void) {
  ct_offload_dummy_reset();
  return ct_offload_register(&ct_offload_dummy_class);
}

void ct_offload_dummy_unregister(void) {
  ct_offload_unregister(&ct_offload_dummy_class);
  ct_offload_dummy_reset();
}

void ct_offload_dummy_reset(void) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  d.held.clear();
  d.reset_counters();
  d.add_error = 0;
}

void ct_offload_dummy_reset_counters(void) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  d.reset_counters();
}

void ct_offload_dummy_get_counts(struct ct_offload_dummy_counts* out) {
  if (out == nullptr) return;
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  *out = d.counts;
}

unsigned int ct_offload_dummy_n_added(void) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  return d.n_added;
}
unsigned int ct_offload_dummy_n_deleted(void) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  return d.n_deleted;
}
unsigned int ct_offload_dummy_n_updated(void) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  return d.n_updated;
}
unsigned int ct_offload_dummy_n_established(void) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  return d.n_established;
}
unsigned int ct_offload_dummy_n_held(void) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  return static_cast<unsigned int>(d.held.size());
}

bool ct_offload_dummy_contains(const struct ct_offload_conn* conn) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  return ctoffload::find(d, conn) != nullptr;
}

bool ct_offload_dummy_is_bidirectional(const struct ct_offload_conn* conn) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  const ctoffload::Held* h = ctoffload::find(d, conn);
  return h != nullptr && h->fwd_dev && h->rev_dev;
}

long long ct_offload_dummy_touch(const struct ct_offload_conn* conn) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  ctoffload::Held* h = ctoffload::find(d, conn);
  if (h == nullptr) return 0;
  h->last_used = std::max(ctoffload::now_ms(), h->last_used + 1);
  return h->last_used;
}

long long ct_offload_dummy_last_used(const struct ct_offload_conn* conn) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  const ctoffload::Held* h = ctoffload::find(d, conn);
  return h != nullptr ? h->last_used : 0;
}

void ct_offload_dummy_set_add_error(int error) {
  Dummy& d = dummy();
  MutexLock lock(d.mutex);
  d.add_error = error;
}

}  // extern "C"
