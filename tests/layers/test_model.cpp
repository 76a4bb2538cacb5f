// Properties of the model and its routing: HF names and order, initialisation, flat buffers, CLA@k
// without K/V weights, skipping unused K/V projections, gradient flow through borrowed K/V.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/allocator.h"
#include "kernels/ops.h"
#include "layers/transformer.h"
#include "tests/test_util.h"

namespace kvroute::layers {
namespace {

using testing::expect_error;

ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 48;
  c.max_seq_len = 64;
  c.init_std = 0.1;
  return c;
}

Tensor random_tokens(const Shape& shape, int64_t vocab, uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::I32);
  Philox rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<int32_t>()[i] = static_cast<int32_t>(rng.uniform_int(vocab));
  return t;
}

TEST(Model, ParameterNamesFollowHuggingFaceQwen3) {
  ModelConfig c = tiny_config();
  c.tie_embeddings = false;
  Transformer model(c);
  NamedParameters params = model.parameters();
  std::vector<std::string> names;
  for (const auto& [n, p] : params) names.push_back(n);
  const std::vector<std::string> first = {
      "model.embed_tokens.weight",
      "model.layers.0.self_attn.q_proj.weight",
      "model.layers.0.self_attn.k_proj.weight",
      "model.layers.0.self_attn.v_proj.weight",
      "model.layers.0.self_attn.o_proj.weight",
      "model.layers.0.self_attn.q_norm.weight",
      "model.layers.0.self_attn.k_norm.weight",
      "model.layers.0.mlp.gate_proj.weight",
      "model.layers.0.mlp.up_proj.weight",
      "model.layers.0.mlp.down_proj.weight",
      "model.layers.0.input_layernorm.weight",
      "model.layers.0.post_attention_layernorm.weight",
      "model.layers.1.self_attn.q_proj.weight"};
  ASSERT_GE(names.size(), first.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(names[i], first[i]);
  EXPECT_EQ(names[names.size() - 2], "model.norm.weight");
  EXPECT_EQ(names.back(), "lm_head.weight");
  EXPECT_EQ(names.size(), 1 + 4 * 11 + 2u);
  // Count: embed + per layer (q, k, v, o, 2 head norms, 3 MLP, 2 norms) + norm + head.
  const int64_t per_layer = 32 * 32 + 2 * 16 * 32 + 32 * 32 + 2 * 8 + 3 * 32 * 48 + 2 * 32;
  EXPECT_EQ(model.parameter_count(), 2 * 50 * 32 + 4 * per_layer + 32);
  c.tie_embeddings = true;
  EXPECT_EQ(Transformer(c).parameter_count(), 50 * 32 + 4 * per_layer + 32);
  // The config's own count, known before allocation, is the model's: tied or not, with or without
  // QK-norm, with CLA non-leaders that own no K/V weights.
  for (bool tied : {true, false})
    for (bool qk : {true, false})
      for (bool cla : {false, true}) {
        ModelConfig m = tiny_config();
        m.tie_embeddings = tied;
        m.qk_norm = qk;
        m.architecture = qk ? Architecture::Qwen3 : Architecture::Llama;
        if (cla) m.kv_weight_layers = {true, false, true, false};
        EXPECT_EQ(m.parameter_count(), Transformer(m).parameter_count()) << tied << qk << cla;
        // The shapes export checks a checkpoint against: the model's, name by name, in its order.
        std::vector<std::pair<std::string, Shape>> built;
        for (const auto& [name, t] : Transformer(m).master_parameters()) built.emplace_back(name, t.shape());
        EXPECT_EQ(m.parameter_shapes(), built) << tied << qk << cla;
      }
  // A model larger than the machine is refused before any allocation, naming the size keys.
  ModelConfig huge = tiny_config();
  huge.hidden_size = 4'000'000;
  huge.num_heads = 1;
  huge.head_dim = 4'000'000;
  huge.num_kv_heads = 1;
  expect_error([&] { Transformer t(huge); }, {"hidden_size 4000000", "GB of memory this process may use"});
}

TEST(Model, InitialisationAndFlatBuffers) {
  ModelConfig c = tiny_config();
  c.init_std = 0.02;
  Transformer model(c, 3);
  int64_t offset = 0;
  for (const auto& [name, p] : model.parameters()) {
    EXPECT_TRUE(p.data().shares_storage(model.flat_parameters())) << name;
    EXPECT_TRUE(p.grad().shares_storage(model.flat_gradients())) << name;
    EXPECT_EQ(p.data().offset(), offset) << name;
    offset += p.data().numel();
    std::vector<float> v = p.data().to_vector<float>();
    if (p.data().dim() == 1) {
      for (float x : v) EXPECT_EQ(x, 1.0f) << name;
    } else {
      double ss = 0;
      for (float x : v) ss += static_cast<double>(x) * x;
      EXPECT_NEAR(std::sqrt(ss / static_cast<double>(v.size())), 0.02, 0.004) << name;
    }
  }
  EXPECT_EQ(offset, model.flat_parameters().numel());
  std::vector<ops::DecaySegment> segments = model.decay_segments();
  EXPECT_TRUE(segments.front().decay);  // embedding
  int64_t decayed = 0;
  for (const auto& s : segments) decayed += s.decay ? s.numel : 0;
  EXPECT_EQ(decayed, model.flat_parameters().numel() - (4 * (2 * 8 + 2 * 32) + 32));
  // Same seed, same weights; another seed, other weights.
  EXPECT_EQ(Transformer(c, 3).flat_parameters().to_vector<float>(), model.flat_parameters().to_vector<float>());
  EXPECT_NE(Transformer(c, 4).flat_parameters().to_vector<float>(), model.flat_parameters().to_vector<float>());
}

TEST(Model, ScaledResidualInitShrinksOnlyTheResidualOutputs) {
  ModelConfig c = tiny_config();
  c.init_std = 0.02;
  c.scaled_residual_init = true;
  const double scaled = 0.02 / std::sqrt(2.0 * 4);  // 4 layers
  const Transformer model(c, 3), plain([&] {
    ModelConfig p = c;
    p.scaled_residual_init = false;
    return p;
  }(), 3);
  const NamedParameters a = model.parameters(), b = plain.parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string& name = a[i].first;
    const std::vector<float> v = a[i].second.data().to_vector<float>(), w = b[i].second.data().to_vector<float>();
    if (a[i].second.data().dim() == 1) continue;
    double ss = 0;
    for (float x : v) ss += static_cast<double>(x) * x;
    const bool residual_out = name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight");
    EXPECT_NEAR(std::sqrt(ss / static_cast<double>(v.size())), residual_out ? scaled : 0.02,
                residual_out ? 0.0015 : 0.004) << name;
    // The same draws, scaled: the other parameters are unchanged.
    for (size_t k = 0; k < v.size(); k += 97)
      EXPECT_FLOAT_EQ(v[k], residual_out ? static_cast<float>(w[k] / 0.02 * scaled) : w[k]) << name;
  }
}

TEST(Model, ClaNonLeadersOwnNoKvWeights) {
  RouterConfig rc;
  rc.policy = RouterConfig::Policy::FixedGroups;
  rc.group_size = 2;
  KVRouter router(rc, 4);
  ModelConfig c = tiny_config();
  c.kv_weight_layers = router.layers_with_kv_weights();
  Transformer model(c);
  int kv_weights = 0;
  for (const auto& [name, p] : model.parameters()) {
    const bool is_kv = name.find("k_proj") != std::string::npos || name.find("v_proj") != std::string::npos ||
                       name.find("k_norm") != std::string::npos;
    if (!is_kv) continue;
    ++kv_weights;
    EXPECT_TRUE(name.rfind("model.layers.0.", 0) == 0 || name.rfind("model.layers.2.", 0) == 0) << name;
  }
  EXPECT_EQ(kv_weights, 6);
  EXPECT_EQ(Transformer(tiny_config()).parameter_count() - model.parameter_count(), 2 * (2 * 16 * 32 + 8));
  Tensor tokens = random_tokens({2, 8}, 50, 1);
  Variable loss = model.loss(tokens, tokens, router.training_plan(0, 0, 0));
  EXPECT_TRUE(std::isfinite(loss.data().item()));
  loss.backward();
  expect_error([&] { (void)model.loss(tokens, tokens, RoutingPlan{0, 1, 2, 3}); },
               {"0,1,2,3", "layer 1", "no K/V weights"});
}

TEST(Model, SkippingUnusedKvGivesTheSameLossAndGradients) {
  Transformer model(tiny_config(), 5);
  Tensor inputs = random_tokens({2, 12}, 50, 2), targets = random_tokens({2, 12}, 50, 3);
  for (const RoutingPlan& plan : {RoutingPlan{0, 0, 0, 0}, RoutingPlan{0, 0, 2, 1}, RoutingPlan{0, 1, 1, 3}}) {
    model.zero_grad();
    model.set_compute_unused_kv(false);
    Variable skipped = model.loss(inputs, targets, plan);
    skipped.backward();
    std::vector<float> grads_skipped = model.flat_gradients().to_vector<float>();
    model.zero_grad();
    model.set_compute_unused_kv(true);
    Variable computed = model.loss(inputs, targets, plan);
    computed.backward();
    EXPECT_EQ(skipped.data().item(), computed.data().item()) << format_plan(plan);
    EXPECT_EQ(grads_skipped, model.flat_gradients().to_vector<float>()) << format_plan(plan);
  }
}

// Activation recomputation (train.recompute: layer): the same loss and gradients, bit for bit, in
// f32 and (where the CPU has it) bf16, under plans where layers read their own, an earlier and a
// skipped layer's K/V; and less memory held between the forward and the backward pass.
TEST(Model, RecomputingLayersGivesBitIdenticalLossAndGradients) {
  std::vector<ops::Execution> executions = {ops::Execution{}};
  if (ops::cpu_bf16_supported()) executions.push_back(ops::Execution{.cpu_bf16_gemm = true});
  Tensor inputs = random_tokens({3, 24}, 50, 12), targets = random_tokens({3, 24}, 50, 13);
  for (const ops::Execution& ex : executions) {
    Transformer model(tiny_config(), 9);
    model.set_execution(ex);
    for (const RoutingPlan& plan : {RoutingPlan{0, 1, 2, 3}, RoutingPlan{0, 0, 2, 1}, RoutingPlan{0, 0, 0, 0}}) {
      const std::string what = format_plan(plan) + (ex.cpu_bf16_gemm ? " bf16" : " f32");
      std::vector<float> grads[2];
      double losses[2];
      size_t held[2];
      for (int recompute = 0; recompute < 2; ++recompute) {
        model.zero_grad();
        model.set_recompute(recompute == 1);
        const size_t before = cpu_allocator().stats().current_bytes;
        Variable loss = model.loss(inputs, targets, plan);
        held[recompute] = cpu_allocator().stats().current_bytes - before;  // what the tape keeps
        loss.backward();
        losses[recompute] = loss.data().item();
        grads[recompute] = model.flat_gradients().to_vector<float>();
      }
      EXPECT_EQ(losses[0], losses[1]) << what;
      EXPECT_EQ(grads[0], grads[1]) << what;
      EXPECT_LT(held[1], held[0] * 3 / 4) << what << ": recomputation should keep less for the backward";
      // Every parameter received a gradient (nothing was cut off by the recomputed region).
      for (const auto& [name, p] : model.parameters()) {
        if (name.find("k_proj") != std::string::npos || name.find("v_proj") != std::string::npos ||
            name.find("k_norm") != std::string::npos) {
          continue;  // layers no plan reads have none
        }
        EXPECT_GT(ops::squared_norm(p.grad()).item(), 0.0) << what << " " << name;
      }
    }
  }
}

// Recomputation with packed rows (positions and attention bounds captured by the recomputed
// region): the same loss and gradients, bit for bit.
TEST(Model, RecomputingPackedRowsGivesBitIdenticalGradients) {
  Transformer model(tiny_config(), 10);
  const int64_t T = 24;
  Tensor positions = Tensor::empty({2, T}, DType::I32), key_begin = Tensor::empty({2, T}, DType::I32);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t start = t < 10 ? 0 : (t < 17 ? 10 : 17);  // three sequences per row
      positions.data<int32_t>()[b * T + t] = static_cast<int32_t>(t - start);
      key_begin.data<int32_t>()[b * T + t] = static_cast<int32_t>(start);
    }
  }
  Tensor inputs = random_tokens({2, T}, 50, 21), targets = random_tokens({2, T}, 50, 22);
  std::vector<float> grads[2];
  double losses[2];
  for (int recompute = 0; recompute < 2; ++recompute) {
    model.zero_grad();
    model.set_recompute(recompute == 1);
    Variable loss = model.loss(inputs, targets, RoutingPlan{0, 0, 2, 2}, -100, Positions(positions, key_begin));
    loss.backward();
    losses[recompute] = loss.data().item();
    grads[recompute] = model.flat_gradients().to_vector<float>();
  }
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_EQ(grads[0], grads[1]);
}

// Packed rows (data.pack): three sequences in one row, each attending only to itself with its own
// positions from 0, give the loss and gradients of the same sequences one per row (padded, their
// padding ignored), under a routing plan that borrows K/V. Mean losses over the same scored tokens;
// equal up to f32 summation order.
TEST(Model, PackedRowGivesTheLossAndGradientsOfOneSequencePerRow) {
  Transformer model(tiny_config(), 8);
  const std::vector<int64_t> lengths = {5, 9, 2};
  const int64_t T = 20, rows = static_cast<int64_t>(lengths.size());  // 16 used, 4 padding
  Tensor seq_in = random_tokens({rows, T}, 50, 11), seq_tg = random_tokens({rows, T}, 50, 12);
  Tensor packed_in = Tensor::full({1, T}, 0, DType::I32), packed_tg = Tensor::full({1, T}, -100, DType::I32);
  Tensor positions = Tensor::empty({1, T}, DType::I32), key_begin = Tensor::empty({1, T}, DType::I32);
  int64_t at = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t len = lengths[static_cast<size_t>(r)];
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = r * T + t;
      if (t >= len) {  // padding of the one-per-row batch: ignored
        seq_tg.data<int32_t>()[i] = -100;
        continue;
      }
      if (t == 1) seq_tg.data<int32_t>()[i] = -100;  // an ignored (prompt) target inside a sequence
      packed_in.data<int32_t>()[at + t] = seq_in.data<int32_t>()[i];
      packed_tg.data<int32_t>()[at + t] = seq_tg.data<int32_t>()[i];
      positions.data<int32_t>()[at + t] = static_cast<int32_t>(t);
      key_begin.data<int32_t>()[at + t] = static_cast<int32_t>(at);
    }
    at += len;
  }
  for (int64_t t = at; t < T; ++t) {  // the packed row's padding: a sequence of its own
    positions.data<int32_t>()[t] = static_cast<int32_t>(t - at);
    key_begin.data<int32_t>()[t] = static_cast<int32_t>(at);
  }
  const RoutingPlan plan{0, 0, 1, 1};
  model.zero_grad();
  Variable one_per_row = model.loss(seq_in, seq_tg, plan);
  one_per_row.backward();
  const std::vector<float> grads = model.flat_gradients().to_vector<float>();
  model.zero_grad();
  Variable packed = model.loss(packed_in, packed_tg, plan, -100, Positions(positions, key_begin));
  packed.backward();
  EXPECT_NEAR(packed.data().item(), one_per_row.data().item(), 1e-5 * std::abs(one_per_row.data().item()));
  const std::vector<float> packed_grads = model.flat_gradients().to_vector<float>();
  double scale = 0, err = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    scale = std::max(scale, std::abs(static_cast<double>(grads[i])));
    err = std::max(err, std::abs(static_cast<double>(packed_grads[i]) - grads[i]));
  }
  EXPECT_GT(scale, 0.0);
  EXPECT_LT(err, 1e-5 * scale);
  // Without the bounds the row is one long sequence: a different loss (the check above has teeth).
  Variable unbounded = model.loss(packed_in, packed_tg, plan);
  EXPECT_GT(std::abs(unbounded.data().item() - one_per_row.data().item()), 1e-4);
}

TEST(Model, ShareProbZeroMatchesNoRoutingBitForBit) {
  Transformer model(tiny_config(), 6);
  Tensor inputs = random_tokens({2, 10}, 50, 4), targets = random_tokens({2, 10}, 50, 5);
  RouterConfig none, zero;
  zero.policy = RouterConfig::Policy::Stochastic;
  zero.share_prob = 0.0;
  for (uint64_t step = 0; step < 3; ++step) {
    model.zero_grad();
    Variable a = model.loss(inputs, targets, KVRouter(none, 4).training_plan(step, 0, 0));
    a.backward();
    std::vector<float> ga = model.flat_gradients().to_vector<float>();
    model.zero_grad();
    Variable b = model.loss(inputs, targets, KVRouter(zero, 4).training_plan(step, 0, 0));
    b.backward();
    EXPECT_EQ(a.data().item(), b.data().item());
    EXPECT_EQ(ga, model.flat_gradients().to_vector<float>());
  }
}

TEST(Model, BorrowedKvSendsGradientsToTheSourceLayer) {
  Transformer model(tiny_config(), 7);
  Tensor tokens = random_tokens({1, 9}, 50, 6);
  model.loss(tokens, tokens, RoutingPlan{0, 0, 0, 0}).backward();
  for (const auto& [name, p] : model.parameters()) {
    if (name.find("k_proj") == std::string::npos) continue;
    const double norm = ops::squared_norm(p.grad()).item();
    if (name.rfind("model.layers.0.", 0) == 0) EXPECT_GT(norm, 0.0) << name;
    else EXPECT_EQ(norm, 0.0) << name;  // nobody reads layers 1-3's K/V
  }
}

TEST(Model, MicroBatchGradientsAccumulate) {
  Transformer model(tiny_config(), 8);
  Tensor a = random_tokens({1, 8}, 50, 7), b = random_tokens({1, 8}, 50, 8);
  model.loss(a, a, self_plan(4)).backward();
  std::vector<float> ga = model.flat_gradients().to_vector<float>();
  model.zero_grad();
  model.loss(b, b, self_plan(4)).backward();
  std::vector<float> gb = model.flat_gradients().to_vector<float>();
  model.zero_grad();
  model.loss(a, a, self_plan(4)).backward();
  model.loss(b, b, self_plan(4)).backward();
  std::vector<float> both = model.flat_gradients().to_vector<float>();
  for (size_t i = 0; i < both.size(); ++i) EXPECT_NEAR(both[i], ga[i] + gb[i], 1e-6f + 1e-5f * std::abs(both[i]));
}

// Streaming load: the same weights as the in-memory overload, and every name checked before a
// tensor is read (a bad import reads nothing).
TEST(Model, StreamingLoadChecksNamesBeforeReadingAnyTensor) {
  ModelConfig cfg = tiny_config();
  Transformer source(cfg, 5), target(cfg, 6);
  std::map<std::string, Tensor> weights;
  for (const auto& [name, t] : source.master_parameters()) weights[name] = t.clone();
  std::vector<std::string> names;
  for (const auto& [name, t] : weights) names.push_back(name);
  int reads = 0;
  auto read = [&](const std::string& name) {
    ++reads;
    return weights.at(name);
  };
  target.load_parameters(names, read, "src");
  EXPECT_EQ(reads, static_cast<int>(names.size()));
  for (const auto& [name, t] : target.master_parameters()) {
    EXPECT_EQ(t.to_vector<float>(), weights.at(name).to_vector<float>()) << name;
  }
  reads = 0;
  std::vector<std::string> extra = names;
  extra.push_back("model.layers.99.mlp.up_proj.weight");
  expect_error([&] { target.load_parameters(extra, read, "src"); }, {"src", "unknown parameter", "layers.99"});
  std::vector<std::string> missing(names.begin() + 1, names.end());
  expect_error([&] { target.load_parameters(missing, read, "src"); }, {"src", "missing parameter", names[0]});
  EXPECT_EQ(reads, 0);
}

TEST(Model, ConfigAndInputErrors) {
  ModelConfig c = tiny_config();
  c.num_kv_heads = 3;
  expect_error([&] { Transformer m(c); }, {"model.num_heads", "4", "model.num_kv_heads 3"});
  c = tiny_config();
  c.head_dim = 7;
  expect_error([&] { Transformer m(c); }, {"model.head_dim", "even", "7"});
  Transformer model(tiny_config());
  expect_error([&] { (void)model.logits(random_tokens({2, 65}, 50, 1), self_plan(4)); }, {"max_seq_len 64"});
  expect_error([&] { (void)model.logits(random_tokens({2, 5}, 60, 1).view({10}), self_plan(4)); }, {"[B, T]", "[10]"});
  expect_error([&] { (void)model.logits(Tensor::full({1, 3}, 50, DType::I32), self_plan(4)); }, {"token id 50", "[0, 50)"});
}

}  // namespace
}  // namespace kvroute::layers
