// json.h - a small JSON writer for ctoffloadctl's -j output.
//
// Values are written in order as they are added; the writer inserts commas
// and escapes strings (RFC 8259: quote, backslash, control characters).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ctoffload::cli {

class JsonWriter {
 public:
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  // The key of the next value (inside an object).
  JsonWriter& key(std::string_view k);
  JsonWriter& value(std::string_view s);
  JsonWriter& value(const char* s) { return value(std::string_view(s)); }
  JsonWriter& value(bool b);
  JsonWriter& value(int64_t n);
  JsonWriter& value(uint64_t n);
  JsonWriter& value(int n) { return value(static_cast<int64_t>(n)); }
  JsonWriter& null();
  // Shorthand for key(k).value(v).
  template <typename T>
  JsonWriter& field(std::string_view k, const T& v) {
    key(k);
    return value(v);
  }

  const std::string& str() const { return out_; }

 private:
  void comma();
  std::string out_;
  std::vector<bool> first_;  // Per open container: nothing written yet.
  bool after_key_ = false;
};

// Escapes 's' as a JSON string, quotes included.
std::string json_quote(std::string_view s);

}  // namespace ctoffload::cli
