// The run config (errors name the file, key and value; overrides; the resolved config round-trips)
// and the learning-rate schedules.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "train/config.h"
#include "train/schedule.h"
#include "tests/test_util.h"

namespace kvroute::train {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

TEST(Config, ErrorsNameFileKeyAndValue) {
  const std::string f = "run.yaml";
  expect_error([&] { (void)parse_config("model: {hiden_size: 3}", f); },
               {"run.yaml", "unknown key 'model.hiden_size'", "did you mean 'model.hidden_size'"});
  expect_error([&] { (void)parse_config("modle: {}", f); }, {"run.yaml", "unknown section 'modle'", "'model'"});
  expect_error([&] { (void)parse_config("train: {steps: many}", f); }, {"run.yaml", "train.steps", "integer", "'many'"});
  expect_error([&] { (void)parse_config("train: {steps: 0}", f); }, {"train.steps", "0 is out of range"});
  expect_error([&] { (void)parse_config("router: {share_prob: 1.5}", f); }, {"router.share_prob", "1.5"});
  expect_error([&] { (void)parse_config("router: {policy: sometimes}", f); }, {"router.policy", "'sometimes'", "stochastic"});
  expect_error([&] { (void)parse_config("model: {tie_embeddings: perhaps}", f); }, {"model.tie_embeddings", "true or false"});
  expect_error([&] { (void)parse_config("eval: {retention: 0.5}", f); }, {"eval.retention", "list"});
  expect_error([&] { (void)parse_config("eval: {retention: [1, 0]}", f); }, {"eval.retention[1]", "out of range"});
  expect_error([&] { (void)parse_config("model: [1, 2", f); }, {"run.yaml", "invalid YAML", "line 1"});
  expect_error([&] { (void)parse_config("model: {num_heads: 8, num_kv_heads: 3}", f); },
               {"run.yaml", "model.num_heads", "model.num_kv_heads 3"});
  expect_error([&] { (void)parse_config("train: {seq_len: 4096}", f); }, {"train.seq_len 4096", "max_seq_len"});
  expect_error([&] { (void)parse_config("", f, {"train.steps"}); }, {"override 'train.steps'", "section.key=value"});
  expect_error([&] { (void)parse_config("", f, {"train.stepz=3"}); }, {"unknown key 'train.stepz'", "'train.steps'"});
  expect_error([&] { (void)load_config("/nonexistent/run.yaml"); }, {"/nonexistent/run.yaml", "cannot open"});
  // Keys with a fixed set of names are enums: an unknown name lists the choices (no silent default).
  expect_error([&] { (void)parse_config("optim: {schedule: linear}", f); },
               {"run.yaml", "optim.schedule", "'linear'", "cosine, constant, wsd"});
  expect_error([&] { (void)parse_config("train: {device: gpu}", f); }, {"train.device", "'gpu'", "cpu, cuda"});
  expect_error([&] { (void)parse_config("train: {precision: fp16}", f); }, {"train.precision", "'fp16'", "fp32, bf16"});
  expect_error([&] { (void)parse_config("train: {attention: fastest}", f); },
               {"train.attention", "'fastest'", "cuda_cores, tensor_cores"});
  expect_error([&] { (void)parse_config("dist: {backend: nccl}", f); }, {"dist.backend", "'nccl'", "auto, mpi, none"});
  expect_error([&] { (void)parse_config("router: {source: random}", f); }, {"router.source", "'random'", "uniform, previous"});
}

TEST(Config, DuplicatesAbsurdSizesAndUnsafeNamesAreErrors) {
  const std::string f = "run.yaml";
  // yaml-cpp keeps both entries of a duplicated key; the second must not silently win.
  expect_error([&] { (void)parse_config("train: {steps: 5}\ntrain: {steps: 6}", f); },
               {"run.yaml", "section 'train' appears twice"});
  expect_error([&] { (void)parse_config("train: {steps: 5, steps: 6}", f); }, {"run.yaml", "'train.steps' appears twice"});
  expect_error([&] { (void)parse_config("model: {hidden_size: 9223372036854775807}", f); },
               {"model.hidden_size", "out of range"});
  expect_error([&] { (void)parse_config("train: {steps: 100000000}", f); }, {"train.steps", "out of range"});
  expect_error([&] { (void)parse_config("optim: {lr: .nan}", f); }, {"optim.lr", "out of range"});
  // Each size in range, the product absurd: refused before anything allocates.
  expect_error([&] {
    (void)parse_config("model: {vocab_size: 16000000, hidden_size: 1000000, num_layers: 2, num_heads: 1, "
                       "num_kv_heads: 1, head_dim: 64, intermediate_size: 64}", f);
  }, {"run.yaml", "parameters"});
  for (const char* name : {"..", ".", "a/b", "/", ""}) {
    expect_error([&] { (void)parse_config(fmt::format("train: {{name: '{}'}}", name), f); }, {"train.name"});
  }
  // A FIFO or a directory as the config file: an error, not a hang.
  const std::string dir = testing::temp_dir("config_special");
  ASSERT_EQ(::mkfifo((dir + "/fifo.yaml").c_str(), 0600), 0);
  expect_error([&] { (void)load_config(dir + "/fifo.yaml"); }, {"fifo.yaml", "a FIFO"});
  expect_error([&] { (void)load_config(dir); }, {dir, "a directory"});
}

TEST(Config, OverridesApplyAndTheResolvedConfigRoundTrips) {
  RunConfig c = parse_config("train: {steps: 5}\nrouter: {policy: fixed_groups, group_size: 2}", "x.yaml",
                             {"train.steps=7", "eval.retention=[1, 0.25]", "optim.lr=0.01"});
  EXPECT_EQ(c.train.steps, 7);
  EXPECT_EQ(c.eval.retention, (std::vector<double>{1.0, 0.25}));
  EXPECT_DOUBLE_EQ(c.optim.lr, 0.01);
  EXPECT_EQ(c.router.config.policy, layers::RouterConfig::Policy::FixedGroups);
  EXPECT_EQ(c.train.attention, ops::AttentionKernel::CudaCores);
  EXPECT_EQ(parse_config("train: {attention: tensor_cores}", "a.yaml").train.attention, ops::AttentionKernel::TensorCores);
  EXPECT_NE(parse_config("optim: {schedule: wsd}", "s.yaml").to_yaml().find("schedule: wsd"), std::string::npos);
  EXPECT_NE(c.to_yaml().find("attention: cuda_cores"), std::string::npos);
  RunConfig again = parse_config(c.to_yaml(), "resolved.yaml");
  EXPECT_EQ(again.to_yaml(), c.to_yaml());
  EXPECT_EQ(again.model_fingerprint(), c.model_fingerprint());
  EXPECT_NE(parse_config("model: {hidden_size: 128}", "y").model_fingerprint(), c.model_fingerprint());
  // Checkpoints written before a model key existed keep their fingerprint (the pretrain-cpu model's,
  // as its checkpoints of 2026-12-05 carry it); setting the new key changes it.
  const RunConfig pretrain = load_config(fmt::format("{}/configs/pretrain-cpu.yaml", KVROUTE_SOURCE_DIR));
  EXPECT_EQ(pretrain.model_fingerprint(),
            "{vocab_size: 8192, hidden_size: 128, num_layers: 8, num_heads: 4, num_kv_heads: 2, head_dim: 32, "
            "intermediate_size: 384, rope_theta: 10000, rms_norm_eps: 9.9999999999999995e-07, max_seq_len: 256, "
            "tie_embeddings: true, qk_norm: true, init_std: 0.02, kv_weight_layers: 11111111}");
  EXPECT_NE(load_config(fmt::format("{}/configs/pretrain-cpu.yaml", KVROUTE_SOURCE_DIR), {"model.scaled_residual_init=true"})
                .model_fingerprint(),
            pretrain.model_fingerprint());
  // One YAML document: a leading '---' and a closing '...' are fine; a second document is refused.
  EXPECT_EQ(parse_config("--- # the run\ntrain: {steps: 5}\n...\n# done\n", "d.yaml").train.steps, 5);
  expect_error([] { (void)parse_config("train: {steps: 5}\n---\ntrain: {steps: 6}\n", "d.yaml"); },
               {"d.yaml", "second YAML document at line 2"});
  expect_error([] { (void)parse_config("train: {steps: 5}\n...\ntrain: {steps: 6}\n", "d.yaml"); },
               {"d.yaml", "second YAML document at line 3"});
  expect_error([] { (void)parse_config("train: {steps: 5}\n--- \n", "d.yaml"); }, {"second YAML document"});
  for (const char* name : {"tiny", "quickstart", "small", "gpt2-124m-like", "qwen3-0.6b-like", "qwen3-1.7b-like"}) {
    EXPECT_NO_THROW((void)load_config(fmt::format("{}/configs/{}.yaml", KVROUTE_SOURCE_DIR, name))) << name;
  }
}

TEST(Schedule, WarmupCosineConstantWsd) {
  Schedule cos{ScheduleKind::Cosine, 1.0, 0.1, 100, 10, 0.2};
  EXPECT_DOUBLE_EQ(cos.at(1), 0.1);
  EXPECT_DOUBLE_EQ(cos.at(10), 1.0);
  EXPECT_NEAR(cos.at(55), 0.55, 1e-12);  // halfway through the cosine: (lr + min_lr) / 2
  EXPECT_NEAR(cos.at(100), 0.1, 1e-12);
  Schedule constant{ScheduleKind::Constant, 1.0, 0.1, 100, 0, 0.2};
  EXPECT_DOUBLE_EQ(constant.at(1), 1.0);
  EXPECT_DOUBLE_EQ(constant.at(100), 1.0);
  Schedule wsd{ScheduleKind::Wsd, 1.0, 0.0, 100, 10, 0.2};
  EXPECT_DOUBLE_EQ(wsd.at(5), 0.5);
  EXPECT_DOUBLE_EQ(wsd.at(80), 1.0);
  EXPECT_DOUBLE_EQ(wsd.at(90), 0.5);
  EXPECT_DOUBLE_EQ(wsd.at(100), 0.0);
}

}  // namespace
}  // namespace kvroute::train
