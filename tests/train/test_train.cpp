// Trainer tests: config errors, schedules, exact resume, MPI data parallelism (2 ranks under
// mpirun, also as root), signal-triggered checkpoints, failure handling.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "data/shard.h"
#include "train/checkpoint.h"
#include "distributed/communicator.h"
#include "train/config.h"
#include "distributed/grad_reducer.h"
#include "train/schedule.h"
#include "train/trainer.h"
#include "tests/test_util.h"

namespace kvroute::train {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

// Random tokens over a 256-token vocabulary with some structure (repeated phrases) to learn.
std::string make_data(const std::string& name) {
  const std::string dir = testing::temp_dir(name);
  Philox rng(42);
  std::vector<int32_t> train, val;
  for (int i = 0; i < 60000; ++i) train.push_back(static_cast<int32_t>(i % 7 == 0 ? rng.uniform_int(256) : (i * 13) % 256));
  for (int i = 0; i < 3000; ++i) val.push_back(static_cast<int32_t>((i * 13) % 256));
  data::write_shard(dir + "/train_000000.bin", train, 2);
  data::write_shard(dir + "/val_000000.bin", val, 2);
  return dir;
}

std::string tiny_yaml(const std::string& data_dir, const std::string& run_dir) {
  return fmt::format(R"(
model: {{vocab_size: 256, hidden_size: 32, num_layers: 4, num_heads: 4, num_kv_heads: 2, head_dim: 8,
        intermediate_size: 64, max_seq_len: 32, init_std: 0.05}}
router: {{policy: stochastic, share_prob: 0.5, seed: 3}}
data: {{dir: {}}}
optim: {{lr: 3.0e-3, min_lr: 3.0e-4, warmup_fraction: 0.1}}
train: {{name: t, run_dir: {}, steps: 20, batch_size: 4, seq_len: 16, log_interval: 1, threads: 1,
        keep_checkpoints: 5}}
eval: {{retention: [1.0, 0.5], batches: 3}}
dist: {{backend: none}}
)",
                     data_dir, run_dir);
}

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

// Records the slices the reducer starts and doubles each (a stand-in for the sum over 2 ranks).
class RecordingCommunicator final : public dist::Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  void allreduce_sum(Tensor& buffer, int64_t) override { ops::scale_(buffer, 2.0f); }
  void allreduce_sum(std::vector<double>&) override {}
  void broadcast(Tensor&, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
  std::string name() const override { return "recording"; }
  void start_allreduce(Tensor& slice) override {
    started.push_back(slice);
    ops::scale_(slice, 2.0f);
  }
  void finish_allreduce() override { ++finished; }
  std::vector<Tensor> started;
  int finished = 0;
};

TEST(GradientReducer, BucketsTileTheGradientsInOrderAndStartDuringBackward) {
  layers::ModelConfig mc;
  mc.vocab_size = 64;
  mc.hidden_size = 32;
  mc.num_layers = 4;
  mc.num_heads = 4;
  mc.num_kv_heads = 2;
  mc.head_dim = 8;
  mc.intermediate_size = 48;
  mc.max_seq_len = 16;
  layers::Transformer model(mc, 5), reference(mc, 5);
  Tensor inputs = testing::random_tensor({2, 8}, 1, 0, 63).to(DType::I32);
  Tensor targets = testing::random_tensor({2, 8}, 2, 0, 63).to(DType::I32);
  // Layers 1 and 3 read layer 0's K/V: layers 1..3 compute none, so their K/V weights get no
  // gradient and their bucket waits for finish().
  const layers::RoutingPlan plan = {0, 0, 2, 0};
  reference.loss(inputs, targets, plan).backward();
  RecordingCommunicator comm;
  dist::GradientReducer reducer(model, comm, /*bucket_elements=*/4000);
  ASSERT_GT(reducer.buckets(), 3);
  reducer.arm();
  model.loss(inputs, targets, plan).backward();
  const size_t early = comm.started.size();
  EXPECT_GT(early, 0u) << "some buckets start while the backward pass runs";
  EXPECT_LT(early, static_cast<size_t>(reducer.buckets())) << "the bucket of the unused K/V weights waits";
  reducer.finish();
  EXPECT_EQ(comm.finished, 1);
  ASSERT_EQ(static_cast<int64_t>(comm.started.size()), reducer.buckets());
  // Slices run from the end of the buffer to its start, adjacent, each exactly once.
  const float* base = model.flat_gradients().data<float>();
  int64_t expected_end = model.flat_gradients().numel();
  for (const Tensor& slice : comm.started) {
    const int64_t begin = slice.data<float>() - base;
    EXPECT_EQ(begin + slice.numel(), expected_end);
    expected_end = begin;
  }
  EXPECT_EQ(expected_end, 0);
  std::vector<float> got = model.flat_gradients().to_vector<float>(), want = reference.flat_gradients().to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], 2.0f * want[i]) << i;
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

std::string write_config(const std::string& dir, const std::string& yaml) {
  const std::string path = dir + "/run.yaml";
  std::ofstream(path) << yaml;
  return path;
}

std::vector<double> logged_losses(const std::string& run_dir) {
  std::vector<double> losses;
  std::ifstream in(run_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("loss")) losses.push_back(j["loss"]);
  }
  return losses;
}

int run(const std::string& cmd) {
  int rc = std::system((cmd + " > /dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// Open MPI keeps allocations in plugins it unloads at MPI_Finalize; LeakSanitizer (the sanitizer
// build) reports them from unknown modules, where no suppression can name them. Leak checking
// stays on everywhere else.
const std::string kMpirun =
    "env ASAN_OPTIONS=detect_leaks=0 " + std::string(KVROUTE_MPIEXEC) + " --allow-run-as-root --oversubscribe -np 2 ";
// Appended to every command line run under mpirun (the test configs default to dist.backend none).
const std::string kMpiBackend = " dist.backend=auto";

TEST(Mpi, TwoRanksMatchOneRankWithTheDoubledBatch) {
  const std::string data = make_data("mpi_data");
  const std::string dir = testing::temp_dir("mpi_cfg");
  const std::string yaml = tiny_yaml(data, dir + "/run") + "";
  const std::string cfg = write_config(dir, yaml);
  const std::string bin = KVROUTE_BINARY;
  // Routing off: one rank with batch 4 sees exactly the two ranks' batches of 2.
  ASSERT_EQ(run(bin + " train " + cfg + " router.policy=none train.batch_size=4 train.run_dir=" + dir + "/one dist.backend=auto"), 0);
  ASSERT_EQ(run(kMpirun + bin + " train " + cfg + " router.policy=none train.batch_size=2 train.run_dir=" + dir + "/two" + kMpiBackend), 0);
  std::vector<double> one = logged_losses(dir + "/one"), two = logged_losses(dir + "/two");
  ASSERT_EQ(one.size(), 20u);
  ASSERT_EQ(two.size(), 20u);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(one[i], two[i], 2e-4 * std::abs(one[i])) << "step " << i + 1;
}

TEST(Mpi, ResumeAtAnotherWorldSizeWithTheSameGlobalBatch) {
  const std::string data = make_data("mpi_resume_data");
  const std::string dir = testing::temp_dir("mpi_resume");
  const std::string cfg = write_config(dir, tiny_yaml(data, dir + "/run"));
  const std::string bin = KVROUTE_BINARY;
  // Global batch 4 sequences as 2 ranks x 2 or 1 rank x 2 micro-batches x 2: the same slices, the
  // same routing plans (stochastic routing stays on).
  const std::string common = " train.batch_size=2 train.global_batch_tokens=64 ";
  ASSERT_EQ(run(bin + " train " + cfg + common + "train.run_dir=" + dir + "/straight"), 0);
  ASSERT_EQ(run(kMpirun + bin + " train " + cfg + common + "train.steps=20 train.run_dir=" + dir + "/mixed" +
                " train.checkpoint_interval=10" + kMpiBackend), 0);
  // Drop the final checkpoint, resume the 2-rank run at step 10 with one rank.
  auto saved = nlohmann::json::parse(std::ifstream(dir + "/mixed/checkpoints/step_00000010/state.json"));
  EXPECT_EQ(saved["world_size"], 2);
  fs::remove_all(dir + "/mixed/checkpoints/step_00000020");
  ASSERT_EQ(run(bin + " train " + cfg + common + "train.run_dir=" + dir + "/mixed --resume auto"), 0);
  std::vector<double> straight = logged_losses(dir + "/straight"), mixed = logged_losses(dir + "/mixed");
  ASSERT_EQ(straight.size(), 20u);
  ASSERT_EQ(mixed.size(), 20u);
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_NEAR(straight[i], mixed[i], 2e-4 * std::abs(straight[i])) << i + 1;
}

TEST(Mpi, AFailingRankBringsAllRanksDown) {
  const std::string dir = testing::temp_dir("mpi_fail");
  // Rank-local failure: a data directory that does not exist.
  const std::string cfg = write_config(dir, tiny_yaml("/nonexistent/data", dir + "/run"));
  EXPECT_NE(run("timeout 60 " + kMpirun + std::string(KVROUTE_BINARY) + " train " + cfg + kMpiBackend), 0);
}

// A config or flag error under mpirun is the same on every rank: one error line, not one per rank.
TEST(Mpi, AConfigErrorIsPrintedOnce) {
  const std::string dir = testing::temp_dir("mpi_config_error");
  const std::string cfg = write_config(dir, tiny_yaml(dir + "/data", dir + "/run"));
  for (const std::string& bad : {cfg + " model.bogus=1", cfg + " --threads abc"}) {
    const std::string err = dir + "/stderr.txt";
    std::system(("timeout 60 " + kMpirun + std::string(KVROUTE_BINARY) + " train " + bad + kMpiBackend + " 2> " + err +
                 " > /dev/null").c_str());
    std::ifstream in(err);
    int lines = 0;
    for (std::string line; std::getline(in, line);) lines += line.rfind("kvroute: error:", 0) == 0;
    EXPECT_EQ(lines, 1) << bad;
  }
}

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
  EXPECT_EQ(run("bash -c '" + script + "'"), 130);
  std::string ckpt = latest_checkpoint(dir + "/run/checkpoints");
  ASSERT_FALSE(ckpt.empty());
  auto state = nlohmann::json::parse(std::ifstream(ckpt + "/state.json"));
  const int64_t stopped_at = state["step"];
  EXPECT_GT(stopped_at, 0);
  EXPECT_LT(stopped_at, 100000);
  EXPECT_EQ(run(bin + " train " + cfg + " train.steps=" + std::to_string(stopped_at + 3) + " --resume auto"), 0);
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
  EXPECT_EQ(run("bash -c '" + script + "'"), 130);  // 124 would mean the timeout ended it
  EXPECT_FALSE(latest_checkpoint(dir + "/run/checkpoints").empty());
}

}  // namespace
}  // namespace kvroute::train
