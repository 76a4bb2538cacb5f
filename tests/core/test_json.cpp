// The bounded JSON parse and the one typed reader of untrusted JSON (core/json.h): every error names
// the file and the path of the value; optional getters take absent and null alike.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "core/json.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

using testing::expect_error;

TEST(Json, ParseRefusesDuplicateKeysAndDeepNesting) {
  expect_error([] { (void)json::parse(R"({"a": 1, "a": 2})", "f.json"); }, {"f.json", "duplicate key", "\"a\""});
  expect_error([] { (void)json::parse(std::string(100, '[') + std::string(100, ']'), "f.json"); }, {"f.json"});
  expect_error([] { (void)json::parse_unordered("{\"a\": }", "u.json"); }, {"u.json", "invalid JSON"});
  EXPECT_EQ(json::parse(R"({"b": 1, "a": 2})", "f.json").begin().key(), "b");  // insertion order kept
}

TEST(Json, ReaderNamesTheFileAndThePath) {
  const json::Json doc = json::parse(
      R"({"model": {"vocab": {"a": 1}, "n": 5, "big": 18446744073709551615, "x": 1.5, "flag": true, "s": "t",
          "nothing": null}})",
      "tok.json");
  const json::Reader r{"tok.json"};
  const json::Json& model = r.object(doc, "", "model");
  EXPECT_EQ(r.integer(model, "model", "n", 0, 10), 5);
  EXPECT_EQ(r.integer(model, "model", "absent", 0, 10, 7), 7);
  EXPECT_EQ(r.integer(model, "model", "nothing", 0, 10, 7), 7);  // null is absent
  EXPECT_DOUBLE_EQ(r.number(model, "model", "x", 0, 2), 1.5);
  EXPECT_DOUBLE_EQ(r.number(model, "model", "n", 0, 10), 5.0);  // an integer is a number
  EXPECT_TRUE(r.boolean(model, "model", "flag"));
  EXPECT_FALSE(r.boolean(model, "model", "absent", false));
  EXPECT_EQ(r.string(model, "model", "s"), "t");
  EXPECT_EQ(r.string(model, "model", "absent", "d"), "d");
  expect_error([&] { (void)r.integer(model, "model", "absent", 0, 10); }, {"tok.json: model.absent: missing"});
  expect_error([&] { (void)r.integer(model, "model", "n", 6, 10); }, {"tok.json: model.n: 5 is out of range [6, 10]"});
  expect_error([&] { (void)r.integer(model, "model", "big", 0, INT64_MAX); }, {"model.big", "18446744073709551615"});
  expect_error([&] { (void)r.integer(model, "model", "x", 0, 10); }, {"model.x: expected an integer, got 1.5"});
  expect_error([&] { (void)r.integer(model, "model", "s", 0, 10, 3); }, {"model.s: expected an integer"});
  expect_error([&] { (void)r.number(model, "model", "x", 2, 3); }, {"model.x: 1.5 is out of range"});
  expect_error([&] { (void)r.boolean(model, "model", "s"); }, {"model.s: expected true or false"});
  expect_error([&] { (void)r.string(model, "model", "n"); }, {"model.n: expected a string, got 5"});
  expect_error([&] { (void)r.object(model, "model", "s"); }, {"model.s: expected an object"});
  expect_error([&] { (void)r.array(model, "model", "vocab"); }, {"model.vocab: expected an array"});
  // The flat shorthands: "WHAT: KEY: ...".
  expect_error([&] { (void)json::get_int(model, "n", "state.json", 0, 1); }, {"state.json: n: 5 is out of range"});
  EXPECT_EQ(json::opt_string(model, "nothing", "state.json", "x"), "x");
  EXPECT_TRUE(json::has(model, "s"));
  EXPECT_FALSE(json::has(model, "nothing"));
  // The unordered document type reads alike.
  const nlohmann::json u = json::parse_unordered(R"({"m": {"k": "v"}})", "u.json");
  const json::UnorderedReader ur{"u.json"};
  EXPECT_EQ(ur.string(ur.object(u, "", "m"), "m", "k"), "v");
  expect_error([&] { (void)ur.integer(ur.object(u, "", "m"), "m", "k", 0, 1); }, {"u.json: m.k: expected an integer"});
  // A long value is cut to a short excerpt in the message.
  const json::Json long_value = json::parse("{\"s\": \"" + std::string(1000, 'x') + "\"}", "l.json");
  try {
    (void)json::Reader{"l.json"}.integer(long_value, "", "s", 0, 1);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_LT(std::string(e.what()).size(), 200u);
  }
}

}  // namespace
}  // namespace kvroute
