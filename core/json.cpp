#include "core/json.h"

#include <cmath>

#include <set>
#include <vector>

#include "core/error.h"
#include "core/io.h"
#include "core/text.h"

namespace kvroute::json {

namespace {

struct TooDeep {};
struct DuplicateKey {
  std::string key;
};

}  // namespace

namespace {

template <class Doc>
Doc parse_bounded(std::string_view text, const std::string& what, int max_depth) {
  // The parser itself is iterative; the callback bounds the depth (and so the recursion of
  // every later walk, dump and destructor) and sees each object's keys to refuse duplicates.
  std::vector<std::set<std::string>> keys;
  auto callback = [&](int depth, typename Doc::parse_event_t event, Doc& parsed) -> bool {
    switch (event) {
      case Doc::parse_event_t::object_start:
      case Doc::parse_event_t::array_start:
        if (depth >= max_depth) throw TooDeep{};
        keys.emplace_back();  // arrays hold no keys; an entry keeps the stack aligned with depth
        break;
      case Doc::parse_event_t::object_end:
      case Doc::parse_event_t::array_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case Doc::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.template get<std::string>()).second) {
          throw DuplicateKey{parsed.template get<std::string>()};
        }
        break;
      default:
        break;
    }
    return true;
  };
  try {
    return Doc::parse(text.begin(), text.end(), callback);
  } catch (const TooDeep&) {
    KV_FAIL("{}: invalid JSON: nested deeper than {} levels", what, max_depth);
  } catch (const DuplicateKey& d) {
    KV_FAIL("{}: invalid JSON: duplicate key \"{}\"", what, kvroute::excerpt(d.key, 60));
  } catch (const nlohmann::json::exception& e) {
    std::string msg = e.what();
    const size_t bracket = msg.find("] ");  // drop nlohmann's "[json.exception.parse_error.101] "
    if (msg.rfind("[json.exception", 0) == 0 && bracket != std::string::npos) msg = msg.substr(bracket + 2);
    KV_FAIL("{}: invalid JSON: {}", what, kvroute::excerpt(msg, 200));
  }
}

}  // namespace

Json parse(std::string_view text, const std::string& what, int max_depth) {
  return parse_bounded<Json>(text, what, max_depth);
}

nlohmann::json parse_unordered(std::string_view text, const std::string& what, int max_depth) {
  return parse_bounded<nlohmann::json>(text, what, max_depth);
}

Json parse_file(const std::string& path, int max_depth) { return parse(io::read_file(path), path, max_depth); }

std::string excerpt(const Json& value, size_t max_chars) {
  return kvroute::excerpt(value.dump(-1, ' ', false, Json::error_handler_t::replace), max_chars);
}

int64_t get_int(const Json& object, const char* key, const std::string& what, int64_t min, int64_t max) {
  KV_CHECK(object.is_object() && object.contains(key), "{}: missing key \"{}\"", what, key);
  const Json& v = object.at(key);
  KV_CHECK(v.is_number_integer(), "{}: \"{}\" must be an integer, got {}", what, key, excerpt(v));
  KV_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(INT64_MAX),
           "{}: \"{}\" = {} is out of range [{}, {}]", what, key, excerpt(v), min, max);
  const int64_t x = v.get<int64_t>();
  KV_CHECK(x >= min && x <= max, "{}: \"{}\" = {} is out of range [{}, {}]", what, key, x, min, max);
  return x;
}

double get_number(const Json& object, const char* key, const std::string& what, double min, double max) {
  KV_CHECK(object.is_object() && object.contains(key), "{}: missing key \"{}\"", what, key);
  const Json& v = object.at(key);
  KV_CHECK(v.is_number(), "{}: \"{}\" must be a number, got {}", what, key, excerpt(v));
  const double d = v.get<double>();
  KV_CHECK(std::isfinite(d) && d >= min && d <= max, "{}: \"{}\" = {} is out of range [{}, {}]", what, key,
           excerpt(v), min, max);
  return d;
}

bool get_bool(const Json& object, const char* key, const std::string& what) {
  KV_CHECK(object.is_object() && object.contains(key), "{}: missing key \"{}\"", what, key);
  const Json& v = object.at(key);
  KV_CHECK(v.is_boolean(), "{}: \"{}\" must be true or false, got {}", what, key, excerpt(v));
  return v.get<bool>();
}

bool has(const Json& object, const char* key) {
  return object.is_object() && object.contains(key) && !object.at(key).is_null();
}

int64_t opt_int(const Json& object, const char* key, const std::string& what, int64_t min, int64_t max,
                int64_t fallback) {
  return has(object, key) ? get_int(object, key, what, min, max) : fallback;
}

double opt_number(const Json& object, const char* key, const std::string& what, double min, double max,
                  double fallback) {
  return has(object, key) ? get_number(object, key, what, min, max) : fallback;
}

bool opt_bool(const Json& object, const char* key, const std::string& what, bool fallback) {
  return has(object, key) ? get_bool(object, key, what) : fallback;
}

std::string opt_string(const Json& object, const char* key, const std::string& what, const std::string& fallback) {
  return has(object, key) ? get_string(object, key, what) : fallback;
}

std::string get_string(const Json& object, const char* key, const std::string& what) {
  KV_CHECK(object.is_object() && object.contains(key), "{}: missing key \"{}\"", what, key);
  const Json& v = object.at(key);
  KV_CHECK(v.is_string(), "{}: \"{}\" must be a string, got {}", what, key, excerpt(v));
  return v.get<std::string>();
}

const Json& get_object(const Json& object, const char* key, const std::string& what) {
  KV_CHECK(object.is_object() && object.contains(key), "{}: missing key \"{}\"", what, key);
  const Json& v = object.at(key);
  KV_CHECK(v.is_object(), "{}: \"{}\" must be an object, got {}", what, key, excerpt(v));
  return v;
}

}  // namespace kvroute::json
