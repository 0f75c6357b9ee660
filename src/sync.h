// sync.h - a mutex the compiler can reason about.
//
// clang's -Wthread-safety checks, at compile time, that a member marked
// CTO_GUARDED_BY(m) is only touched with m held and that a function marked
// CTO_REQUIRES(m) is only called with m held.  libstdc++'s std::mutex carries
// no such annotations, so the analysis cannot see it; Mutex and MutexLock are
// std::mutex and std::lock_guard with the annotations on.  Under gcc the
// macros expand to nothing and the classes cost what std::mutex costs.
//
// The project's clang builds (scripts/fuzz.sh, the fuzz stage of
// scripts/test.sh, scripts/lint.sh) turn the analysis on as an error; see
// CMakeLists.txt.
#pragma once

#include <mutex>

#if defined(__clang__)
#define CTO_TSA(x) __attribute__((x))
#else
#define CTO_TSA(x)
#endif

#define CTO_CAPABILITY(name) CTO_TSA(capability(name))
#define CTO_SCOPED_CAPABILITY CTO_TSA(scoped_lockable)
#define CTO_GUARDED_BY(m) CTO_TSA(guarded_by(m))
#define CTO_PT_GUARDED_BY(m) CTO_TSA(pt_guarded_by(m))
#define CTO_REQUIRES(...) CTO_TSA(requires_capability(__VA_ARGS__))
#define CTO_EXCLUDES(...) CTO_TSA(locks_excluded(__VA_ARGS__))
#define CTO_ACQUIRE(...) CTO_TSA(acquire_capability(__VA_ARGS__))
#define CTO_RELEASE(...) CTO_TSA(release_capability(__VA_ARGS__))
#define CTO_TRY_ACQUIRE(...) CTO_TSA(try_acquire_capability(__VA_ARGS__))
#define CTO_ASSERT_CAPABILITY(x) CTO_TSA(assert_capability(x))
#define CTO_NO_THREAD_SAFETY_ANALYSIS CTO_TSA(no_thread_safety_analysis)

namespace ctoffload {

class CTO_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() CTO_ACQUIRE() { m_.lock(); }
  void unlock() CTO_RELEASE() { m_.unlock(); }
  bool try_lock() CTO_TRY_ACQUIRE(true) { return m_.try_lock(); }
  // Tells the analysis the caller holds this mutex, where it cannot see
  // so: in a lambda that a function holding it calls synchronously (the
  // analysis takes a lambda for a function of its own).  Checks nothing at
  // run time.
  void assert_held() const CTO_ASSERT_CAPABILITY(this) {}

 private:
  std::mutex m_;
};

// MutexLock: holds a Mutex for its scope (std::lock_guard, annotated).
class CTO_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& m) CTO_ACQUIRE(m) : m_(m) { m_.lock(); }
  ~MutexLock() CTO_RELEASE() { m_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& m_;
};

}  // namespace ctoffload
