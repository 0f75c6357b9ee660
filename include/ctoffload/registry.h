// registry.h - the provider registry for C++ callers and providers.
//
// Registry keeps the contract of DESIGN.md section 3 (the RFC's ct-offload
// registry) and adds fallback providers, batch submit and dispatch that does
// not serialize.  The C API (ct-offload.h) is a thin layer over
// Registry::global().
//
// Threads: dispatch (conn_*, can_offload, flush, submit, conn_status) may run
// on any number of threads at once and never blocks on another dispatch.
// add() and remove() may run concurrently with dispatch; remove() returns
// only when no dispatch still uses the provider.  Dispatch reads an immutable
// snapshot of the provider list, published by add()/remove() and protected by
// per-thread hazard slots (see registry.cc).
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
  // Registers a C class (wrapped); same errors.
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

  // In order: skips a provider whose can_offload says no, calls conn_add,
  // keeps notifying after a failure.  Fallback providers are then tried in
  // order, only when no primary accepted, until one accepts.  Returns 0 when
  // some provider accepted, else the first non-zero error (0 if no provider
  // was asked).
  int conn_add(const Ctx& ctx);
  void conn_del(const Ctx& ctx);
  // First non-zero last-used time in order, 0 when nobody knows.
  long long conn_update(const Ctx& ctx);
  void conn_established(const Ctx& ctx);
  bool can_offload(const Ctx& ctx);
  void flush();

  // Dispatch order is registration order, primaries before fallbacks.

  // Runs every op, each getting its own 'error' (and 'last_used' for UPD).
  // Providers with a batch callback get the ops meant for them in one call;
  // the others get single calls.  Unknown op types get EINVAL.
  void submit(std::span<Op> ops);

  // Status from the first provider that holds ctx.conn, or nullopt.
  std::optional<ConnStatus> conn_status(const Ctx& ctx);

  // ---- Introspection and configuration ----

  // Registered provider names in dispatch order.
  std::vector<std::string> providers() const;
  // The registered provider named 'name', or null.
  std::shared_ptr<Provider> find(std::string_view name) const;

  Config& config() { return config_; }

  struct Snapshot;  // Immutable provider list; defined in registry.cc.

 private:
  Status add_entry(std::shared_ptr<Provider> provider, const ct_offload_class* cls);
  bool remove_if(const void* identity);
  // Publishes 'next' and waits until no dispatch reads the previous one.
  void publish(Snapshot* next);

  std::atomic<Snapshot*> current_;
  mutable std::mutex writer_mutex_;  // Serializes add/remove.
  // Snapshots still walked by a dispatch that changed the registry from
  // inside a callback; freed with the registry.
  std::vector<std::unique_ptr<Snapshot>> retired_;
  Config config_;
};

}  // namespace ctoffload
