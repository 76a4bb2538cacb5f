// The schema machinery of kvroute's YAML files (run configs, study files): each key is one Field
// with its reader (type and range checks) and, for files kvroute writes back, its writer.
// read_keys reads one mapping against a list of fields: a key twice, an unknown key (with the
// nearest known one) and a value of the wrong type are errors, each one line starting
// "<file>: <path>.<key>" (the path: a section, "eval", "runs[2]").
#pragma once

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "core/text.h"
#include "train/config.h"

namespace kvroute::train {

// One key of the schema: how to read it from YAML (with its checks) and how to print it.
template <class C>
struct Field {
  std::string key;
  std::function<void(C&, const YAML::Node&, const std::string& where)> read;
  std::function<YAML::Node(const C&)> write;
};
// A node's text cut to a short excerpt for error messages.
inline std::string excerpt(const YAML::Node& node) { return kvroute::excerpt(yaml_text(node)); }

template <class T>
T read_as(const YAML::Node& node, const std::string& where, const char* what) {
  KV_CHECK(node.IsScalar(), "{}: expected {}, got '{}'", where, what, excerpt(node));
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    KV_FAIL("{}: expected {}, got '{}'", where, what, excerpt(node));
  }
}

template <class C, class T>
Field<C> int_field(std::string key, T& (*ref)(C&), int64_t min, int64_t max) {
  return {key,
          [ref, min, max](C& c, const YAML::Node& n, const std::string& where) {
            const int64_t v = read_as<int64_t>(n, where, "an integer");
            KV_CHECK(v >= min && v <= max, "{}: {} is out of range [{}, {}]", where, v, min, max);
            ref(c) = static_cast<T>(v);
          },
          [ref](const C& c) { return YAML::Node(ref(const_cast<C&>(c))); }};
}

template <class C>
Field<C> float_field(std::string key, double& (*ref)(C&), double min, double max, bool min_open = false) {
  return {key,
          [ref, min, max, min_open](C& c, const YAML::Node& n, const std::string& where) {
            const double v = read_as<double>(n, where, "a number");
            KV_CHECK((min_open ? v > min : v >= min) && v <= max, "{}: {} is out of range {}{}, {}]", where, v,
                     min_open ? "(" : "[", min, max);
            ref(c) = v;
          },
          [ref](const C& c) { return YAML::Node(ref(const_cast<C&>(c))); }};
}

template <class C>
Field<C> bool_field(std::string key, bool& (*ref)(C&)) {
  return {key, [ref](C& c, const YAML::Node& n, const std::string& where) { ref(c) = read_as<bool>(n, where, "true or false"); },
          [ref](const C& c) { return YAML::Node(ref(const_cast<C&>(c))); }};
}

// A string; `check` (optional) validates it.
template <class C>
Field<C> string_field(std::string key, std::string& (*ref)(C&),
                      void (*check)(const std::string&, const std::string&) = nullptr) {
  return {key,
          [ref, check](C& c, const YAML::Node& n, const std::string& where) {
            std::string v = read_as<std::string>(n, where, "a string");
            KV_CHECK(v.size() <= 4096 && v.find('\0') == std::string::npos, "{}: not a usable path or name", where);
            if (check) check(v, where);
            ref(c) = std::move(v);
          },
          [ref](const C& c) { return YAML::Node(ref(const_cast<C&>(c))); }};
}

// A key with a fixed set of names (an enum): an unknown name lists the choices.
template <class C, class E>
Field<C> enum_field(std::string key, E& (*ref)(C&), std::vector<E> values, const char* (*name)(E)) {
  return {key,
          [ref, values, name](C& c, const YAML::Node& n, const std::string& where) {
            const std::string v = read_as<std::string>(n, where, "a string");
            std::vector<std::string> names;
            for (E e : values) {
              if (v == name(e)) {
                ref(c) = e;
                return;
              }
              names.push_back(name(e));
            }
            KV_FAIL("{}: '{}' is not one of {}", where, v, fmt::format("{}", fmt::join(names, ", ")));
          },
          [ref, name](const C& c) { return YAML::Node(std::string(name(ref(const_cast<C&>(c))))); }};
}

inline size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

inline std::string nearest(const std::string& key, const std::vector<std::string>& candidates) {
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const std::string& c : candidates) {
    size_t d = edit_distance(key, c);
    if (d < best_d) best_d = d, best = c;
  }
  return best;
}

// Reads the keys of the mapping `node` (null: none) into `target`. `path` names the mapping in
// errors; the keys read are added to `given` when it is not null.
template <class C>
void read_keys(const YAML::Node& node, const std::vector<Field<C>>& fields, C& target, const std::string& file,
               const std::string& path, std::set<std::string>* given = nullptr) {
  KV_CHECK(node.IsMap() || node.IsNull(), "{}: {} must be a mapping of keys, got '{}'", file, path, excerpt(node));
  std::vector<std::string> keys;
  for (const Field<C>& f : fields) keys.push_back(f.key);
  std::set<std::string> seen;
  for (const auto& kv : node) {
    KV_CHECK(kv.first.IsScalar(), "{}: a key of '{}' must be a plain word, got '{}'", file, path, excerpt(kv.first));
    const std::string key = kv.first.as<std::string>();
    KV_CHECK(seen.insert(key).second, "{}: key '{}.{}' appears twice", file, path, kvroute::excerpt(key, 60));
    auto field = std::find_if(fields.begin(), fields.end(), [&](const Field<C>& f) { return f.key == key; });
    if (field == fields.end()) {
      // A short list of keys is named whole; a long one by its nearest key.
      const std::string known = keys.size() <= 8 ? fmt::format("; expected {}", fmt::join(keys, ", ")) : "";
      KV_FAIL("{}: unknown key '{}.{}' (did you mean '{}.{}'?{})", file, path, kvroute::excerpt(key, 60), path,
              nearest(key, keys), known);
    }
    field->read(target, kv.second, fmt::format("{}: {}.{}", file, path, key));
    if (given != nullptr) given->insert(key);
  }
}

}  // namespace kvroute::train
