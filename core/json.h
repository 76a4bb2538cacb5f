// Untrusted JSON (safetensors headers, tokenizer files, data.json, state.json): parsed with a
// nesting bound and duplicate keys refused, so a hostile file is an error, never a deep recursion
// or a silently dropped key; values quoted in error messages are cut to a short excerpt.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace kvroute::json {

using Json = nlohmann::ordered_json;

inline constexpr int kMaxDepth = 32;

// Parses `text`; errors start with `what` (the file name) and say why.
Json parse(std::string_view text, const std::string& what, int max_depth = kMaxDepth);

// The same bounded parse into nlohmann::json, whose objects are maps: for files with objects of
// 50k-200k keys (a tokenizer's vocabulary), where Json's insertion-ordered objects search each key
// linearly (quadratic: about a minute for a 150k vocabulary).
nlohmann::json parse_unordered(std::string_view text, const std::string& what, int max_depth = kMaxDepth);

// io::read_file + parse.
Json parse_file(const std::string& path, int max_depth = kMaxDepth);

// At most ~`max_chars` characters of a value's JSON text, for error messages.
std::string excerpt(const Json& value, size_t max_chars = 60);
std::string excerpt(const nlohmann::json& value, size_t max_chars = 60);

// The one typed reader of untrusted JSON (tokenizer files, Hugging Face configs, data.json,
// state.json, eval.json), for both JSON types above. Every error is one line naming the file and
// the path of the value: "FILE: model.merges[3]: expected a string, got 5". Required getters fail
// on an absent (or null) key ("FILE: PATH.KEY: missing"); the getters with a fallback return it
// when the key is absent or null, and still refuse a value of another type or out of range.
template <class J>
struct BasicReader {
  std::string file;

  [[noreturn]] void fail(const std::string& path, const std::string& what) const;
  static std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }
  // The member, or nullptr when it is absent or null (or `object` is not an object).
  static const J* find(const J& object, const char* key) {
    if (!object.is_object()) return nullptr;
    auto it = object.find(key);
    return it == object.end() || it->is_null() ? nullptr : &*it;
  }
  const J& object(const J& parent, const std::string& path, const char* key) const {
    const J& v = required(parent, path, key);
    if (!v.is_object()) fail(join(path, key), "expected an object, got " + excerpt(v));
    return v;
  }
  const J& array(const J& parent, const std::string& path, const char* key) const {
    const J& v = required(parent, path, key);
    if (!v.is_array()) fail(join(path, key), "expected an array, got " + excerpt(v));
    return v;
  }
  std::string string(const J& parent, const std::string& path, const char* key) const {
    return as_string(required(parent, path, key), join(path, key));
  }
  std::string string(const J& parent, const std::string& path, const char* key, const std::string& fallback) const {
    const J* v = find(parent, key);
    return v == nullptr ? fallback : as_string(*v, join(path, key));
  }
  bool boolean(const J& parent, const std::string& path, const char* key) const {
    return as_bool(required(parent, path, key), join(path, key));
  }
  bool boolean(const J& parent, const std::string& path, const char* key, bool fallback) const {
    const J* v = find(parent, key);
    return v == nullptr ? fallback : as_bool(*v, join(path, key));
  }
  int64_t integer(const J& parent, const std::string& path, const char* key, int64_t min, int64_t max) const {
    return as_integer(required(parent, path, key), join(path, key), min, max);
  }
  int64_t integer(const J& parent, const std::string& path, const char* key, int64_t min, int64_t max,
                  int64_t fallback) const {
    const J* v = find(parent, key);
    return v == nullptr ? fallback : as_integer(*v, join(path, key), min, max);
  }
  double number(const J& parent, const std::string& path, const char* key, double min, double max) const {
    return as_number(required(parent, path, key), join(path, key), min, max);
  }
  double number(const J& parent, const std::string& path, const char* key, double min, double max,
                double fallback) const {
    const J* v = find(parent, key);
    return v == nullptr ? fallback : as_number(*v, join(path, key), min, max);
  }

  // The checks of one value at `path` (an array item: "model.merges[3]").
  std::string as_string(const J& v, const std::string& path) const {
    if (!v.is_string()) fail(path, "expected a string, got " + excerpt(v));
    return v.template get<std::string>();
  }
  bool as_bool(const J& v, const std::string& path) const {
    if (!v.is_boolean()) fail(path, "expected true or false, got " + excerpt(v));
    return v.template get<bool>();
  }
  int64_t as_integer(const J& v, const std::string& path, int64_t min, int64_t max) const;
  double as_number(const J& v, const std::string& path, double min, double max) const;

 private:
  const J& required(const J& parent, const std::string& path, const char* key) const {
    const J* v = find(parent, key);
    if (v == nullptr) fail(join(path, key), "missing");
    return *v;
  }
};
using Reader = BasicReader<Json>;
using UnorderedReader = BasicReader<nlohmann::json>;
extern template struct BasicReader<Json>;
extern template struct BasicReader<nlohmann::json>;

// Shorthands of Reader{what} for a flat object (errors "WHAT: KEY: ..."): required get_*, and
// opt_* with a fallback for an absent or null key.
inline int64_t get_int(const Json& object, const char* key, const std::string& what, int64_t min, int64_t max) {
  return Reader{what}.integer(object, "", key, min, max);
}
inline double get_number(const Json& object, const char* key, const std::string& what, double min, double max) {
  return Reader{what}.number(object, "", key, min, max);
}
inline bool get_bool(const Json& object, const char* key, const std::string& what) {
  return Reader{what}.boolean(object, "", key);
}
inline std::string get_string(const Json& object, const char* key, const std::string& what) {
  return Reader{what}.string(object, "", key);
}
inline const Json& get_object(const Json& object, const char* key, const std::string& what) {
  return Reader{what}.object(object, "", key);
}
inline bool has(const Json& object, const char* key) { return Reader::find(object, key) != nullptr; }
inline int64_t opt_int(const Json& object, const char* key, const std::string& what, int64_t min, int64_t max,
                       int64_t fallback) {
  return Reader{what}.integer(object, "", key, min, max, fallback);
}
inline double opt_number(const Json& object, const char* key, const std::string& what, double min, double max,
                         double fallback) {
  return Reader{what}.number(object, "", key, min, max, fallback);
}
inline bool opt_bool(const Json& object, const char* key, const std::string& what, bool fallback) {
  return Reader{what}.boolean(object, "", key, fallback);
}
inline std::string opt_string(const Json& object, const char* key, const std::string& what,
                              const std::string& fallback = "") {
  return Reader{what}.string(object, "", key, fallback);
}

}  // namespace kvroute::json
