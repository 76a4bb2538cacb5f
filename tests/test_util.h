// Helpers shared by the tests: seeded random tensors and comparisons against double-precision
// references, temporary directories, expected errors, and the fixtures of the tests that train or
// run the binary (a tiny model, token data, running a command).
#pragma once

#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"
#include "data/shard.h"

namespace kvroute::testing {

inline Tensor random_tensor(const Shape& shape, uint64_t seed, float low = -1.0f, float high = 1.0f) {
  Tensor t = Tensor::empty(shape);
  fill_uniform(t, seed, 0, low, high);
  return t;
}

inline std::vector<double> to_double(const Tensor& t) {
  std::vector<float> f = t.to_vector<float>();
  return std::vector<double>(f.begin(), f.end());
}

// max_i |actual_i - expected_i| / max(terms, max_j |expected_j|, 1e-6), for results that are sums
// or differences of larger terms (dot products, y + a x, dP - P.dP): `terms` is the largest sum of
// |term| behind one element. Float rounding, in any summation order and with or without FMA, is
// relative to the terms, so where they cancel, an error scaled by the small result measures noise.
inline double cancel_scaled_error(const std::vector<float>& actual, const std::vector<double>& expected,
                                  double terms) {
  EXPECT_EQ(actual.size(), expected.size());
  double scale = std::max(terms, 1e-6), err = 0.0;
  for (double e : expected) scale = std::max(scale, std::abs(e));
  for (size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    err = std::max(err, std::abs(static_cast<double>(actual[i]) - expected[i]));
  }
  return err / scale;
}

inline double cancel_scaled_error(const Tensor& actual, const std::vector<double>& expected, double terms) {
  return cancel_scaled_error(actual.to_vector<float>(), expected, terms);
}

// max_i |actual_i - expected_i| / max(max_j |expected_j|, 1e-6): an error relative to the scale of
// the expected values, robust to individual near-zero entries. For element-wise results computed
// without cancellation; see cancel_scaled_error for sums whose terms can cancel.
inline double scaled_max_error(const std::vector<float>& actual, const std::vector<double>& expected) {
  return cancel_scaled_error(actual, expected, 0.0);
}

inline double scaled_max_error(const Tensor& actual, const std::vector<double>& expected) {
  return scaled_max_error(actual.to_vector<float>(), expected);
}

// A fresh, empty directory under the system temp dir (removed first if present), private to this
// process: test binaries of two checkouts (or two ctest jobs) never share one.
inline std::string temp_dir(const std::string& name) {
  std::filesystem::path p =
      std::filesystem::temp_directory_path() / ("kvroute_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

// The whole content of a file ("" when it cannot be read).
inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Expects `fn` to throw kvroute::Error whose message contains every fragment.
template <class Fn>
void expect_error(Fn&& fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected kvroute::Error";
  } catch (const Error& e) {
    std::string message = e.what();
    for (const std::string& f : fragments) {
      EXPECT_NE(message.find(f), std::string::npos) << "message '" << message << "' lacks '" << f << "'";
    }
  }
}

// ---- Fixtures of the tests that train, evaluate or run the binary ---------------------------------

// The model section of a tiny Qwen3-style model, "model: {...}\n": the size the training tests
// use unless they need another. `extra` adds keys (", init_std: 0.05").
struct TinyModel {
  int64_t vocab = 256, hidden = 32, layers = 4, heads = 4, kv_heads = 2, head_dim = 8, intermediate = 64;
  int64_t max_seq_len = 32;
};
inline std::string tiny_model_yaml(const TinyModel& m = {}, const std::string& extra = "") {
  return "model: {vocab_size: " + std::to_string(m.vocab) + ", hidden_size: " + std::to_string(m.hidden) +
         ", num_layers: " + std::to_string(m.layers) + ", num_heads: " + std::to_string(m.heads) +
         ", num_kv_heads: " + std::to_string(m.kv_heads) + ", head_dim: " + std::to_string(m.head_dim) +
         ", intermediate_size: " + std::to_string(m.intermediate) + ", max_seq_len: " + std::to_string(m.max_seq_len) +
         extra + "}\n";
}

// Writes train_000000.bin and val_000000.bin (2-byte tokens) into `dir` (created) and returns it.
inline std::string write_token_data(const std::string& dir, const std::vector<int32_t>& train,
                                    const std::vector<int32_t>& val) {
  std::filesystem::create_directories(dir);
  data::write_shard(dir + "/train_000000.bin", train, 2);
  data::write_shard(dir + "/val_000000.bin", val, 2);
  return dir;
}

// The training losses a run logged (RUN_DIR/metrics.jsonl), step by step.
inline std::vector<double> logged_losses(const std::string& run_dir) {
  std::vector<double> losses;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) losses.push_back(j["loss"]);
  }
  return losses;
}

// Runs `cmd` through the shell: its stdout and stderr together; *rc is the exit status (-1 when a
// signal ended it).
inline std::string run_capture(const std::string& cmd, int* rc) {
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (pipe != nullptr && fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
  const int status = pipe != nullptr ? pclose(pipe) : -1;
  *rc = status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

// The exit status of `cmd` (output discarded; -1 when a signal ended it).
inline int run_status(const std::string& cmd) {
  const int rc = std::system((cmd + " > /dev/null 2>&1").c_str());
  return rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

}  // namespace kvroute::testing
