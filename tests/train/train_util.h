// What the train tests share: structured token data, the tiny run config, run directories.
#pragma once

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/rng.h"
#include "tests/test_util.h"

namespace kvroute::train::test {

// Random tokens over a 256-token vocabulary with some structure (repeated phrases) to learn.
inline std::string make_data(const std::string& name) {
  Philox rng(42);
  std::vector<int32_t> train, val;
  for (int i = 0; i < 60000; ++i) train.push_back(static_cast<int32_t>(i % 7 == 0 ? rng.uniform_int(256) : (i * 13) % 256));
  for (int i = 0; i < 3000; ++i) val.push_back(static_cast<int32_t>((i * 13) % 256));
  return testing::write_token_data(testing::temp_dir(name), train, val);
}

// The tiny model (testing::TinyModel) with stochastic routing, 20 steps on `data_dir`.
inline std::string tiny_yaml(const std::string& data_dir, const std::string& run_dir) {
  return testing::tiny_model_yaml({}, ", init_std: 0.05") + fmt::format(R"(router: {{policy: stochastic, share_prob: 0.5, seed: 3}}
data: {{dir: {}}}
optim: {{lr: 3.0e-3, min_lr: 3.0e-4, warmup_fraction: 0.1}}
train: {{name: t, run_dir: {}, steps: 20, batch_size: 4, seq_len: 16, log_interval: 1, threads: 1,
        keep_checkpoints: 5}}
eval: {{retention: [1.0, 0.5], batches: 3}}
dist: {{backend: none}}
)",
                                                                        data_dir, run_dir);
}

inline std::string write_config(const std::string& dir, const std::string& yaml) {
  const std::string path = dir + "/run.yaml";
  std::ofstream(path) << yaml;
  return path;
}

using testing::logged_losses;

}  // namespace kvroute::train::test
