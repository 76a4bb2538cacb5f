// Helpers shared by the tests: seeded random tensors and comparisons against double-precision
// references.
#pragma once

#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/tensor.h"

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

// max_i |actual_i - expected_i| / max(1, max_j |expected_j|): an error relative to the scale of
// the expected values, robust to individual near-zero entries.
inline double scaled_max_error(const std::vector<float>& actual, const std::vector<double>& expected) {
  EXPECT_EQ(actual.size(), expected.size());
  double scale = 1e-30, err = 0.0;
  for (double e : expected) scale = std::max(scale, std::abs(e));
  for (size_t i = 0; i < std::min(actual.size(), expected.size()); ++i) {
    err = std::max(err, std::abs(static_cast<double>(actual[i]) - expected[i]));
  }
  return err / std::max(scale, 1e-6);
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

}  // namespace kvroute::testing
