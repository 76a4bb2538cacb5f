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

// Typed access with errors naming `what` (e.g. "runs/x/state.json") and the key: an integer in
// [min, max], a finite number in [min, max], a boolean, a string, an object. get_* require the key;
// opt_* return `fallback` when it is absent or null, and refuse a value of another type.
int64_t get_int(const Json& object, const char* key, const std::string& what, int64_t min, int64_t max);
double get_number(const Json& object, const char* key, const std::string& what, double min, double max);
bool get_bool(const Json& object, const char* key, const std::string& what);
std::string get_string(const Json& object, const char* key, const std::string& what);
const Json& get_object(const Json& object, const char* key, const std::string& what);

bool has(const Json& object, const char* key);  // present and not null
int64_t opt_int(const Json& object, const char* key, const std::string& what, int64_t min, int64_t max,
                int64_t fallback);
double opt_number(const Json& object, const char* key, const std::string& what, double min, double max,
                  double fallback);
bool opt_bool(const Json& object, const char* key, const std::string& what, bool fallback);
std::string opt_string(const Json& object, const char* key, const std::string& what, const std::string& fallback = "");

}  // namespace kvroute::json
