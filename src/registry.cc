// registry.cc - provider registration and dispatch.
//
// Dispatch never takes a lock.  The provider list is an immutable Snapshot;
// add()/remove() build a new one, publish it with one atomic exchange, and
// then wait until no thread still reads the old one.  "Still reads" is
// tracked with hazard slots: each thread owns a cache-line-sized ThreadSlot
// holding the snapshot it is dispatching on (one entry per nesting level,
// so a provider may dispatch into a registry from inside a callback).  A
// dispatch costs one load and two stores on its own cache line, and reads
// the shared snapshot pointer; threads never write to shared memory, so
// dispatch scales with threads.
//
// The order of a reader's steps is what makes this safe (see ReadGuard):
// publish the hazard, then re-read the current snapshot; if it changed in
// between, retry.  A writer exchanges the snapshot first and scans the
// hazards second, so either it sees the reader's hazard, or the reader sees
// the new snapshot.  Both steps are seq_cst for that reason.
//
// The per-connection offload state (none / added / established, the series'
// patch 07) is kept in a ConnStateTable (conn_state.h): 64 shards, each a
// sequence lock.  The first add of a connection holds its shard for a few
// dozen instructions; a repeated add, a query, or a delete of a connection
// never added reads without writing anything shared.
#include "ctoffload/registry.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <unordered_set>

#include "builtins.h"
#include "conn_check.h"
#include "conn_state.h"
#include "errno_text.h"
#include "log.h"

namespace ctoffload {

// ---- The immutable provider list ----

struct Registry::Snapshot {
  struct Entry {
    // Exactly one of 'provider' (a C++ provider) and 'cls' (a C class) is
    // set.  A C class is called on its own function pointers, with no
    // Provider object around it: one indirect call per callback, as in the
    // RFC ("Calling a provider" below).
    std::shared_ptr<Provider> provider;
    const ct_offload_class* cls = nullptr;
    const void* identity = nullptr;  // The Provider* or the ct_offload_class*.
    std::string name;
    bool fallback = false;
    bool has_add = false;
    bool has_can = false;  // Calls can_offload; without it the answer is yes.
    bool has_est = false;
    bool has_batch = false;
  };
  // Dispatch order: primaries in registration order, then fallbacks in
  // registration order.
  std::vector<Entry> entries;
  size_t n_primaries = 0;
};

namespace {

// ---- Hazard slots ----

constexpr int kMaxDepth = 8;

struct alignas(64) ThreadSlot {
  // hazard[0] is the outermost dispatch's; a dispatch nested inside a
  // callback takes the first free entry after it.  Written only by the
  // owning thread; read by writers.
  std::atomic<const void*> hazard[kMaxDepth] = {};
  std::atomic<bool> in_use{true};
  ThreadSlot* next = nullptr;  // Immutable once the slot is published.
};

// Every slot ever made, newest first.  Slots are never freed: a thread that
// exits marks its slot free and the next new thread reuses it.
std::atomic<ThreadSlot*> g_slots{nullptr};

ThreadSlot* acquire_slot() {
  for (ThreadSlot* s = g_slots.load(std::memory_order_acquire); s; s = s->next) {
    bool expected = false;
    if (!s->in_use.load(std::memory_order_relaxed) &&
        s->in_use.compare_exchange_strong(expected, true, std::memory_order_acquire)) {
      return s;
    }
  }
  auto* s = new ThreadSlot();
  ThreadSlot* head = g_slots.load(std::memory_order_relaxed);
  do {
    s->next = head;
  } while (!g_slots.compare_exchange_weak(head, s, std::memory_order_release, std::memory_order_relaxed));
  return s;
}

// The fast path reads a plain pointer in the initial-exec TLS model: no
// __tls_get_addr call and no init guard on every dispatch (this is a shared
// library).  The owner, touched once per thread, gives the slot back when the
// thread exits.
thread_local ThreadSlot* t_slot __attribute__((tls_model("initial-exec"))) = nullptr;

struct SlotOwner {
  ThreadSlot* slot = acquire_slot();
  ~SlotOwner() {
    t_slot = nullptr;
    slot->in_use.store(false, std::memory_order_release);
  }
};

thread_local SlotOwner t_owner;

__attribute__((always_inline)) inline ThreadSlot* my_slot() {
  ThreadSlot* s = t_slot;
  if (__builtin_expect(s == nullptr, 0)) s = t_slot = t_owner.slot;
  return s;
}

// A nested dispatch's hazard: the first free entry after the outermost
// one, or null when all are taken.  Kept out of line: nesting is rare, and
// the common path should be one load and one compare.
__attribute__((noinline)) std::atomic<const void*>* nested_hazard(ThreadSlot* slot) {
  for (int d = 1; d < kMaxDepth; ++d) {
    if (slot->hazard[d].load(std::memory_order_relaxed) == nullptr) return &slot->hazard[d];
  }
  return nullptr;
}

// Holds a snapshot for the duration of one dispatch.
class ReadGuard {
 public:
  __attribute__((always_inline)) explicit ReadGuard(const std::atomic<Registry::Snapshot*>& current) {
    ThreadSlot* slot = my_slot();
    std::atomic<const void*>* hazard = &slot->hazard[0];
    // Our own entry: only this thread writes it, so a relaxed load is exact.
    if (__builtin_expect(hazard->load(std::memory_order_relaxed) != nullptr, 0)) {
      hazard = nested_hazard(slot);
      if (!hazard) return;
    }
    Registry::Snapshot* s = current.load(std::memory_order_acquire);
    for (;;) {
      hazard->store(s, std::memory_order_seq_cst);
      // Re-read after publishing the hazard: a writer that exchanged the
      // snapshot before our store is seen here, and we retry with its new one.
      Registry::Snapshot* again = current.load(std::memory_order_seq_cst);
      if (again == s) break;
      s = again;
    }
    hazard_ = hazard;
    snapshot_ = s;
  }
  __attribute__((always_inline)) ~ReadGuard() {
    if (hazard_) hazard_->store(nullptr, std::memory_order_release);
  }
  ReadGuard(const ReadGuard&) = delete;
  ReadGuard& operator=(const ReadGuard&) = delete;

  // Null when dispatch is nested deeper than kMaxDepth.
  const Registry::Snapshot* get() const { return snapshot_; }

 private:
  std::atomic<const void*>* hazard_ = nullptr;
  const Registry::Snapshot* snapshot_ = nullptr;
};

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("registry");
  return l;
}

void log_too_deep() {
  logger()->error(
      "dispatch nested deeper than {} levels (a provider dispatching into the registry from its "
      "callbacks in a loop?); operation refused",
      kMaxDepth);
}

// ---- Calling a provider ----
//
// The one place that tells a C class from a C++ provider: every callback
// the registry makes goes through these.  A C class is called on its
// function pointer, and a NULL member means what ct-offload.h says (skipped,
// or "yes" for can_offload, or "unknown" for conn_update); a C++ provider is
// called through the Provider interface, whose defaults say the same.

using Entry = Registry::Snapshot::Entry;

// init(), with a sentence saying why it failed in '*why'.
int call_init(const Entry& e, std::string* why) {
  if (e.cls) {
    const int err = e.cls->init ? e.cls->init() : 0;
    if (err != 0) *why = errno_text(err);
    return err;
  }
  const int err = e.provider->init();
  if (err != 0) {
    *why = e.provider->init_failure();
    if (why->empty()) *why = errno_text(err);
  }
  return err;
}

// One provider's answer to conn_add: its error, or kSkipped when it has no
// conn_add or its can_offload said no.
constexpr int kSkipped = -1;

__attribute__((always_inline)) inline int call_add(const Entry& e, const Ctx& ctx) {
  return e.cls ? e.cls->conn_add(&ctx) : e.provider->conn_add(ctx);
}

// The provider's can_offload answer (yes for a C class without one: its
// has_can, read from the class at registration as has_add and has_est are).
__attribute__((always_inline)) inline bool call_can_offload(const Entry& e, const Ctx& ctx) {
  if (e.cls) return !e.has_can || e.cls->can_offload(&ctx);
  return e.provider->can_offload(ctx);
}

// Whether conn_add may offer 'ctx' to this provider: its can_offload's
// answer, or yes without asking when it has none.
__attribute__((always_inline)) inline bool may_offer(const Entry& e, const Ctx& ctx) {
  return e.has_add && (!e.has_can || call_can_offload(e, ctx));
}

__attribute__((always_inline)) inline int offer(const Entry& e, const Ctx& ctx) {
  return may_offer(e, ctx) ? call_add(e, ctx) : kSkipped;
}

__attribute__((always_inline)) inline void call_del(const Entry& e, const Ctx& ctx) {
  if (!e.cls) {
    e.provider->conn_del(ctx);
  } else if (e.cls->conn_del) {
    e.cls->conn_del(&ctx);
  }
}

__attribute__((always_inline)) inline long long call_update(const Entry& e, const Ctx& ctx) {
  if (!e.cls) return e.provider->conn_update(ctx);
  return e.cls->conn_update ? e.cls->conn_update(&ctx) : 0;
}

__attribute__((always_inline)) inline void call_established(const Entry& e, const Ctx& ctx) {
  if (!e.has_est) return;
  if (e.cls) {
    e.cls->conn_established(&ctx);
  } else {
    e.provider->conn_established(ctx);
  }
}

void call_flush(const Entry& e) {
  if (!e.cls) {
    e.provider->flush();
  } else if (e.cls->flush) {
    e.cls->flush();
  }
}

// Only for a provider with has_batch.
void call_batch(const Entry& e, std::span<Op> ops) {
  if (!e.cls) return e.provider->batch_submit(ops);
  ct_offload_op_batch b{ops.data(), ops.size(), ops.size()};
  e.cls->batch_submit(&b);
}

bool call_query(const Entry& e, const Ctx& ctx, ConnStatus* status) {
  if (!e.cls) return e.provider->conn_query(ctx, status);
  return e.cls->conn_query && e.cls->conn_query(&ctx, status);
}

// Contract line 8, for can_offload() and a batch's POLICY op: whether any
// provider's can_offload says yes.
bool any_can_offload(const Registry::Snapshot& s, const Ctx& ctx) {
  return std::any_of(s.entries.begin(), s.entries.end(), [&](const Entry& e) { return call_can_offload(e, ctx); });
}

bool registered(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

bool valid_op_type(int type) { return type >= CT_OFFLOAD_OP_ADD && type <= CT_OFFLOAD_OP_EST; }

// An op's type as the int a C caller stored: it may be no enumerator at all,
// and loading it as the enum would then be undefined behaviour.
int type_of(const Op& op) {
  static_assert(sizeof op.type == sizeof(int));
  int t;
  std::memcpy(&t, &op.type, sizeof t);
  return t;
}

}  // namespace

// ---- Registration ----

Registry::Registry() : current_(new Snapshot()), states_(std::make_unique<ConnStateTable>()) {
  config_.set_busy_check([this](std::string_view name) { return registered(providers(), name); });
}

Registry::~Registry() {
  config_.set_busy_check(nullptr);
  {
    std::lock_guard lock(writer_mutex_);
    // A failed allocation here ends the process, as any exception leaving a
    // destructor does; the empty list is a few dozen bytes.
    publish(new Snapshot());  // NOLINT(bugprone-unhandled-exception-at-new)
  }
  delete current_.load();
}

Registry& Registry::global() {
  // Never destroyed: datapath threads may still dispatch during exit.
  static Registry* g = new Registry();
  return *g;
}

Status Registry::add(std::shared_ptr<Provider> provider) {
  if (!provider) return Status::error(EINVAL, "cannot register a null provider");
  return add_entry(std::move(provider), nullptr);
}

Status Registry::add(const ct_offload_class* cls) {
  if (!cls) return Status::error(EINVAL, "cannot register a null class");
  if (!cls->name) return Status::error(EINVAL, "cannot register a class without a name");
  return add_entry(nullptr, cls);
}

// Exactly one of 'provider' and 'cls' is set (add() checked it).
Status Registry::add_entry(std::shared_ptr<Provider> provider, const ct_offload_class* cls) {
  Snapshot::Entry entry;
  if (cls) {
    entry.cls = cls;
    entry.identity = cls;
    entry.name = cls->name;
    entry.fallback = (cls->flags & CT_OFFLOAD_CLASS_FALLBACK) != 0;
    entry.has_add = cls->conn_add != nullptr;
    entry.has_can = cls->can_offload != nullptr;
    entry.has_est = cls->conn_established != nullptr;
    entry.has_batch = cls->batch_submit != nullptr;
  } else {
    entry.identity = provider.get();
    entry.name = provider->name();
    entry.fallback = provider->is_fallback();
    entry.has_add = provider->has_conn_add();
    entry.has_can = provider->has_can_offload();
    entry.has_est = provider->has_conn_established();
    entry.has_batch = provider->has_batch();
    entry.provider = std::move(provider);
  }
  const std::string name = entry.name;
  if (name.empty() || name.size() >= sizeof(ConnStatus{}.provider)) {
    return Status::error(EINVAL, "provider name '" + name + "' must be 1 to " +
                                     std::to_string(sizeof(ConnStatus{}.provider) - 1) + " bytes long");
  }
  std::lock_guard lock(writer_mutex_);
  const Snapshot* cur = current_.load(std::memory_order_acquire);
  for (const auto& e : cur->entries) {
    if (e.name == name) {
      logger()->warn("refusing to register a second provider named '{}'", name);
      return Status::error(EEXIST, "a provider named '" + name + "' is already registered");
    }
  }
  // init() runs under the writer lock (as in the RFC) but not under any
  // dispatch lock: dispatch goes on meanwhile on the current snapshot.
  std::string why;
  if (int err = call_init(entry, &why); err != 0) {
    logger()->warn("provider '{}' failed to initialize: {}", name, why);
    return Status::error(err, "provider '" + name + "' failed to initialize: " + why);
  }
  const bool fallback = entry.fallback;
  auto* next = new Snapshot(*cur);
  if (fallback) {
    next->entries.push_back(std::move(entry));
  } else {
    next->entries.insert(next->entries.begin() + static_cast<std::ptrdiff_t>(next->n_primaries), std::move(entry));
    ++next->n_primaries;
  }
  publish(next);
  logger()->info("registered provider '{}'{}", name, fallback ? " (fallback)" : "");
  return {};
}

bool Registry::remove(const Provider* provider) { return provider && remove_if(provider); }
bool Registry::remove(const ct_offload_class* cls) { return cls && remove_if(cls); }

bool Registry::remove_if(const void* identity) {
  std::lock_guard lock(writer_mutex_);
  const Snapshot* cur = current_.load(std::memory_order_acquire);
  auto it = std::find_if(cur->entries.begin(), cur->entries.end(),
                         [&](const Snapshot::Entry& e) { return e.identity == identity; });
  if (it == cur->entries.end()) {
    logger()->warn("ignoring unregister of a provider that is not registered");
    return false;
  }
  const std::string name = it->name;
  auto* next = new Snapshot(*cur);
  auto pos = next->entries.begin() + (it - cur->entries.begin());
  if (!pos->fallback) --next->n_primaries;
  next->entries.erase(pos);
  publish(next);
  logger()->info("unregistered provider '{}'", name);
  return true;
}

void Registry::publish(Snapshot* next) {
  Snapshot* old = current_.exchange(next, std::memory_order_seq_cst);
  ThreadSlot* self = my_slot();
  bool self_holds_old = false;
  for (ThreadSlot* s = g_slots.load(std::memory_order_acquire); s; s = s->next) {
    for (int d = 0; d < kMaxDepth; ++d) {
      if (s == self) {
        // Our own thread cannot be waited for: it is here.  It holds 'old'
        // only when a provider unregisters from inside a dispatch.
        self_holds_old = self_holds_old || s->hazard[d].load(std::memory_order_relaxed) == old;
        continue;
      }
      while (s->hazard[d].load(std::memory_order_seq_cst) == old) std::this_thread::yield();
    }
  }
  if (self_holds_old) {
    // The dispatch that called us still walks 'old': keep it (and the
    // providers it holds) alive until the registry goes away.
    logger()->error(
        "a provider changed the registry from inside a dispatch; the previous provider list is kept "
        "alive until the registry is destroyed");
    retired_.emplace_back(old);
    return;
  }
  delete old;
}

Status Registry::module_init() {
  if (!enabled()) {
    logger()->info("offload is disabled (enabled=false): no built-in provider registered");
    return {};
  }
  std::vector<std::string> failures;
  int first_err = 0;
  for (const auto& name : config_.priority()) {
    if (registered(providers(), name)) continue;
    const Builtin* b = find_builtin(name);
    if (!b) continue;  // Config only accepts known names.
    auto provider = b->create(config_.options(name));
    Status s = provider ? add(std::move(*provider)) : provider.status();
    if (!s && s.err() != EEXIST) {
      logger()->warn("built-in provider '{}' is not available: {}", name, s.to_string());
      failures.push_back(name + ": " + s.to_string());
      if (!first_err) first_err = s.err();
    }
  }
  if (failures.empty()) return {};
  std::string msg = "built-in providers not available: ";
  for (size_t i = 0; i < failures.size(); ++i) msg += (i ? "; " : "") + failures[i];
  return Status::error(first_err, msg);
}

// ---- Dispatch ----

namespace {

// What the providers' conn_add answers to one connection amount to, kept
// answer by answer in dispatch order: by conn_add() and by a batch's ADD op
// alike, so the rule of ct-offload.h's "Errors of conn_add" is written here
// only.  A primary's answer: 0 (accepted) or EEXIST (it holds the
// connection already) means the connection is offloaded, and EINVAL or
// ENODEV that the input is wrong; either way no fallback is offered it (a
// fallback's copy would hide the error, or report success for a connection
// that names no real device).  Every other errno means "this provider
// cannot": the fallbacks are offered it, in order, until one accepts.
struct AddOutcome {
  int first_err = 0;
  bool held = false;         // A provider holds it (0 or EEXIST): state added.
  bool settled = false;      // No fallback may be offered it (any more).
  bool by_fallback = false;  // A fallback accepted it: the result is 0.
  bool refused = false;      // Refused at the boundary: offered to no provider.

  // The connection failed validate() with 'err'.
  void refuse(int err) {
    refused = settled = true;
    first_err = err;
  }

  // Records provider answer 'err' (not kSkipped); 'fallback' says whose.
  __attribute__((always_inline)) void note(int err, bool fallback) {
    if (err == 0) {
      held = settled = true;
      by_fallback = fallback;
      return;
    }
    held = held || err == EEXIST;
    settled = settled || (!fallback && (err == EEXIST || ct_offload_error_is_input(err)));
    if (!first_err) first_err = err;
  }
  // Contract line 4: the first error, unless a fallback took the connection.
  int result() const { return by_fallback ? 0 : first_err; }
};

// conn_add's second half, when no primary settled the connection: offer it
// to the fallbacks in order; the first to accept ends it.  Out of line so
// the common case (a primary took it) stays small.  The outcome goes in and
// out by value (8 bytes, one register): the caller's copy is then not
// address-taken, and the compiler may keep it in registers.
__attribute__((noinline)) AddOutcome conn_add_fallbacks(const Registry::Snapshot& s, const Ctx& ctx, AddOutcome out) {
  for (size_t i = s.n_primaries; i < s.entries.size() && !out.settled; ++i) {
    if (const int err = offer(s.entries[i], ctx); err != kSkipped) out.note(err, true);
  }
  return out;
}

// The boundary's slow half, for a connection check::conn_valid() did not
// accept: validate()'s error (and its sentence in '*why'), and no provider
// sees the connection; 0 if validate() accepts it after all (it does not:
// both say yes for the same connections).
__attribute__((noinline)) int refuse_add(const Conn& c, std::string* why) {
  const Status v = validate(c);
  if (v.ok()) return 0;
  logger()->debug("conn_add refused before any provider saw it: {}", v.message());
  if (why) *why = v.message();
  return v.err();
}

// Contract line 8, for can_offload() and a batch's POLICY op: no for a
// connection validate() refuses (no provider could take it: conn_add
// refuses it at the boundary), without asking; otherwise whether any
// provider's can_offload says yes.
bool offloadable(const Registry::Snapshot& s, const Ctx& ctx) {
  return ctx.conn && check::conn_valid(*ctx.conn) && any_can_offload(s, ctx);
}

// The identity of a batch op's connection, for the sets submit() keeps.
struct ConnKeyHash {
  size_t operator()(const ConnKey& k) const { return hash_tuple(k.family, k.proto, k.zone, k.orig); }
};
using ConnKeySet = std::unordered_set<ConnKey, ConnKeyHash>;

// Registry::conn_add(), both overloads: 'why' is null for the C++ one.
// Inlined into each rather than one calling the other: a call between two
// exported functions of this shared library goes through its PLT.
__attribute__((always_inline)) inline int dispatch_add(const std::atomic<Registry::Snapshot*>& current,
                                                       ConnStateTable& states, const Ctx& ctx, std::string* why) {
  // The boundary: the one check of the connection on its way to the
  // providers, for C and C++ callers alike.  Providers do not check again.
  // Inlined: the accepting path is a few compares (conn_check.h);
  // validate() runs, and says why, only for a connection it refuses.
  if (__builtin_expect(!check::conn_valid(*ctx.conn), 0)) {
    if (const int err = refuse_add(*ctx.conn, why); err != 0) return err;
  }
  ReadGuard guard(current);
  const Registry::Snapshot* s = guard.get();
  if (__builtin_expect(!s, 0)) {
    log_too_deep();
    if (why) *why = "dispatch nested too deep";
    return ELOOP;
  }
  AddOutcome out;
  // Contract line 4: every primary is notified, whatever the others said.
  for (const auto *e = s->entries.data(), *end = e + s->n_primaries; e != end; ++e) {
    if (const int err = offer(*e, ctx); err != kSkipped) out.note(err, false);
  }
  if (!out.settled && s->n_primaries != s->entries.size()) out = conn_add_fallbacks(*s, ctx, out);
  if (out.held) states.mark_added(*ctx.conn);
  const int err = out.result();
  if (__builtin_expect(err != 0, 0) && why) *why = format_conn(*ctx.conn) + ": " + errno_text(err);
  return err;
}

}  // namespace

int Registry::conn_add(const Ctx& ctx) { return dispatch_add(current_, *states_, ctx, nullptr); }

int Registry::conn_add(const Ctx& ctx, std::string* why) { return dispatch_add(current_, *states_, ctx, why); }

void Registry::conn_del(const Ctx& ctx) {
  ReadGuard guard(current_);
  const Snapshot* s = guard.get();
  if (!s) return log_too_deep();
  for (const auto& e : s->entries) call_del(e, ctx);
  states_->erase(*ctx.conn);
}

long long Registry::conn_update(const Ctx& ctx) {
  ReadGuard guard(current_);
  const Snapshot* s = guard.get();
  if (!s) {
    log_too_deep();
    return 0;
  }
  long long t = 0;
  for (const auto& e : s->entries) {
    if (t = call_update(e, ctx); t != 0) break;
  }
  if (update_semantics() == UpdateSemantics::kUsedSinceLastQuery) t = states_->report_if_advanced(*ctx.conn, t);
  return t;
}

int Registry::conn_established(const Ctx& ctx) {
  ReadGuard guard(current_);
  const Snapshot* s = guard.get();
  if (!s) {
    log_too_deep();
    return ELOOP;
  }
  // The transition first, under the shard's lock: of two racing calls for
  // one connection, exactly one finds it added and delivers.
  if (states_->establish(*ctx.conn) != OffloadState::kAdded) return EALREADY;
  for (const auto& e : s->entries) {
    call_established(e, ctx);
  }
  return 0;
}

bool Registry::can_offload(const Ctx& ctx) {
  ReadGuard guard(current_);
  const Snapshot* s = guard.get();
  if (!s) {
    log_too_deep();
    return false;
  }
  return offloadable(*s, ctx);
}

void Registry::flush() {
  ReadGuard guard(current_);
  const Snapshot* s = guard.get();
  if (!s) return log_too_deep();
  for (const auto& e : s->entries) call_flush(e);
  states_->clear();
}

Registry::ConnState Registry::conn_state(const Ctx& ctx) const {
  return static_cast<ConnState>(states_->get(*ctx.conn));
}

std::optional<ConnStatus> Registry::conn_query(const Ctx& ctx) {
  ReadGuard guard(current_);
  const Snapshot* s = guard.get();
  if (!s) {
    log_too_deep();
    return std::nullopt;
  }
  for (const auto& e : s->entries) {
    ConnStatus st{};
    if (call_query(e, ctx, &st)) {
      std::memset(st.provider, 0, sizeof st.provider);
      std::memcpy(st.provider, e.name.data(), std::min(e.name.size(), sizeof st.provider - 1));
      return st;
    }
  }
  return std::nullopt;
}

namespace {

bool has_conn(const Op& op) { return op.ctx.conn != nullptr; }

// Where the run of ops starting at 'begin' ends: before the first EST whose
// connection an earlier ADD of the run names (that EST depends on the ADD's
// outcome), or at the end.
size_t run_end(std::span<const Op> ops, size_t begin) {
  ConnKeySet added;
  for (size_t i = begin; i < ops.size(); ++i) {
    const Op& op = ops[i];
    if (!has_conn(op)) continue;
    const int t = type_of(op);
    if (t == CT_OFFLOAD_OP_ADD) {
      added.insert(ConnKey::of(*op.ctx.conn));
    } else if (t == CT_OFFLOAD_OP_EST && added.contains(ConnKey::of(*op.ctx.conn))) {
      return i;
    }
  }
  return ops.size();
}

}  // namespace

void Registry::submit(std::span<Op> ops) {
  ReadGuard guard(current_);
  const Snapshot* s = guard.get();
  if (!s) {
    log_too_deep();
    for (auto& op : ops) op.error = ELOOP;
    return;
  }
  for (auto& op : ops) {
    op.error = 0;
    op.last_used = 0;
  }
  // An EST after an ADD of the same connection sees that ADD's outcome: the
  // batch is cut there and run in two.  A batch without EST is one run.
  const bool any_est =
      std::any_of(ops.begin(), ops.end(), [](const Op& op) { return type_of(op) == CT_OFFLOAD_OP_EST; });
  for (size_t begin = 0; begin < ops.size();) {
    // run_end() > begin: the first op of a run never waits for itself.
    const size_t end = any_est ? run_end(ops, begin) : ops.size();
    submit_run(*s, ops.subspan(begin, end - begin));
    begin = end;
  }
}

void Registry::submit_run(const Snapshot& snap, std::span<Op> ops) {
  const Snapshot* s = &snap;
  const size_t n = ops.size();
  // Per-op progress across providers.
  std::vector<AddOutcome> added(n);    // ADD: the answers so far, as conn_add() keeps them.
  std::vector<uint8_t> deliver(n, 0);  // EST: the connection was added: deliver it.

  // The boundary, as in conn_add(): an ADD whose connection validate()
  // refuses (or that has none) gets that error, and no provider sees it.
  for (size_t i = 0; i < n; ++i) {
    if (type_of(ops[i]) != CT_OFFLOAD_OP_ADD) continue;
    if (!has_conn(ops[i])) {
      added[i].refuse(EINVAL);
    } else if (check::conn_valid(*ops[i].ctx.conn)) {
      continue;
    } else if (Status v = validate(*ops[i].ctx.conn); !v.ok()) {
      logger()->debug("batch op {}: conn_add refused before any provider saw it: {}", i, v.message());
      added[i].refuse(v.err());
    }
  }

  // EST ops are decided before any provider is called, in op order: an EST
  // whose connection an earlier DEL of the run deleted, or that follows a
  // FLUSH, or that a previous EST established, finds it not added; the others
  // take the table's added -> established step (no ADD of the same
  // connection precedes them in the run: submit() cut it there).
  if (std::any_of(ops.begin(), ops.end(), [](const Op& op) { return type_of(op) == CT_OFFLOAD_OP_EST; })) {
    ConnKeySet decided;  // Connections an earlier op of the run left not added.
    bool flushed = false;
    for (size_t i = 0; i < n; ++i) {
      const Op& op = ops[i];
      const int t = type_of(op);
      if (t == CT_OFFLOAD_OP_FLUSH) {
        flushed = true;
        decided.clear();
      } else if (t == CT_OFFLOAD_OP_DEL && has_conn(op)) {
        decided.insert(ConnKey::of(*op.ctx.conn));
      } else if (t == CT_OFFLOAD_OP_EST && has_conn(op)) {
        const ConnKey key = ConnKey::of(*op.ctx.conn);
        if (flushed || decided.contains(key)) continue;
        deliver[i] = states_->establish(*op.ctx.conn) == OffloadState::kAdded;
        decided.insert(key);
      }
    }
  }

  std::vector<size_t> mine;
  std::vector<Op> sub;
  for (size_t p = 0; p < s->entries.size(); ++p) {
    const auto& e = s->entries[p];
    const bool fallback = p >= s->n_primaries;
    // Which ops are meant for this provider, as the single calls would do.
    mine.clear();
    for (size_t i = 0; i < n; ++i) {
      const Op& op = ops[i];
      switch (type_of(op)) {
        case CT_OFFLOAD_OP_ADD:
          if (added[i].refused || (fallback && added[i].settled)) break;
          if (may_offer(e, op.ctx)) mine.push_back(i);
          break;
        case CT_OFFLOAD_OP_DEL:
        case CT_OFFLOAD_OP_FLUSH:
          mine.push_back(i);
          break;
        case CT_OFFLOAD_OP_EST:
          if (e.has_est && deliver[i]) mine.push_back(i);
          break;
        case CT_OFFLOAD_OP_UPD:
          if (op.last_used == 0) mine.push_back(i);
          break;
        default:  // POLICY is answered by the registry; unknown types below.
          break;
      }
    }
    if (mine.empty()) continue;

    auto record = [&](size_t i, int err, long long last_used) {
      if (type_of(ops[i]) == CT_OFFLOAD_OP_ADD) {
        added[i].note(err, fallback);
      } else if (type_of(ops[i]) == CT_OFFLOAD_OP_UPD && last_used != 0) {
        ops[i].last_used = last_used;
      }
    };

    if (e.has_batch) {
      sub.clear();
      for (size_t i : mine) {
        Op op = ops[i];
        op.error = 0;
        op.last_used = 0;
        sub.push_back(op);
      }
      call_batch(e, sub);
      for (size_t k = 0; k < mine.size(); ++k) record(mine[k], sub[k].error, sub[k].last_used);
      continue;
    }
    for (size_t i : mine) {
      Op& op = ops[i];
      switch (type_of(op)) {
        case CT_OFFLOAD_OP_ADD:
          record(i, call_add(e, op.ctx), 0);
          break;
        case CT_OFFLOAD_OP_DEL:
          call_del(e, op.ctx);
          break;
        case CT_OFFLOAD_OP_FLUSH:
          call_flush(e);
          break;
        case CT_OFFLOAD_OP_EST:
          call_established(e, op.ctx);
          break;
        case CT_OFFLOAD_OP_UPD:
          record(i, 0, call_update(e, op.ctx));
          break;
        default:
          break;
      }
    }
  }

  // Results, and the state each op leaves, in op order.
  const bool since_last_query = update_semantics() == UpdateSemantics::kUsedSinceLastQuery;
  for (size_t i = 0; i < n; ++i) {
    Op& op = ops[i];
    switch (type_of(op)) {
      case CT_OFFLOAD_OP_ADD:
        op.error = added[i].result();
        if (added[i].held) states_->mark_added(*op.ctx.conn);
        break;
      case CT_OFFLOAD_OP_UPD:
        if (since_last_query && has_conn(op)) op.last_used = states_->report_if_advanced(*op.ctx.conn, op.last_used);
        op.error = op.last_used ? 0 : ENODATA;
        break;
      case CT_OFFLOAD_OP_POLICY:
        op.error = offloadable(*s, op.ctx) ? 0 : EPERM;
        break;
      case CT_OFFLOAD_OP_DEL:
        if (has_conn(op)) states_->erase(*op.ctx.conn);
        op.error = 0;
        break;
      case CT_OFFLOAD_OP_FLUSH:
        states_->clear();
        op.error = 0;
        break;
      case CT_OFFLOAD_OP_EST:
        op.error = deliver[i] ? 0 : EALREADY;
        break;
      default:
        op.error = valid_op_type(type_of(op)) ? 0 : EINVAL;
        break;
    }
  }
}

// ---- Settings ----

namespace {

const char* update_semantics_name(Registry::UpdateSemantics u) {
  return u == Registry::UpdateSemantics::kUsedSinceLastQuery ? "used_since_last_query" : "last_used";
}

}  // namespace

Status Registry::set(std::string_view key, std::string_view value) {
  if (key == "enabled") {
    auto on = parse_bool(value);
    if (!on) return Status::error(EINVAL, "enabled: " + on.message());
    set_enabled(*on);
    return {};
  }
  if (key == "update_semantics") {
    if (value == "last_used") {
      set_update_semantics(UpdateSemantics::kLastUsed);
    } else if (value == "used_since_last_query") {
      set_update_semantics(UpdateSemantics::kUsedSinceLastQuery);
    } else {
      return Status::error(
          EINVAL, "update_semantics: '" + std::string(value) + "' is neither 'last_used' nor 'used_since_last_query'");
    }
    return {};
  }
  return config_.set(key, value);
}

Result<std::string> Registry::get(std::string_view key) const {
  if (key == "enabled") return std::string(enabled_.load(std::memory_order_relaxed) ? "true" : "false");
  if (key == "update_semantics") return std::string(update_semantics_name(update_semantics()));
  return config_.get(key);
}

bool Registry::enabled() const {
  return forced_.load(std::memory_order_relaxed) || enabled_.load(std::memory_order_relaxed);
}

void Registry::set_enabled(bool on) {
  if (enabled_.exchange(on) && !on) {
    // A datapath that stops calling once offload is off would never delete
    // what is offloaded now: nothing may stay behind.
    logger()->info("offload disabled (enabled=false): flushing every provider");
    flush();
  }
}

void Registry::force_enable(bool force) { forced_.store(force, std::memory_order_relaxed); }

// ---- Introspection ----

std::vector<std::string> Registry::providers() const {
  ReadGuard guard(current_);
  std::vector<std::string> names;
  if (const Snapshot* s = guard.get()) {
    for (const auto& e : s->entries) names.push_back(e.name);
  }
  return names;
}

std::shared_ptr<Provider> Registry::find(std::string_view name) const {
  ReadGuard guard(current_);
  if (const Snapshot* s = guard.get()) {
    for (const auto& e : s->entries) {
      if (e.name == name) return e.provider;
    }
  }
  return nullptr;
}

}  // namespace ctoffload
