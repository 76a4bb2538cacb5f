// The Trainer in one process: exact resume, CPU bf16, mismatched or corrupt checkpoints, non-finite
// weights.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "core/safetensors.h"
#include "data/sft.h"
#include "distributed/communicator.h"
#include "kernels/ops.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/trainer.h"
#include "tests/test_util.h"
#include "tests/train/train_util.h"

namespace kvroute::train {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;
using test::make_data;
using test::tiny_yaml;

TEST(Trainer, ResumeIsBitIdentical) {
  const std::string data = make_data("resume_data");
  const std::string run_a = testing::temp_dir("resume_a"), run_b = testing::temp_dir("resume_b");
  auto comm_owner = dist::make_local_communicator();
  dist::Communicator& comm = *comm_owner;
  TrainResult straight = run_training(parse_config(tiny_yaml(data, run_a), "a.yaml"), comm, {"", 0, true});
  ASSERT_EQ(straight.losses.size(), 20u);
  EXPECT_LT(straight.losses.back(), straight.losses.front());  // it learns
  RunConfig cb = parse_config(tiny_yaml(data, run_b), "b.yaml");
  TrainResult first = run_training(cb, comm, {"", 10, true});
  ASSERT_EQ(first.losses.size(), 10u);
  EXPECT_TRUE(fs::exists(run_b + "/checkpoints/step_00000010/model.safetensors"));
  TrainResult second = run_training(cb, comm, {"auto", 0, true});
  ASSERT_EQ(second.losses.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(first.losses[i], straight.losses[i]) << "step " << i + 1;
    EXPECT_EQ(second.losses[i], straight.losses[10 + i]) << "step " << i + 11;
  }
  // metrics.jsonl holds each step once, and the final eval at both retention levels.
  std::ifstream metrics(run_b + "/metrics.jsonl");
  std::string line;
  int steps = 0, evals = 0;
  while (std::getline(metrics, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) ++steps;
    if (j.contains("val_loss")) {
      ++evals;
      EXPECT_TRUE(j["val_loss"].contains("1"));
      EXPECT_TRUE(j["val_loss"].contains("0.5"));
    }
  }
  EXPECT_EQ(steps, 20);
  EXPECT_EQ(evals, 1);
  // The checkpoint's config.json is a Hugging Face Qwen3 config.
  auto hf = nlohmann::json::parse(std::ifstream(run_b + "/checkpoints/step_00000020/config.json"));
  EXPECT_EQ(hf["model_type"], "qwen3");
  EXPECT_EQ(hf["num_key_value_heads"], 2);
  EXPECT_EQ(hf["architectures"][0], "Qwen3ForCausalLM");
}

// Packed supervised rows (data.pack): several examples per row; training learns, resumes bit-
// identically (the packing is deterministic), and packing token shards is an error naming data.pack.
TEST(Trainer, PackedSupervisedRowsTrainAndResume) {
  const std::string data = testing::temp_dir("packed_sft_data");
  Philox rng(9);
  std::vector<data::SftExample> train_examples, val_examples;
  for (int i = 0; i < 400; ++i) {
    data::SftExample e{{0}, {}};
    const int64_t p = 1 + static_cast<int64_t>(rng.uniform_int(6)), r = 1 + static_cast<int64_t>(rng.uniform_int(4));
    for (int64_t t = 0; t < p; ++t) e.prompt.push_back(1 + static_cast<int32_t>(rng.uniform_int(100)));
    for (int64_t t = 0; t < r; ++t) e.response.push_back(100 + (e.prompt.back() + static_cast<int32_t>(t)) % 100);
    e.response.push_back(0);
    (i < 360 ? train_examples : val_examples).push_back(e);
  }
  data::write_sft_file(data + "/sft_train.bin", train_examples, 2);
  data::write_sft_file(data + "/sft_val.bin", val_examples, 2);
  std::ofstream(data + "/data.json") << R"({"format": "sft", "vocab_size": 256, "eot_id": 0, "token_bytes": 2})";
  const std::string run_a = testing::temp_dir("packed_a"), run_b = testing::temp_dir("packed_b");
  auto comm_owner = dist::make_local_communicator();
  dist::Communicator& comm = *comm_owner;
  // tiny_yaml's data section, with pack: true.
  auto packed_yaml = [&](const std::string& run) {
    std::string y = test::tiny_yaml(data, run);
    const std::string from = "data: {dir: " + data + "}";
    y.replace(y.find(from), from.size(), "data: {dir: " + data + ", pack: true}");
    return y;
  };
  TrainResult straight = run_training(parse_config(packed_yaml(run_a), "a.yaml"), comm, {"", 0, true});
  ASSERT_EQ(straight.losses.size(), 20u);
  EXPECT_LT(straight.losses.back(), straight.losses.front());
  RunConfig cb = parse_config(packed_yaml(run_b), "b.yaml");
  TrainResult first = run_training(cb, comm, {"", 10, true});
  TrainResult second = run_training(cb, comm, {"auto", 0, true});
  ASSERT_EQ(second.losses.size(), 10u);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(second.losses[i], straight.losses[10 + i]) << "step " << i + 11;
  // Token shards are full rows already.
  const std::string tokens = make_data("packed_tokens");
  std::string bad = test::tiny_yaml(tokens, testing::temp_dir("packed_c"));
  bad.replace(bad.find("data: {dir: " + tokens + "}"), ("data: {dir: " + tokens + "}").size(),
              "data: {dir: " + tokens + ", pack: true}");
  expect_error([&] { run_training(parse_config(bad, "c.yaml"), comm, {"", 0, true}); }, {"data.pack", "token shards"});
  for (const std::string& d : {data, run_a, run_b, tokens}) fs::remove_all(d);
}

// CPU bf16 (train.precision: bf16 on the CPU): bf16 GEMM operands, f32 everything else. The
// losses follow the fp32 run within bf16's rounding; they are not bit-identical (bf16 was used).
TEST(Trainer, CpuBf16TrainingFollowsFp32WithinBf16Rounding) {
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  const std::string data = make_data("bf16_data");
  auto comm_owner = dist::make_local_communicator();
  RunConfig c32 = parse_config(tiny_yaml(data, testing::temp_dir("bf16_f32")), "a.yaml");
  RunConfig c16 = parse_config(tiny_yaml(data, testing::temp_dir("bf16_b16")), "b.yaml");
  c16.train.precision = Precision::BF16;
  TrainResult r32 = run_training(c32, *comm_owner, {"", 0, true});
  TrainResult r16 = run_training(c16, *comm_owner, {"", 0, true});
  ASSERT_EQ(r16.losses.size(), r32.losses.size());
  EXPECT_NE(r16.losses[0], r32.losses[0]);  // the GEMMs did round
  // Step 1 differs only by the forward's rounding (same weights); later steps also by the updates.
  EXPECT_NEAR(r16.losses[0], r32.losses[0], 5e-3 * r32.losses[0]);
  for (size_t i = 0; i < r32.losses.size(); ++i) {
    EXPECT_NEAR(r16.losses[i], r32.losses[i], 3e-2 * r32.losses[i]) << "step " << i + 1;
  }
  EXPECT_LT(r16.losses.back(), r16.losses.front());  // it learns
  // The checkpoint holds the f32 master weights.
  const safetensors::File file = safetensors::load(r16.last_checkpoint + "/model.safetensors");
  ASSERT_FALSE(file.tensors.empty());
  for (const auto& [name, t] : file.tensors) EXPECT_EQ(t.dtype(), DType::F32) << name;
}

TEST(Trainer, MismatchedOrCorruptCheckpointsAreClearErrors) {
  const std::string data = make_data("ckpt_data");
  const std::string run = testing::temp_dir("ckpt_run");
  auto comm_owner = dist::make_local_communicator();
  dist::Communicator& comm = *comm_owner;
  RunConfig c = parse_config(tiny_yaml(data, run), "c.yaml", {"train.steps=2"});
  TrainResult r = run_training(c, comm, {"", 0, true});
  RunConfig other = parse_config(tiny_yaml(data, run), "c.yaml", {"model.hidden_size=48"});
  expect_error([&] { run_training(other, comm, {r.last_checkpoint, 0, true}); },
               {r.last_checkpoint, "does not match"});
  expect_error([&] { run_training(c, comm, {run + "/checkpoints/step_99", 0, true}); }, {"step_99", "no such checkpoint"});
  // A fresh run (no --resume) into a directory that holds a run is refused, and nothing changes.
  const std::string before = testing::read_file(run + "/metrics.jsonl");
  expect_error([&] { run_training(c, comm, {"", 0, true}); }, {run, "already holds a run", "--resume auto"});
  EXPECT_EQ(testing::read_file(run + "/metrics.jsonl"), before);
  EXPECT_TRUE(fs::exists(r.last_checkpoint + "/model.safetensors"));
  // state.json: invalid JSON, a step that contradicts the directory name, a negative count.
  const std::string state = testing::read_file(r.last_checkpoint + "/state.json");
  auto with_state = [&](const std::string& text) { std::ofstream(r.last_checkpoint + "/state.json") << text; };
  with_state("{\"step\": ");
  expect_error([&] { run_training(c, comm, {r.last_checkpoint, 0, true}); }, {"state.json", "invalid JSON"});
  nlohmann::json j = nlohmann::json::parse(state);
  j["step"] = 99999999;
  with_state(j.dump());
  expect_error([&] { run_training(c, comm, {"auto", 0, true}); }, {"state.json", "does not match", "step 2"});
  j = nlohmann::json::parse(state);
  j["tokens_seen"] = -5;
  with_state(j.dump());
  expect_error([&] { run_training(c, comm, {"auto", 0, true}); }, {"state.json", "tokens_seen", "-5"});
  EXPECT_EQ(testing::read_file(run + "/metrics.jsonl"), before);  // failed resumes truncate nothing
  with_state(state);
  RunConfig wrong_data = parse_config(tiny_yaml("/nonexistent/data", run + "_other"), "c.yaml");
  expect_error([&] { run_training(wrong_data, comm, {"", 0, true}); }, {"/nonexistent/data", "no such data directory"});
}

TEST(Trainer, NonFiniteWeightsAreNeverLoadedOrSaved) {
  const std::string data = make_data("nan_data");
  const std::string run = testing::temp_dir("nan_run");
  auto comm_owner = dist::make_local_communicator();
  dist::Communicator& comm = *comm_owner;
  RunConfig c = parse_config(tiny_yaml(data, run), "n.yaml", {"train.steps=2"});
  TrainResult good = run_training(c, comm, {"", 0, true});
  // Poison one weight of the checkpoint: resuming from it is refused before any step.
  safetensors::File weights = safetensors::load(good.last_checkpoint + "/model.safetensors");
  Tensor poisoned = weights.get("model.norm.weight").clone();
  poisoned.data<float>()[0] = std::nanf("");
  safetensors::NamedTensors tensors = weights.tensors;
  for (auto& [name, t] : tensors)
    if (name == "model.norm.weight") t = poisoned;
  safetensors::save(good.last_checkpoint + "/model.safetensors", tensors);
  RunConfig longer = parse_config(tiny_yaml(data, run), "n.yaml", {"train.steps=4"});
  expect_error([&] { run_training(longer, comm, {"auto", 0, true}); },
               {good.last_checkpoint, "model.norm.weight", "non-finite"});
  EXPECT_FALSE(fs::exists(run + "/checkpoints/step_00000003"));
}

}  // namespace
}  // namespace kvroute::train
