// Evaluation and generation: cached generation equals uncached full forward passes under the same
// plan, KV memory is exactly |S|/L of a full cache, eval loss equals the model's loss, greedy sets.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/shard.h"
#include "eval/evaluate.h"
#include "eval/generate.h"
#include "kernels/ops.h"
#include "layers/kv_cache.h"
#include "train/trainer.h"
#include "tests/test_util.h"

namespace kvroute::eval {
namespace {

namespace fs = std::filesystem;

layers::ModelConfig config() {
  layers::ModelConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.num_layers = 6;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 48;
  c.max_seq_len = 128;
  c.init_std = 0.3;  // far from uniform logits, so greedy decoding has clear winners
  return c;
}

std::vector<int32_t> random_prompt(int64_t n, uint64_t seed) {
  Philox rng(seed);
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (auto& t : p) t = static_cast<int32_t>(rng.uniform_int(97));
  return p;
}

TEST(Generation, CachedEqualsUncachedFullForwardUnderEveryPlan) {
  layers::Transformer model(config(), 11);
  const std::vector<std::vector<int32_t>> prompts = {random_prompt(9, 1), random_prompt(9, 2)};
  for (const layers::RoutingPlan& plan :
       {layers::self_plan(6), layers::plan_from_keep_set(6, layers::keep_every(6, 2)),
        layers::plan_from_keep_set(6, layers::keep_retention(6, 0.25)), layers::RoutingPlan{0, 0, 0, 3, 3, 5}}) {
    SamplingOptions greedy;
    greedy.temperature = 0;
    greedy.max_new_tokens = 12;
    std::vector<std::vector<int32_t>> cached = generate(model, prompts, plan, greedy);
    for (size_t b = 0; b < prompts.size(); ++b) {
      EXPECT_EQ(cached[b], generate_uncached_greedy(model, prompts[b], plan, 12))
          << "plan " << layers::format_plan(plan) << " row " << b;
    }
  }
}

// Prompts of different lengths in one batch (right-padded prefill, then each row at its own
// position) give exactly the tokens of generating each prompt alone, under shared-cache plans.
TEST(Generation, PromptsOfDifferentLengthsInOneBatchEqualOneAtATime) {
  layers::Transformer model(config(), 13);
  const std::vector<std::vector<int32_t>> prompts = {random_prompt(3, 4), random_prompt(17, 5), random_prompt(9, 6),
                                                     random_prompt(1, 7), random_prompt(17, 8)};
  for (const layers::RoutingPlan& plan :
       {layers::self_plan(6), layers::plan_from_keep_set(6, layers::keep_retention(6, 0.5)),
        layers::RoutingPlan{0, 0, 0, 3, 3, 5}}) {
    SamplingOptions greedy;
    greedy.temperature = 0;
    greedy.max_new_tokens = 10;
    const std::vector<std::vector<int32_t>> batched = generate(model, prompts, plan, greedy);
    for (int64_t chunk : {1, 3, 7, 0}) {  // a prompt prefilled in chunks gives the same tokens
      SamplingOptions chunked = greedy;
      chunked.prefill_chunk = chunk;
      EXPECT_EQ(generate(model, prompts, plan, chunked), batched) << "prefill chunk " << chunk;
    }
    for (size_t b = 0; b < prompts.size(); ++b) {
      EXPECT_EQ(batched[b], generate(model, {prompts[b]}, plan, greedy)[0])
          << "plan " << layers::format_plan(plan) << " row " << b;
      EXPECT_EQ(batched[b], generate_uncached_greedy(model, prompts[b], plan, 10))
          << "plan " << layers::format_plan(plan) << " row " << b;
    }
  }
  // A stop token ends each row on its own.
  SamplingOptions stop;
  stop.temperature = 0;
  stop.max_new_tokens = 10;
  const auto free_run = generate(model, prompts, layers::self_plan(6), stop);
  stop.stop_token = free_run[1][2];
  const auto stopped = generate(model, prompts, layers::self_plan(6), stop);
  EXPECT_EQ(stopped[1].size(), 3u);
  EXPECT_EQ(stopped[1].back(), stop.stop_token);
}

TEST(Generation, ExcludedIdsAreNeverSampled) {
  layers::Transformer model(config(), 14);
  const std::vector<std::vector<int32_t>> prompts = {random_prompt(5, 9), random_prompt(8, 10)};
  SamplingOptions o;
  o.temperature = 0;
  o.max_new_tokens = 8;
  const auto free_run = generate(model, prompts, layers::self_plan(6), o);
  for (const auto& row : free_run) o.excluded_ids.insert(o.excluded_ids.end(), row.begin(), row.end());
  for (double temperature : {0.0, 1.0}) {
    o.temperature = temperature;
    for (const auto& row : generate(model, prompts, layers::self_plan(6), o)) {
      for (int32_t t : row) {
        EXPECT_EQ(std::count(o.excluded_ids.begin(), o.excluded_ids.end(), t), 0) << t;
      }
    }
  }
}

TEST(Generation, CachedLogitsMatchTheFullForward) {
  layers::Transformer model(config(), 12);
  const layers::RoutingPlan plan = layers::plan_from_keep_set(6, {0, 2, 5});
  std::vector<int32_t> seq = random_prompt(20, 3);
  Tensor full = model.logits(Tensor::from_vector(seq, {1, 20}), plan).data();
  layers::KVCache cache(model.config(), plan, 1, 20);
  Tensor first = layers::forward_cached(model, Tensor::from_vector(std::vector<int32_t>(seq.begin(), seq.begin() + 13), {1, 13}), cache);
  std::vector<float> expected = full.to_vector<float>(), got = first.to_vector<float>();
  for (int t = 13; t < 20; ++t) {  // then one token at a time
    Tensor step = layers::forward_cached(model, Tensor::from_vector(std::vector<int32_t>{seq[static_cast<size_t>(t)]}, {1, 1}), cache);
    std::vector<float> s = step.to_vector<float>();
    got.insert(got.end(), s.begin(), s.end());
  }
  ASSERT_EQ(got.size(), expected.size());
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, static_cast<double>(std::abs(got[i] - expected[i])));
  EXPECT_LT(worst, 1e-4);
}

TEST(Generation, KvBytesAreExactlyKeptOverLayersOfAFullCache) {
  const layers::ModelConfig c = config();
  layers::KVCache full(c, layers::self_plan(6), 3, 100);
  EXPECT_EQ(full.bytes(), 2 * 6 * 3 * 100 * c.num_kv_heads * c.head_dim * 4);
  EXPECT_EQ(full.bytes(), layers::KVCache::bytes_per_token(c, 6) * 300);
  for (int g : {1, 2, 3, 6}) {
    layers::KVCache cache(c, layers::plan_from_keep_set(6, layers::keep_every(6, g)), 3, 100);
    EXPECT_EQ(cache.kept_layers(), 6 / g);
    EXPECT_EQ(cache.bytes() * 6, full.bytes() * cache.kept_layers()) << "groups " << g;
  }
  testing::expect_error([&] { layers::KVCache bad(c, layers::self_plan(6), 1, 1000); }, {"kv cache", "max_seq_len"});
}

// --precision bf16 on the CPU: bf16 GEMMs and a bf16 cache of half the bytes. Generation runs end
// to end with prompts of different lengths in one batch. Tokens are compared only where they
// cannot depend on rounding order (the first greedy token, clear winners at init_std 0.3): oneDNN
// may block a batch of rows differently from one row, and AMX and AVX512-BF16 sum differently.
TEST(Generation, Bf16OnTheCpuHalvesTheCache) {
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  layers::Transformer model(config(), 13);
  EXPECT_EQ(layers::kv_cache_dtype(model), DType::F32);
  model.set_execution({.cpu_bf16_gemm = true});
  EXPECT_EQ(layers::kv_cache_dtype(model), DType::BF16);
  const layers::RoutingPlan plan = layers::plan_from_keep_set(6, layers::keep_retention(6, 0.5));
  layers::KVCache half(model.config(), plan, 2, 50, model.device(), layers::kv_cache_dtype(model));
  layers::KVCache full(model.config(), plan, 2, 50, model.device(), DType::F32);
  EXPECT_EQ(2 * half.bytes(), full.bytes());
  const std::vector<std::vector<int32_t>> prompts = {random_prompt(3, 4), random_prompt(17, 5), random_prompt(9, 6)};
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = 10;
  const std::vector<std::vector<int32_t>> batched = generate(model, prompts, plan, greedy);
  std::vector<std::vector<int32_t>> single;
  for (const auto& p : prompts) single.push_back(generate(model, {p}, plan, greedy)[0]);
  model.set_execution({});
  EXPECT_EQ(layers::kv_cache_dtype(model), DType::F32);
  const std::vector<std::vector<int32_t>> f32 = generate(model, prompts, plan, greedy);
  for (size_t b = 0; b < prompts.size(); ++b) {
    ASSERT_EQ(batched[b].size(), 10u);
    EXPECT_EQ(batched[b][0], single[b][0]) << "row " << b;
    EXPECT_EQ(batched[b][0], f32[b][0]) << "row " << b;
  }
}

TEST(Generation, SamplingIsSeededAndRespectsTopK) {
  std::vector<float> logits = {0.0f, 5.0f, 4.9f, -3.0f, 1.0f};
  SamplingOptions o;
  o.temperature = 1.0;
  o.top_k = 2;
  Philox a(5), b(5);
  for (int i = 0; i < 200; ++i) {
    int32_t t = sample_token(logits.data(), 5, o, a);
    EXPECT_TRUE(t == 1 || t == 2);
    EXPECT_EQ(t, sample_token(logits.data(), 5, o, b));
  }
  o.top_k = 0;
  o.top_p = 0.01;  // only the top token survives
  for (int i = 0; i < 50; ++i) EXPECT_EQ(sample_token(logits.data(), 5, o, a), 1);
  o.temperature = 0;
  EXPECT_EQ(sample_token(logits.data(), 5, o, a), 1);
}

// Each test its own directory: ctest runs tests in parallel.
std::string make_val_data(const std::string& name) {
  return testing::write_token_data(testing::temp_dir(name), random_prompt(5000, 4), random_prompt(700, 5));
}

TEST(Eval, PlanLossEqualsTheModelsForwardLoss) {
  layers::Transformer model(config(), 13);
  const std::string dir = make_val_data("eval_data_1");
  auto comm_owner = dist::make_local_communicator();
  dist::Communicator& comm = *comm_owner;
  PlanResult r = evaluate_keep_set(model, dir, 32, 4, 0, {0, 3}, "keep 0,3", "list", comm);
  EXPECT_EQ(r.plan, (layers::RoutingPlan{0, 0, 0, 3, 3, 3}));
  // The same windows by hand: 699 / 32 = 21 windows of 33 tokens.
  data::Shard val(dir + "/val_000000.bin");
  double sum = 0;
  int64_t tokens = 0;
  for (int64_t w = 0; w < 21; w += 4) {
    const int64_t rows = std::min<int64_t>(4, 21 - w);
    Tensor in = Tensor::empty({rows, 32}, DType::I32), tg = Tensor::empty({rows, 32}, DType::I32);
    for (int64_t i = 0; i < rows; ++i) {
      std::vector<int32_t> window(33);
      val.read((w + i) * 32, 33, window.data());
      std::copy(window.begin(), window.end() - 1, in.data<int32_t>() + i * 32);
      std::copy(window.begin() + 1, window.end(), tg.data<int32_t>() + i * 32);
    }
    autograd::NoGradGuard g;
    sum += model.loss(in, tg, r.plan).data().item() * static_cast<double>(rows * 32);
    tokens += rows * 32;
  }
  EXPECT_EQ(r.tokens, tokens);
  EXPECT_NEAR(r.loss, sum / static_cast<double>(tokens), 1e-9);
  EXPECT_NEAR(r.perplexity, std::exp(r.loss), 1e-9);
}

// The evaluation during training (metrics.jsonl) and `kvroute eval` on the final checkpoint plan
// each retention level the same way and so report the same routing plan and loss, for CLA@k
// (where only group leaders can hold a cache) and for R-CLA models.
TEST(Eval, InTrainingEvaluationAndEvalReportTheSamePlanAndLoss) {
  const std::string data = make_val_data("eval_plan_data");
  const std::vector<double> retention = {1.0, 0.75, 0.6, 0.5, 0.33};
  const std::vector<std::string> routers = {"{policy: fixed_groups, group_size: 2}", "{policy: fixed_groups, group_size: 3}",
                                            "{policy: stochastic, share_prob: 0.5, seed: 2}"};
  for (const std::string& router : routers) {
    const std::string run_dir = testing::temp_dir("eval_plan_run");
    const train::RunConfig config = train::parse_config(
        testing::tiny_model_yaml({.vocab = 97, .layers = 6, .intermediate = 48, .max_seq_len = 64}) + fmt::format(R"(router: {}
data: {{dir: {}}}
train: {{name: p, run_dir: {}, steps: 3, batch_size: 4, seq_len: 32, log_interval: 1, threads: 1}}
eval: {{retention: [1.0, 0.75, 0.6, 0.5, 0.33], batches: 0}}
dist: {{backend: none}}
)",
                    router, data, run_dir),
        "plan.yaml");
    auto comm = dist::make_local_communicator();
    const train::TrainResult result = train::run_training(config, *comm, {"", 0, true});
    nlohmann::json last_eval;
    std::ifstream metrics(run_dir + "/metrics.jsonl");
    for (std::string line; std::getline(metrics, line);) {
      nlohmann::json j = nlohmann::json::parse(line);
      if (j.contains("val_loss")) last_eval = j;
    }
    ASSERT_TRUE(last_eval.contains("routing_plan")) << router;
    Checkpoint ck = load_for_inference(result.last_checkpoint);
    for (double r : retention) {
      const std::string key = fmt::format("{:g}", r);
      PlanResult e = evaluate_keep_set(*ck.model, data, 32, 4, 0, layers::keep_retention(6, r), key, "even", *comm);
      EXPECT_EQ(layers::format_plan(e.plan), last_eval["routing_plan"][key].get<std::string>()) << router << " " << key;
      EXPECT_NEAR(e.loss, last_eval["val_loss"][key].get<double>(), 1e-9) << router << " " << key;
    }
  }
}

TEST(Eval, GreedySetsAreNestedAndKeepLayerZero) {
  layers::Transformer model(config(), 14);
  const std::string dir = make_val_data("eval_data_2");
  auto comm_owner = dist::make_local_communicator();
  dist::Communicator& comm = *comm_owner;
  std::vector<PlanResult> sets = greedy_keep_sets(model, dir, 32, 4, 2, {6, 4, 2, 1}, comm);
  ASSERT_EQ(sets.size(), 4u);
  for (size_t i = 0; i < sets.size(); ++i) {
    EXPECT_EQ(sets[i].kept.front(), 0);
    if (i > 0) {
      for (int l : sets[i].kept)
        EXPECT_NE(std::find(sets[i - 1].kept.begin(), sets[i - 1].kept.end(), l), sets[i - 1].kept.end());
    }
  }
  EXPECT_EQ(sets.back().kept, std::vector<int>{0});
  std::string csv = format_csv(sets, 6);
  EXPECT_NE(csv.find("greedy 4,greedy,4,6"), std::string::npos) << csv;
}

}  // namespace
}  // namespace kvroute::eval
