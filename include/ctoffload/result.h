// result.h - how ctoffload's C++ API reports failure.
//
// A failure is an errno (kept as std::error_code in the generic category, so
// ENOENT, ENODEV, EOPNOTSUPP and EEXIST stay distinguishable) plus a sentence
// naming what was wrong.  Both types are [[nodiscard]]: a dropped result is a
// compile-time warning, and warnings are errors in this project.  No
// exception crosses the library's API.
#pragma once

#include <cerrno>
#include <string>
#include <system_error>
#include <utility>
#include <variant>

namespace ctoffload {

// The outcome of an operation without a value.
class [[nodiscard]] Status {
 public:
  // Success.
  Status() = default;

  // Failure with positive errno 'err' and a message naming what was wrong.
  static Status error(int err, std::string message) {
    Status s;
    s.code_ = std::error_code(err, std::generic_category());
    s.message_ = std::move(message);
    return s;
  }

  bool ok() const { return !code_; }
  explicit operator bool() const { return ok(); }

  // The positive errno, 0 on success.
  int err() const { return code_.value(); }
  const std::error_code& code() const { return code_; }
  const std::string& message() const { return message_; }

  // "message (strerror, errno N)"; "ok" on success.
  std::string to_string() const;

  // Prefixes the message with 'context' ("context: message").
  Status& with_context(const std::string& context) {
    if (!ok()) message_ = context + ": " + message_;
    return *this;
  }

 private:
  std::error_code code_;
  std::string message_;
};

// A value or a failure.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    // A Result built from a Status must carry a failure.
    if (std::get<Status>(v_).ok()) {
      v_ = Status::error(EINVAL, "internal error: Result built from success");
    }
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return ok(); }

  // The value; only valid when ok().
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  // The failure; success (ok Status) when ok().
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  int err() const { return ok() ? 0 : std::get<Status>(v_).err(); }
  std::string message() const { return ok() ? std::string() : std::get<Status>(v_).message(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace ctoffload
