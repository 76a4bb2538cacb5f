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

// Typed access with errors naming `what` (e.g. "runs/x/state.json: step"): an integer in
// [min, max], a string, a finite number.
int64_t get_int(const Json& object, const char* key, const std::string& what, int64_t min, int64_t max);
std::string get_string(const Json& object, const char* key, const std::string& what);
const Json& get_object(const Json& object, const char* key, const std::string& what);

}  // namespace kvroute::json
