// bench_support.h - what every benchmark program shares: the synthetic
// connections they offload, small statistics, CPU-time sampling, and the
// Markdown that scripts/bench.sh assembles into docs/BENCHMARKS.md.
#pragma once

#include <benchmark/benchmark.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ctoffload/conn.h"

namespace ctoffload::bench {

// ---- Synthetic connections ----

// Connection 'i' (0 .. 16M-1): TCP from 10.x.y.z (unique per 'i') port
// 1024 + i % 60000 to 192.0.2.1:443, reply mirrored (no NAT).
inline constexpr const char* kDstAddr = "192.0.2.1";
inline constexpr uint16_t kDstPort = 443;
Conn conn4(uint32_t i, uint16_t zone = 0, uint32_t mark = 0);
// The source address of connection 'i' as text ("10.0.0.1").
std::string src4(uint32_t i);
uint16_t sport4(uint32_t i);

// ---- Statistics ----

double median(std::vector<double> v);
// The 'p'-th percentile (0..100), nearest rank.
double percentile(std::vector<double> v, double p);

// ---- Time ----

// Wall-clock and CPU seconds of something measured.
struct Sample {
  double wall = 0, user = 0, sys = 0;
  double cpu() const { return user + sys; }
  // User time as a share of the CPU time (0..1).
  double user_share() const { return cpu() > 0 ? user / cpu() : 0; }
};

double now_seconds();  // steady clock
// CPU seconds (user, system) of the calling process so far.
Sample self_cpu();
// Runs 'fn' and returns its wall and CPU time (this process only; the
// programs are single-threaded while they measure this way).
Sample measure(const std::function<void()>& fn);

// Resident set size of this process in bytes (/proc/self/statm).
size_t rss_bytes();
// Bytes malloc has handed out and not got back (mallinfo2: arena plus
// mmapped chunks).
size_t heap_bytes();

// ---- Output ----

// 1234567 -> "1,234,567".
std::string thousands(double v);
// printf into a std::string.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));

// The Google Benchmark programs' main(): runs the benchmarks selected on
// the command line, printing the usual console table, and hands every
// run's report (iterations, repetitions and aggregates) to 'summarize',
// which writes Markdown; 'command' is the command line that reproduces the
// run.  The Markdown goes to the file named by --md=FILE (removed from the
// arguments before Google Benchmark sees them), or nowhere.  Returns
// non-zero when a benchmark reported an error.
using Summarize =
    std::function<std::string(const std::vector<benchmark::BenchmarkReporter::Run>& runs, const std::string& command)>;
int benchmark_main(int argc, char** argv, const Summarize& summarize);

// The median aggregate of the benchmark named 'name' (as printed, without
// the "_median" suffix), or null when it did not run.
const benchmark::BenchmarkReporter::Run* median_of(const std::vector<benchmark::BenchmarkReporter::Run>& runs,
                                                   const std::string& name);

// A run's items_per_second counter (all threads together), 0 for a null run
// or one without that counter.
double items_per_second(const benchmark::BenchmarkReporter::Run* run);

}  // namespace ctoffload::bench
