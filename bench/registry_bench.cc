// registry_bench.cc - row 3 of issue 6: registry dispatch of conn_add.
//
// What it measures: one conn_add dispatched to two registered providers that
// do almost nothing (they look at the connection's protocol and accept it),
// on 1 and 2 threads at once, in nanoseconds per dispatch and dispatches per
// second (all threads together).  Three ways into ctoffload's Registry,
// each validating the connection once (Registry::conn_add does):
//   Ours_CppProviders  Registry::conn_add, two C++ Provider subclasses
//   Ours_CClasses      Registry::conn_add, two C ct_offload_class structs
//   Ours_CApi          ct_offload_conn_add() on the global registry, as a C
//                      datapath calls it
// These providers have no can_offload (NULL in the C classes,
// has_can_offload() false in the C++ ones): conn_add alone decides.  The
// *_Asking variants add a can_offload that says yes to TCP and UDP, so every
// provider is asked first: two callbacks per provider instead of one.
//
// Each thread adds its own connection again and again: from the second
// iteration on, the registry finds it in state "added" (the series' offload
// state, kept since 1.0) and writes nothing.  Ours_CClasses_AddDel is a
// connection's whole life instead - conn_add, then conn_del, per item - so
// that the state is made and removed every time, as a datapath does once per
// connection.
//
// The peer: Rfc_GlobalMutex, a faithful reimplementation (here, in this
// file, not ctoffload code) of the dispatch of the Open vSwitch RFC
// `ct-offload.c`: the registered classes in a linked list, and one global
// mutex taken by every dispatch and held across every callback it makes.
// Same two C classes, same contract (skip a class whose can_offload says no,
// return the first error but keep notifying).
//
// Targets (issue 6): <= 25 ns per dispatch on one thread; 2 threads >= 1.8x
// the dispatches per second of one thread.
#include <benchmark/benchmark.h>
#include <netinet/in.h>

#include <cerrno>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "bench_support.h"
#include "ctoffload/ct-offload.h"
#include "ctoffload/provider.h"
#include "ctoffload/registry.h"

namespace ctoffload::bench {
namespace {

// ---- The providers: accept TCP, refuse the rest. ----

int trivial_conn_add(const ct_offload_ctx* ctx) { return ctx->conn->proto == IPPROTO_TCP ? 0 : EPROTONOSUPPORT; }
void trivial_conn_del(const ct_offload_ctx*) {}
bool trivial_can_offload(const ct_offload_ctx* ctx) {
  return ctx->conn->proto == IPPROTO_TCP || ctx->conn->proto == IPPROTO_UDP;
}

ct_offload_class trivial_class(const char* name, bool asks) {
  ct_offload_class c{};
  c.name = name;
  c.conn_add = trivial_conn_add;
  c.conn_del = trivial_conn_del;
  if (asks) c.can_offload = trivial_can_offload;
  return c;
}

// One pair of class objects per registry (a class's identity is its address).
const ct_offload_class kClassA = trivial_class("bench_a", false);
const ct_offload_class kClassB = trivial_class("bench_b", false);
const ct_offload_class kAskingA = trivial_class("bench_a", true);
const ct_offload_class kAskingB = trivial_class("bench_b", true);
const ct_offload_class kGlobalA = trivial_class("bench_ga", false);
const ct_offload_class kGlobalB = trivial_class("bench_gb", false);

template <bool kAsks>
class TrivialProvider final : public Provider {
 public:
  explicit TrivialProvider(std::string name) : name_(std::move(name)) {}
  std::string name() const override { return name_; }
  int conn_add(const Ctx& ctx) override { return trivial_conn_add(&ctx); }
  void conn_del(const Ctx&) override {}
  bool has_can_offload() const override { return kAsks; }
  bool can_offload(const Ctx& ctx) override { return trivial_can_offload(&ctx); }

 private:
  std::string name_;
};

// ---- The peer: the RFC's registry, reimplemented for this benchmark. ----
//
// NOT ctoffload code.  ct-offload.c keeps the classes in an ovs_list and
// takes one global ovs_mutex around every registry operation and every
// dispatch, callbacks included; a std::list and a std::mutex are the same
// structure in C++.
class RfcRegistry {
 public:
  void register_class(const ct_offload_class* cls) {
    std::lock_guard lock(mutex_);
    classes_.push_back(cls);
  }
  int conn_add(const ct_offload_ctx* ctx) {
    std::lock_guard lock(mutex_);  // Held across every callback below.
    int error = 0;
    for (const ct_offload_class* cls : classes_) {
      if (cls->can_offload && !cls->can_offload(ctx)) continue;
      if (cls->conn_add) {
        const int err = cls->conn_add(ctx);
        if (err && !error) error = err;
      }
    }
    return error;
  }

 private:
  std::mutex mutex_;
  std::list<const ct_offload_class*> classes_;
};

// ---- Shared registries (one per benchmark, built once, used by every
// ---- thread). ----

template <bool kAsks>
Registry& cpp_registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    (void)reg->add(std::make_shared<TrivialProvider<kAsks>>("bench_a"));
    (void)reg->add(std::make_shared<TrivialProvider<kAsks>>("bench_b"));
    return reg;
  }();
  return *r;
}

template <bool kAsks>
Registry& c_registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    (void)reg->add(kAsks ? &kAskingA : &kClassA);
    (void)reg->add(kAsks ? &kAskingB : &kClassB);
    return reg;
  }();
  return *r;
}

void global_registry() {
  static const bool done = [] {
    (void)ct_offload_register(&kGlobalA);
    (void)ct_offload_register(&kGlobalB);
    return true;
  }();
  (void)done;
}

template <bool kAsks>
RfcRegistry& rfc_registry() {
  static RfcRegistry* r = [] {
    auto* reg = new RfcRegistry;
    reg->register_class(kAsks ? &kAskingA : &kClassA);
    reg->register_class(kAsks ? &kAskingB : &kClassB);
    return reg;
  }();
  return *r;
}

// Each thread dispatches its own connection.
template <typename Dispatch>
void run_dispatch(benchmark::State& state, Dispatch dispatch) {
  const Conn conn = conn4(static_cast<uint32_t>(state.thread_index()));
  ct_offload_ctx ctx{};
  ctx.conn = &conn;
  ctx.input_port_id = 1;
  for (auto _ : state) {
    int err = dispatch(&ctx);
    benchmark::DoNotOptimize(err);
    if (err != 0) {
      state.SkipWithError("conn_add failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
}

template <bool kAsks>
void Ours_CppProviders(benchmark::State& state) {
  Registry& r = cpp_registry<kAsks>();
  run_dispatch(state, [&r](const ct_offload_ctx* ctx) { return r.conn_add(*ctx); });
}
template <bool kAsks>
void Ours_CClasses(benchmark::State& state) {
  Registry& r = c_registry<kAsks>();
  run_dispatch(state, [&r](const ct_offload_ctx* ctx) { return r.conn_add(*ctx); });
}
void Ours_CApi(benchmark::State& state) {
  global_registry();
  run_dispatch(state, [](const ct_offload_ctx* ctx) { return ct_offload_conn_add(ctx); });
}
// conn_add then conn_del of the thread's connection, per item.
void Ours_CClasses_AddDel(benchmark::State& state) {
  Registry& r = c_registry<false>();
  run_dispatch(state, [&r](const ct_offload_ctx* ctx) {
    const int err = r.conn_add(*ctx);
    r.conn_del(*ctx);
    return err;
  });
}
template <bool kAsks>
void Rfc_GlobalMutex(benchmark::State& state) {
  RfcRegistry& r = rfc_registry<kAsks>();
  run_dispatch(state, [&r](const ct_offload_ctx* ctx) { return r.conn_add(ctx); });
}

BENCHMARK(Ours_CppProviders<false>)->Name("Ours_CppProviders")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(Ours_CClasses<false>)->Name("Ours_CClasses")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(Ours_CApi)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(Rfc_GlobalMutex<false>)->Name("Rfc_GlobalMutex")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(Ours_CppProviders<true>)->Name("Ours_CppProviders_Asking")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(Ours_CClasses<true>)->Name("Ours_CClasses_Asking")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(Rfc_GlobalMutex<true>)->Name("Rfc_GlobalMutex_Asking")->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(Ours_CClasses_AddDel)->Threads(1)->Threads(2)->UseRealTime();

std::string summarize(const std::vector<benchmark::BenchmarkReporter::Run>& runs, const std::string& command) {
  std::string md;
  md +=
      "### Row 3: registry dispatch of conn_add to two providers, 1 and 2 threads\n\n"
      "What: one `conn_add` dispatched to two registered providers that only look at the connection's protocol "
      "and accept it; each thread dispatches its own connection.  Ours: `Registry::conn_add` with two C++ "
      "providers (`Ours_CppProviders`), with two C classes (`Ours_CClasses`), and `ct_offload_conn_add()` on the "
      "global registry as a C datapath calls it (`Ours_CApi`); each validates the connection once.  These "
      "providers have no `can_offload` (NULL in the C classes, `has_can_offload()` false in the C++ ones); the "
      "`_Asking` variants add one that says yes, so each provider gets two callbacks instead of one.  Peer: "
      "`Rfc_GlobalMutex`, a faithful reimplementation *inside the benchmark* (not ctoffload code) of the RFC "
      "`ct-offload.c` dispatch: the classes in a linked list, one global mutex held across every callback, with "
      "the same classes.  Each thread adds its own connection again and again, which the registry finds already "
      "in state \"added\" (the per-connection offload state of the series' patch 07); `Ours_CClasses_AddDel` is "
      "a connection's whole life per item instead, `conn_add` then `conn_del`, making and removing that state "
      "each time.  Google Benchmark, real time; medians of the repetitions.\n\n";
  md += "Command: `" + command + "`\n\n";
  md +=
      "| dispatch | ns/dispatch, 1 thread | dispatches/s, 1 thread | dispatches/s, 2 threads | 2 threads / 1 "
      "thread |\n|---|---|---|---|---|\n";
  auto rate = [&](const std::string& name, int threads) {
    return items_per_second(median_of(runs, name + "/real_time/threads:" + std::to_string(threads)));
  };
  for (const char* name :
       {"Ours_CppProviders", "Ours_CClasses", "Ours_CApi", "Rfc_GlobalMutex", "Ours_CppProviders_Asking",
        "Ours_CClasses_Asking", "Rfc_GlobalMutex_Asking", "Ours_CClasses_AddDel"}) {
    const double r1 = rate(name, 1);
    const double r2 = rate(name, 2);
    if (r1 <= 0) continue;
    const bool peer = std::string(name).starts_with("Rfc_");
    const bool pair = std::string(name).ends_with("_AddDel");
    md += format("| %s%s | %.1f | %s | %s | %.2fx |\n", name,
                 peer   ? " (peer: the RFC's design, reimplemented here)"
                 : pair ? " (conn_add + conn_del per item)"
                        : "",
                 1e9 / r1, thousands(r1).c_str(), r2 > 0 ? thousands(r2).c_str() : "-", r2 > 0 ? r2 / r1 : 0.0);
  }
  md += "\n";
  auto ratio_line = [&](const std::string& ours, const std::string& rfc, const char* what) {
    const double o1 = rate(ours, 1), o2 = rate(ours, 2), p1 = rate(rfc, 1), p2 = rate(rfc, 2);
    if (o1 <= 0 || p1 <= 0) return;
    md += format("Ratio ours / RFC design (%s, dispatches per second): 1 thread %.2fx, 2 threads %.2fx.\n\n", what,
                 o1 / p1, p2 > 0 ? o2 / p2 : 0.0);
  };
  ratio_line("Ours_CppProviders", "Rfc_GlobalMutex", "C++ providers");
  ratio_line("Ours_CClasses", "Rfc_GlobalMutex", "C classes");
  ratio_line("Ours_CppProviders_Asking", "Rfc_GlobalMutex_Asking", "C++ providers, with can_offload");
  const double ours1 = rate("Ours_CppProviders", 1);
  const double ours2 = rate("Ours_CppProviders", 2);
  if (ours1 > 0) {
    const double ns = 1e9 / ours1;
    const double scale = ours2 > 0 ? ours2 / ours1 : 0;
    md += format("Targets: <= 25 ns per dispatch on one thread: %.1f ns, %s. 2 threads >= 1.8x one thread: %.2fx, %s",
                 ns, ns <= 25 ? "**met**" : "**not met**", scale, scale >= 1.8 ? "**met**" : "**not met**");
    md += format(
        " (this machine has %u cores; the scaling figure needs an idle second core: read it with the load "
        "average above).\n",
        std::thread::hardware_concurrency());
  }
  return md;
}

}  // namespace
}  // namespace ctoffload::bench

int main(int argc, char** argv) { return ctoffload::bench::benchmark_main(argc, argv, ctoffload::bench::summarize); }
