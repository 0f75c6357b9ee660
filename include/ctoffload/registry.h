// registry.h - the provider registry for C++ callers and providers.
//
// Registry keeps the contract of DESIGN.md section 3 (the RFC's ct-offload
// registry) and of the series' patches 06-09 (batches, the per-connection
// offload state, established once, enabled), and adds fallback providers,
// batch submit, dispatch that does not serialize and a choice of what
// conn_update answers.  The C API (ct-offload.h) is a thin layer over
// Registry::global().
//
// Threads: dispatch (conn_*, can_offload, flush, submit, conn_status) may run
// on any number of threads at once and never blocks on another dispatch.
// add() and remove() may run concurrently with dispatch; remove() returns
// only when no dispatch still uses the provider.  Dispatch reads an immutable
// snapshot of the provider list, published by add()/remove() and protected by
// per-thread hazard slots (see registry.cc).  The per-connection state is a
// table sharded by connection, one small lock per shard (src/conn_state.h).
// The events of one connection must not race each other (OVS delivers them
// under the connection's lock); different connections are independent.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ctoffload/config.h"
#include "ctoffload/provider.h"
#include "ctoffload/result.h"

namespace ctoffload {

class ConnStateTable;

class Registry {
 public:
  Registry();
  // Unregisters every provider (waiting for dispatch as remove() does).
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // The process-wide registry behind the C API.
  static Registry& global();

  // ---- Registration (contract lines 1-3) ----

  // Registers 'provider'.  EINVAL for a null provider or a bad name, EEXIST
  // if the name is taken (logged as a warning), or the error of init(), in
  // which case nothing is registered.  Dispatch order is registration order.
  Status add(std::shared_ptr<Provider> provider);
  // Registers a C class, called on its own function pointers; same errors.
  Status add(const ct_offload_class* cls);

  // Unregisters by identity.  Returns false (and logs a warning) if it was
  // not registered.  Returns once no dispatch still uses it.
  bool remove(const Provider* provider);
  bool remove(const ct_offload_class* cls);

  // Registers the built-in providers listed by config().priority() that are
  // not registered yet, in that order.  A built-in whose creation or init
  // fails is skipped with a log line saying why; the failures are returned
  // (ok when every enabled built-in is registered).  Calling it again is
  // harmless.
  Status module_init();

  // ---- Dispatch (contract lines 4-9) ----

  // First checks ctx.conn with validate() (conn.h): a connection it refuses
  // gets its error (EINVAL or EPROTONOSUPPORT) and no provider sees it, so
  // providers need not check again.  Then, in order: skips a provider whose
  // can_offload says no, calls conn_add, keeps notifying after a failure.  Fallback providers are then tried in
  // order, only when no primary accepted, until one accepts.  Returns 0 when
  // some provider accepted, else the first non-zero error (0 if no provider
  // was asked).  When a provider accepted (or said EEXIST), the connection's
  // state goes from none to added.
  int conn_add(const Ctx& ctx);
  // conn_add() that says why it failed: when it returns an error and 'why'
  // is not null, '*why' is validate()'s sentence naming the bad field, or
  // the connection and what the errno means (strerror's text).
  int conn_add(const Ctx& ctx, std::string* why);
  // Every provider's conn_del; the connection's state goes back to none.
  void conn_del(const Ctx& ctx);
  // First non-zero last-used time in order, 0 when nobody knows; under
  // UpdateSemantics::kUsedSinceLastQuery, that time only when it advanced
  // since this connection's previous query, else 0.
  long long conn_update(const Ctx& ctx);
  // Reaches the providers that have it only when the connection is in state
  // added, which becomes established: once per connection.  Returns 0 when
  // delivered, EALREADY otherwise (the C API's single call drops it).
  int conn_established(const Ctx& ctx);
  // True if any provider's can_offload says yes; false, without asking, for
  // a connection validate() refuses.
  bool can_offload(const Ctx& ctx);
  // Every provider's flush; every connection's state goes back to none.
  void flush();

  // Dispatch order is registration order, primaries before fallbacks.

  // Runs every op, each getting its own 'error' (and 'last_used' for UPD):
  // exactly what the single call would give at that point of the sequence.
  // Providers with a batch callback get the ops meant for them in one call;
  // the others get single calls.  An ADD whose connection validate() refuses
  // gets its error as conn_add() would, and a POLICY for it EPERM, without
  // any provider seeing it.  Unknown op types get EINVAL.
  void submit(std::span<Op> ops);

  // ---- Per-connection offload state (the series' patch 07) ----

  enum class ConnState : uint8_t { kNone = 0, kAdded = 1, kEstablished = 2 };
  ConnState conn_state(const Ctx& ctx) const;
  // Added or established.
  bool is_offloaded(const Ctx& ctx) const { return conn_state(ctx) != ConnState::kNone; }
  bool is_established(const Ctx& ctx) const { return conn_state(ctx) == ConnState::kEstablished; }

  // Status from the first provider that holds ctx.conn, or nullopt: the
  // providers' conn_query, as ct_offload_conn_query() asks it.
  std::optional<ConnStatus> conn_query(const Ctx& ctx);

  // ---- Introspection and configuration ----

  // Registered provider names in dispatch order.
  std::vector<std::string> providers() const;
  // The registered C++ provider named 'name', or null (also when 'name' is
  // a C class's: the registry calls a C class on its function pointers and
  // makes no Provider of it).
  std::shared_ptr<Provider> find(std::string_view name) const;

  Config& config() { return config_; }

  // ---- Registry settings ----
  //
  // Keys of the registry itself, next to config()'s:
  //   enabled            true (default) / false: enabled(), see below.
  //   update_semantics   last_used (default) / used_since_last_query: what
  //                      conn_update and UPD answer (see UpdateSemantics).
  // set() and get() take these and pass every other key to config().

  enum class UpdateSemantics {
    // The providers' last-used time: an idle connection gets the same
    // answer at every query.
    kLastUsed,
    // That time only when it advanced since the previous query of the same
    // connection; 0 (UPD: ENODATA) when it did not.  What the RFC's
    // conntrack sweep needs to age idle offloaded connections out.
    kUsedSinceLastQuery,
  };

  Status set(std::string_view key, std::string_view value);
  Result<std::string> get(std::string_view key) const;

  // The "enabled" setting, or true while force_enable(true) is in force.
  // module_init() registers nothing while it is false; dispatch does not
  // consult it (as in the RFC, it is the datapath's switch).
  bool enabled() const;
  // Sets "enabled"; going from true to false flushes every provider and
  // forgets every connection's state.
  void set_enabled(bool on);
  // Tests: while true, enabled() says true whatever the setting.
  void force_enable(bool force);

  UpdateSemantics update_semantics() const { return update_semantics_.load(std::memory_order_relaxed); }
  void set_update_semantics(UpdateSemantics u) { update_semantics_.store(u, std::memory_order_relaxed); }

  struct Snapshot;  // Immutable provider list; defined in registry.cc.

 private:
  Status add_entry(std::shared_ptr<Provider> provider, const ct_offload_class* cls);
  bool remove_if(const void* identity);
  // Publishes 'next' and waits until no dispatch reads the previous one.
  void publish(Snapshot* next);
  // submit() of a run of ops in which no EST follows an ADD of the same
  // connection: EST ops can be decided before any provider is called.
  void submit_run(const Snapshot& s, std::span<Op> ops);

  std::atomic<Snapshot*> current_;
  mutable std::mutex writer_mutex_;  // Serializes add/remove.
  // Snapshots still walked by a dispatch that changed the registry from
  // inside a callback; freed with the registry.
  std::vector<std::unique_ptr<Snapshot>> retired_;
  Config config_;
  std::unique_ptr<ConnStateTable> states_;
  std::atomic<bool> enabled_{true};
  std::atomic<bool> forced_{false};
  std::atomic<UpdateSemantics> update_semantics_{UpdateSemantics::kLastUsed};
};

}  // namespace ctoffload
