// SIGTERM/SIGINT: a checkpoint at the next step (also during an evaluation), and the run resumes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/threading.h"
#include "train/checkpoint.h"
#include "tests/test_util.h"
#include "tests/train/train_util.h"

namespace kvroute::train {
namespace {

namespace fs = std::filesystem;
using test::logged_losses;
using test::make_data;
using test::tiny_yaml;
using test::write_config;

TEST(Signals, SigtermCheckpointsAndTheRunResumes) {
  const std::string data = make_data("signal_data");
  const std::string dir = testing::temp_dir("signal");
  const std::string cfg = write_config(dir, tiny_yaml(data, dir + "/run"));
  const std::string bin = KVROUTE_BINARY;
  const std::string script = fmt::format(
      "{} train {} train.steps=100000 & pid=$!; "
      "for i in $(seq 600); do [ -s {}/run/metrics.jsonl ] && break; sleep 0.05; done; "
      "kill -TERM $pid; wait $pid; exit $?",
      bin, cfg, dir);
  EXPECT_EQ(testing::run_status("bash -c '" + script + "'"), 130);
  std::string ckpt = latest_checkpoint(dir + "/run/checkpoints");
  ASSERT_FALSE(ckpt.empty());
  auto state = nlohmann::json::parse(std::ifstream(ckpt + "/state.json"));
  const int64_t stopped_at = state["step"];
  EXPECT_GT(stopped_at, 0);
  EXPECT_LT(stopped_at, 100000);
  EXPECT_EQ(testing::run_status(bin + " train " + cfg + " train.steps=" + std::to_string(stopped_at + 3) + " --resume auto"), 0);
  EXPECT_EQ(logged_losses(dir + "/run").size(), static_cast<size_t>(stopped_at + 3));
}

TEST(Signals, SigtermDuringAnEvaluationIsHonoured) {
  const std::string data = make_data("signal_eval_data");
  const std::string dir = testing::temp_dir("signal_eval");
  const std::string cfg = write_config(dir, tiny_yaml(data, dir + "/run"));
  const std::string bin = KVROUTE_BINARY;
  // Evaluations over many retention levels after every step: most of the time is spent in them.
  const std::string script = fmt::format(
      "timeout 60 {} train {} train.steps=100000 eval.interval=1 train.log_interval=1 "
      "\"eval.retention=[1,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.1,1,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.1]\" & pid=$!; "
      "for i in $(seq 600); do grep -q val_loss {}/run/metrics.jsonl 2>/dev/null && break; sleep 0.05; done; "
      "kill -TERM $pid; wait $pid; exit $?",
      bin, cfg, dir);
  EXPECT_EQ(testing::run_status("bash -c '" + script + "'"), 130);  // 124 would mean the timeout ended it
  EXPECT_FALSE(latest_checkpoint(dir + "/run/checkpoints").empty());
}


// kvroute bounds OpenMP's spin-waiting for itself (core/threading.h) unless the user chose a policy:
// the running process's environment shows which (read once its training has started).
TEST(Threading, TheOpenMpSpinIsBoundedUnlessTheUserSetIt) {
  const std::string data = make_data("spin_data");
  const std::string dir = testing::temp_dir("spin");
  const std::string cfg = write_config(dir, tiny_yaml(data, dir + "/run"));
  auto spin_of = [&](const std::string& env, const std::string& run) {
    const std::string script = fmt::format(
        "{} {} train {} train.steps=100000 train.run_dir={}/{} > /dev/null 2>&1 & pid=$!; "
        "for i in $(seq 600); do [ -s {}/{}/metrics.jsonl ] && break; sleep 0.05; done; "
        "tr \"\\0\" \"\\n\" < /proc/$pid/environ | grep ^GOMP_SPINCOUNT= ; kill -TERM $pid; wait $pid",
        env, KVROUTE_BINARY, cfg, dir, run, dir, run);
    int rc = 0;
    std::string out = testing::run_capture("bash -c '" + script + "'", &rc);
    return out;
  };
  EXPECT_EQ(spin_of("env -u GOMP_SPINCOUNT -u OMP_WAIT_POLICY", "a"),
            "GOMP_SPINCOUNT=" + std::to_string(kOpenMpSpinCount) + "\n");
  EXPECT_EQ(spin_of("env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=77", "b"), "GOMP_SPINCOUNT=77\n");
  EXPECT_EQ(spin_of("env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive", "c"), "");
}

}  // namespace
}  // namespace kvroute::train
