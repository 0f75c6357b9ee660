// bench_support.cc - see bench_support.h.
#include "bench_support.h"

#include <arpa/inet.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string_view>

namespace ctoffload::bench {

namespace {
uint32_t src4_host(uint32_t i) { return 0x0a000000u | ((i + 1) & 0xffffffu); }
}  // namespace

Conn conn4(uint32_t i, uint16_t zone, uint32_t mark) {
  Conn c{};
  c.family = AF_INET;
  c.proto = IPPROTO_TCP;
  c.zone = zone;
  c.mark = mark;
  const uint32_t s = htonl(src4_host(i));
  std::memcpy(c.orig.src.bytes, &s, 4);
  inet_pton(AF_INET, kDstAddr, c.orig.dst.bytes);
  c.orig.src_port = sport4(i);
  c.orig.dst_port = kDstPort;
  ct_offload_conn_mirror_reply(&c);
  return c;
}

std::string src4(uint32_t i) {
  const uint32_t h = src4_host(i);
  return format("%u.%u.%u.%u", h >> 24, (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
}

uint16_t sport4(uint32_t i) { return static_cast<uint16_t>(1024 + i % 60000); }

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const auto rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(v.size())));
  return v[std::clamp<size_t>(rank, 1, v.size()) - 1];
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Sample self_cpu() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  Sample s;
  s.user = static_cast<double>(r.ru_utime.tv_sec) + static_cast<double>(r.ru_utime.tv_usec) / 1e6;
  s.sys = static_cast<double>(r.ru_stime.tv_sec) + static_cast<double>(r.ru_stime.tv_usec) / 1e6;
  return s;
}

Sample measure(const std::function<void()>& fn) {
  const Sample c0 = self_cpu();
  const double t0 = now_seconds();
  fn();
  const double t1 = now_seconds();
  const Sample c1 = self_cpu();
  return Sample{t1 - t0, c1.user - c0.user, c1.sys - c0.sys};
}

size_t rss_bytes() {
  std::ifstream f("/proc/self/statm");
  size_t pages = 0, resident = 0;
  f >> pages >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

size_t heap_bytes() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

std::string thousands(double v) {
  const bool neg = v < 0;
  auto n = static_cast<unsigned long long>(std::llround(std::fabs(v)));
  std::string digits = std::to_string(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return neg ? "-" + out : out;
}

std::string format(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string s(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(s.data(), s.size() + 1, fmt, ap2);
  va_end(ap2);
  return s;
}

namespace {

// The console reporter, keeping a copy of every run it prints.
class CollectingReporter final : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.error_occurred) failed_ = true;
      runs_.push_back(r);
    }
    ConsoleReporter::ReportRuns(runs);
  }
  const std::vector<Run>& runs() const { return runs_; }
  bool failed() const { return failed_; }

 private:
  std::vector<Run> runs_;
  bool failed_ = false;
};

}  // namespace

int benchmark_main(int argc, char** argv, const Summarize& summarize) {
  std::string md_path;
  std::string command;
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a.rfind("--md=", 0) == 0) {
      md_path = std::string(a.substr(5));
    } else {
      args.push_back(argv[i]);
      command += (command.empty() ? "" : " ") + std::string(a);
    }
  }
  int n = static_cast<int>(args.size());
  args.push_back(nullptr);
  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 2;
  CollectingReporter reporter;
  const size_t ran = benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  if (ran == 0) {
    std::cerr << "no benchmark matched the filter\n";
    return 1;
  }
  if (!md_path.empty()) {
    std::ofstream out(md_path);
    out << summarize(reporter.runs(), command);
    if (!out) {
      std::cerr << "cannot write " << md_path << "\n";
      return 1;
    }
  }
  return reporter.failed() ? 1 : 0;
}

const benchmark::BenchmarkReporter::Run* median_of(const std::vector<benchmark::BenchmarkReporter::Run>& runs,
                                                   const std::string& name) {
  const benchmark::BenchmarkReporter::Run* single = nullptr;
  for (const auto& r : runs) {
    if (r.run_name.str() != name || r.error_occurred) continue;
    if (r.run_type == benchmark::BenchmarkReporter::Run::RT_Aggregate && r.aggregate_name == "median") return &r;
    if (r.run_type == benchmark::BenchmarkReporter::Run::RT_Iteration) single = &r;
  }
  return single;
}

double items_per_second(const benchmark::BenchmarkReporter::Run* run) {
  if (run == nullptr) return 0;
  auto it = run->counters.find("items_per_second");
  return it == run->counters.end() ? 0 : static_cast<double>(it->second);
}

}  // namespace ctoffload::bench
