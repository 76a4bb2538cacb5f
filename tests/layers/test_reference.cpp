// Parity with the independent PyTorch reference (tests/reference/make_fixtures.py): for 5 configs
// (MHA, GQA 2:1, untied head, and two Llama-3.1-style ones without QK-norm and with llama3 RoPE
// scaling, tied and untied) x 4 plans (all-self, CLA@2, a stochastic draw, retention 25%), the
// logits and loss within 1e-4 relative and every parameter gradient within 1e-3.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "autograd/variable.h"
#include "core/safetensors.h"
#include "layers/transformer.h"
#include "tests/test_util.h"

#ifndef KVROUTE_FIXTURE_DIR
#error "KVROUTE_FIXTURE_DIR must point at tests/reference/fixtures"
#endif

namespace kvroute::layers {
namespace {

ModelConfig config_from_json(const std::string& text) {
  nlohmann::json j = nlohmann::json::parse(text);
  ModelConfig c;
  c.vocab_size = j.at("vocab_size");
  c.hidden_size = j.at("hidden_size");
  c.num_layers = j.at("num_layers");
  c.num_heads = j.at("num_heads");
  c.num_kv_heads = j.at("num_kv_heads");
  c.head_dim = j.at("head_dim");
  c.intermediate_size = j.at("intermediate_size");
  c.tie_embeddings = j.at("tie_embeddings");
  c.rope_theta = j.at("rope_theta");
  c.rms_norm_eps = j.at("rms_norm_eps");
  c.qk_norm = j.at("qk_norm");
  c.architecture = c.qk_norm ? Architecture::Qwen3 : Architecture::Llama;
  // RoPE scaling keys: absent in fixtures written before the Llama configs, so defaulted.
  const std::string scaling = j.value("rope_scaling", std::string("none"));
  if (scaling == "none") {
    c.rope_scaling = RopeScaling::None;
  } else if (scaling == "llama3") {
    c.rope_scaling = RopeScaling::Llama3;
  } else {
    throw std::runtime_error("fixture config: unknown rope_scaling \"" + scaling + "\"");
  }
  c.rope_factor = j.value("rope_factor", c.rope_factor);
  c.rope_low_freq_factor = j.value("rope_low_freq_factor", c.rope_low_freq_factor);
  c.rope_high_freq_factor = j.value("rope_high_freq_factor", c.rope_high_freq_factor);
  c.rope_original_max_position = j.value("rope_original_max_position", c.rope_original_max_position);
  c.max_seq_len = 64;  // above every fixture's sequence length (8, and 24 for the Llama configs)
  return c;
}

// max |a - e| / max |e| over the tensor (0 when both are all zeros).
double relative_error(const Tensor& actual, const Tensor& expected) {
  std::vector<float> a = actual.to_vector<float>(), e = expected.to_vector<float>();
  double scale = 0, err = 0;
  for (size_t i = 0; i < e.size(); ++i) {
    scale = std::max(scale, std::abs(static_cast<double>(e[i])));
    err = std::max(err, std::abs(static_cast<double>(a[i]) - e[i]));
  }
  return scale == 0 ? err : err / scale;
}

class ReferenceParity : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceParity, LogitsLossAndGradientsMatchPyTorch) {
  const std::string path = std::string(KVROUTE_FIXTURE_DIR) + "/" + GetParam() + ".safetensors";
  safetensors::File fixture = safetensors::load(path);
  ModelConfig config = config_from_json(fixture.metadata.at("config"));
  const int64_t ignore_index = std::stoll(fixture.metadata.at("ignore_index"));
  Transformer model(config, 0);
  std::vector<std::pair<std::string, Tensor>> weights;
  for (const auto& [name, t] : fixture.tensors) {
    if (name.rfind("model.", 0) == 0 || name.rfind("lm_head.", 0) == 0) weights.emplace_back(name, t);
  }
  model.load_parameters(weights, path);
  // The Llama fixtures carry the reference's RoPE frequency table (llama3 scaling in float64).
  for (const auto& [name, t] : fixture.tensors) {
    if (name != "rope.inv_freq") continue;
    std::vector<float> expected = t.to_vector<float>();
    ASSERT_EQ(static_cast<int64_t>(expected.size()), config.head_dim / 2);
    for (size_t i = 0; i < expected.size(); ++i) {
      const double ours = ops::rope_inv_freq(config.rope(), static_cast<int64_t>(i), config.head_dim);
      EXPECT_NEAR(ours, expected[i], 1e-6 * std::abs(ours)) << "inv_freq[" << i << "]";
    }
  }
  const Tensor& inputs = fixture.get("inputs");
  const Tensor& targets = fixture.get("targets");

  double worst_logits = 0, worst_loss = 0, worst_grad = 0;
  for (const std::string plan_name : {"self", "cla2", "stochastic", "retention25"}) {
    std::vector<int32_t> plan_ids = fixture.get(plan_name + ".plan").to_vector<int32_t>();
    RoutingPlan plan(plan_ids.begin(), plan_ids.end());
    SCOPED_TRACE(GetParam() + " plan " + plan_name + " = " + format_plan(plan));
    {
      autograd::NoGradGuard no_grad;
      Variable logits = model.logits(inputs, plan);
      double err = relative_error(logits.data(), fixture.get(plan_name + ".logits"));
      EXPECT_LT(err, 1e-4);
      worst_logits = std::max(worst_logits, err);
    }
    model.zero_grad();
    Variable loss = model.loss(inputs, targets, plan, ignore_index);
    const double expected_loss = fixture.get(plan_name + ".loss").item();
    const double loss_err = std::abs(loss.data().item() - expected_loss) / std::abs(expected_loss);
    EXPECT_LT(loss_err, 1e-4) << loss.data().item() << " vs " << expected_loss;
    worst_loss = std::max(worst_loss, loss_err);
    loss.backward();
    for (const auto& [name, p] : model.parameters()) {
      const Tensor& expected = fixture.get(plan_name + ".grad." + name);
      double err = relative_error(p.grad(), expected);
      EXPECT_LT(err, 1e-3) << name;
      worst_grad = std::max(worst_grad, err);
    }
  }
  std::printf("[parity %s] worst relative error: logits %.2e, loss %.2e, gradients %.2e\n", GetParam().c_str(),
              worst_logits, worst_loss, worst_grad);
}

INSTANTIATE_TEST_SUITE_P(Configs, ReferenceParity, ::testing::Values("mha", "gqa2", "untied", "llama", "llama_untied"));

TEST(ReferenceParity, FixtureConfigsCarryTheRopeScaling) {
  const std::string dir = std::string(KVROUTE_FIXTURE_DIR) + "/";
  ModelConfig llama = config_from_json(safetensors::load(dir + "llama.safetensors").metadata.at("config"));
  EXPECT_FALSE(llama.qk_norm);
  EXPECT_EQ(llama.rope_scaling, RopeScaling::Llama3);
  EXPECT_EQ(llama.rope_factor, 8.0);
  EXPECT_EQ(llama.rope_low_freq_factor, 1.0);
  EXPECT_EQ(llama.rope_high_freq_factor, 4.0);
  EXPECT_EQ(llama.rope_original_max_position, 32);
  ModelConfig untied = config_from_json(safetensors::load(dir + "llama_untied.safetensors").metadata.at("config"));
  EXPECT_EQ(untied.rope_scaling, RopeScaling::Llama3);
  EXPECT_EQ(untied.rope_factor, 4.0);
  EXPECT_EQ(untied.rope_low_freq_factor, 0.5);
  EXPECT_EQ(untied.rope_high_freq_factor, 2.0);
  EXPECT_EQ(untied.rope_original_max_position, 16);
  EXPECT_FALSE(untied.tie_embeddings);
  ModelConfig mha = config_from_json(safetensors::load(dir + "mha.safetensors").metadata.at("config"));
  EXPECT_TRUE(mha.qk_norm);
  EXPECT_EQ(mha.rope_scaling, RopeScaling::None);
}

TEST(ReferenceParity, LoadRejectsMismatchedWeights) {
  const std::string path = std::string(KVROUTE_FIXTURE_DIR) + "/gqa2.safetensors";
  safetensors::File fixture = safetensors::load(path);
  ModelConfig config = config_from_json(fixture.metadata.at("config"));
  config.num_kv_heads = 4;  // the file holds GQA 2:1 K/V projections
  Transformer model(config, 0);
  std::vector<std::pair<std::string, Tensor>> weights;
  for (const auto& [name, t] : fixture.tensors)
    if (name.rfind("model.", 0) == 0) weights.emplace_back(name, t);
  testing::expect_error([&] { model.load_parameters(weights, path); },
                        {path, "model.layers.0.self_attn.k_proj.weight", "[16, 32]", "[32, 32]"});
}

}  // namespace
}  // namespace kvroute::layers
