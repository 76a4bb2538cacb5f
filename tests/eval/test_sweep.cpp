// The study runner: trains and evaluates a small grid, writes results.csv / report.md, and a
// second invocation skips the finished runs.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/rng.h"
#include "data/shard.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

namespace fs = std::filesystem;

std::string run_capture(const std::string& cmd, int* rc) {
  FILE* pipe = popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
  const int status = pclose(pipe);
  *rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

TEST(Sweep, TrainsEvaluatesReportsAndResumesWithoutRetraining) {
  const fs::path dir = kvroute::testing::temp_dir("sweep");
  fs::create_directories(dir / "data");
  Philox rng(1);
  std::vector<int32_t> train, val;
  for (int i = 0; i < 20000; ++i) train.push_back(static_cast<int32_t>((i * 7 + rng.uniform_int(3)) % 128));
  for (int i = 0; i < 2000; ++i) val.push_back(static_cast<int32_t>((i * 7) % 128));
  data::write_shard((dir / "data/train_000000.bin").string(), train, 2);
  data::write_shard((dir / "data/val_000000.bin").string(), val, 2);
  std::ofstream(dir / "base.yaml") << "model: {vocab_size: 128, hidden_size: 32, num_layers: 4, num_heads: 4, num_kv_heads: 2,\n"
                                      "        head_dim: 8, intermediate_size: 64, max_seq_len: 32}\n"
                                      "data: {dir: " << (dir / "data").string() << "}\n"
                                      "train: {steps: 4, batch_size: 2, seq_len: 16, log_interval: 2, threads: 1}\n"
                                      "dist: {backend: none}\n";
  std::ofstream(dir / "study.yaml") << "study: mini\nbase: " << (dir / "base.yaml").string() << "\n"
                                       "grid:\n  router.share_prob: [0.0, 0.5]\n"
                                       "overrides: [router.policy=stochastic]\n"
                                       "eval: {retention: [1.0, 0.5, 0.25], batches: 2}\n";
  int rc = 0;
  std::string first = run_capture(std::string(KVROUTE_BINARY) + " sweep " + (dir / "study.yaml").string(), &rc);
  ASSERT_EQ(rc, 0) << first;
  const fs::path out = dir / "mini";
  ASSERT_TRUE(fs::exists(out / "results.csv"));
  ASSERT_TRUE(fs::exists(out / "report.md"));
  std::ifstream csv(out / "results.csv");
  std::string line;
  int lines = 0;
  while (std::getline(csv, line)) ++lines;
  EXPECT_EQ(lines, 1 + 2 * 3);  // header + 2 runs x 3 retention levels
  const fs::path ckpt = out / "runs/share_prob-0.5/checkpoints/step_00000004/model.safetensors";
  ASSERT_TRUE(fs::exists(ckpt));
  const auto written = fs::last_write_time(ckpt);
  std::string second = run_capture(std::string(KVROUTE_BINARY) + " sweep " + (dir / "study.yaml").string(), &rc);
  ASSERT_EQ(rc, 0) << second;
  EXPECT_NE(second.find("share_prob-0.0 already trained"), std::string::npos) << second;
  EXPECT_NE(second.find("share_prob-0.5 already trained"), std::string::npos) << second;
  EXPECT_EQ(fs::last_write_time(ckpt), written);
  // A typo in a run's overrides fails before any training.
  std::ofstream(dir / "bad.yaml") << "study: bad\nbase: " << (dir / "base.yaml").string()
                                  << "\nruns:\n  - {name: x, overrides: [router.share_prbo=0.5]}\n";
  std::string bad = run_capture(std::string(KVROUTE_BINARY) + " sweep " + (dir / "bad.yaml").string(), &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(bad.find("run 'x'"), std::string::npos) << bad;
  EXPECT_NE(bad.find("router.share_prob"), std::string::npos) << bad;
}

}  // namespace
}  // namespace kvroute
