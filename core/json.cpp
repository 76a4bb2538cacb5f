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

std::string excerpt(const nlohmann::json& value, size_t max_chars) {
  return kvroute::excerpt(value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), max_chars);
}

template <class J>
void BasicReader<J>::fail(const std::string& path, const std::string& what) const {
  KV_FAIL("{}: {}: {}", file, path.empty() ? std::string("(top level)") : path, what);
}

template <class J>
int64_t BasicReader<J>::as_integer(const J& v, const std::string& path, int64_t min, int64_t max) const {
  if (!v.is_number_integer()) fail(path, "expected an integer, got " + excerpt(v));
  bool fits;
  if (v.is_number_unsigned()) {  // may exceed INT64_MAX
    const uint64_t u = v.template get<uint64_t>();
    fits = max >= 0 && u <= static_cast<uint64_t>(max) && (min <= 0 || u >= static_cast<uint64_t>(min));
  } else {
    const int64_t x = v.template get<int64_t>();
    fits = x >= min && x <= max;
  }
  if (!fits) fail(path, fmt::format("{} is out of range [{}, {}]", excerpt(v), min, max));
  return v.template get<int64_t>();
}

template <class J>
double BasicReader<J>::as_number(const J& v, const std::string& path, double min, double max) const {
  if (!v.is_number()) fail(path, "expected a number, got " + excerpt(v));
  const double d = v.template get<double>();
  if (!(std::isfinite(d) && d >= min && d <= max)) fail(path, fmt::format("{} is out of range [{}, {}]", excerpt(v), min, max));
  return d;
}

template struct BasicReader<Json>;
template struct BasicReader<nlohmann::json>;

}  // namespace kvroute::json
