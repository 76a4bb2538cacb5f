#include "train/init_from.h"

#include <filesystem>
#include <map>

#include "core/error.h"
#include "core/io.h"
#include "train/hf.h"

namespace kvroute::train {

namespace fs = std::filesystem;

namespace {

using io::exists;

std::string layer_key(int64_t layer, const char* suffix) {
  return fmt::format("model.layers.{}.self_attn.{}", layer, suffix);
}

}  // namespace

layers::ModelConfig source_model_config(const std::string& init_from, std::string* origin) {
  std::error_code ec;
  KV_CHECK(fs::is_directory(init_from, ec), "model.init_from: '{}' is not a directory (a Hugging Face model directory "
           "or a kvroute checkpoint)", init_from);
  if (exists(init_from + "/config.yaml")) {
    if (origin) *origin = init_from + "/config.yaml";
    return load_config(init_from + "/config.yaml").model;
  }
  KV_CHECK(exists(init_from + "/config.json"), "model.init_from: '{}' holds neither config.yaml (a kvroute checkpoint) "
           "nor config.json (a Hugging Face model)", init_from);
  if (origin) *origin = init_from + "/config.json";
  return hf::read_config(init_from).model;
}

void resolve_init_from(RunConfig& config) {
  if (config.init_from.empty()) return;
  // Every model key given (a run's own config.yaml): the source, if it still exists, must agree.
  if (!config.init_from_pending && !exists(config.init_from)) return;
  std::string origin;
  layers::ModelConfig source;
  try {
    source = source_model_config(config.init_from, &origin);
  } catch (const Error& e) {
    KV_FAIL("{}: {}", config.source, e.what());
  }
  take_model_from(config, source, origin);
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  RunConfig config = load_config(path, overrides);
  resolve_init_from(config);
  return config;
}

void load_initial_weights(const RunConfig& config, layers::Transformer& model) {
  const std::string& src = config.init_from;
  safetensors::NamedTensors weights;
  std::string origin;
  if (exists(src + "/config.yaml")) {
    origin = src + "/model.safetensors";
    weights = safetensors::load(origin).tensors;
  } else {
    origin = src;
    weights = hf::read_weights(src, config.model.tie_embeddings);
  }
  std::map<std::string, Tensor> by_name;
  for (auto& [name, t] : weights) by_name[name] = t;

  // Layers the run builds without K/V weights (CLA@k non-leaders): drop or average theirs.
  const layers::ModelConfig& m = model.config();
  const int64_t L = m.num_layers;
  for (int64_t l = 0; l < L; ++l) {
    const bool source_has = by_name.count(layer_key(l, "k_proj.weight")) > 0;
    if (m.layer_has_kv_weights(l)) {
      KV_CHECK(source_has, "{}: model.init_from has no K/V weights for layer {} ('{}' is missing), which this run needs",
               origin, l, layer_key(l, "k_proj.weight"));
    }
  }
  for (const char* suffix : {"k_proj.weight", "v_proj.weight", "k_norm.weight"}) {
    for (int64_t leader = 0; leader < L; ++leader) {
      if (!m.layer_has_kv_weights(leader)) continue;
      // The non-leaders that read this leader's K/V: the rest of its CLA group.
      std::vector<std::string> members;
      for (int64_t l = leader + 1; l < L && !m.layer_has_kv_weights(l); ++l) {
        if (by_name.count(layer_key(l, suffix))) members.push_back(layer_key(l, suffix));
      }
      if (members.empty()) continue;
      if (config.router.kv_init == KvInit::Average) {
        Tensor& sum = by_name[layer_key(leader, suffix)];
        KV_CHECK(sum.defined(), "{}: '{}' is missing", origin, layer_key(leader, suffix));
        Tensor acc = sum.clone();  // F32: read_weights and checkpoints hold F32 weights
        KV_CHECK(acc.dtype() == DType::F32, "{}: '{}' is {}, expected F32", origin, layer_key(leader, suffix), acc.dtype());
        float* a = acc.data<float>();
        for (const std::string& name : members) {
          const Tensor& t = by_name[name];
          KV_CHECK(t.shape() == acc.shape(), "{}: '{}' has shape {} but '{}' has {}", origin, name, t.shape(),
                   layer_key(leader, suffix), acc.shape());
          const Tensor tc = t.contiguous();
          const float* p = tc.data<float>();
          for (int64_t i = 0; i < acc.numel(); ++i) a[i] += p[i];
        }
        const float scale = 1.0f / static_cast<float>(members.size() + 1);
        for (int64_t i = 0; i < acc.numel(); ++i) a[i] *= scale;
        sum = acc;
      }
      for (const std::string& name : members) by_name.erase(name);
    }
  }
  safetensors::NamedTensors converted;
  for (auto& [name, t] : weights) {
    auto it = by_name.find(name);
    if (it != by_name.end()) converted.emplace_back(name, it->second);
  }
  model.load_parameters(converted, origin);
}

}  // namespace kvroute::train
