#include "train/init_from.h"

#include <filesystem>
#include <map>
#include <set>

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
  // Streaming: headers first, then one tensor at a time into the model's parameters.
  const std::string& src = config.init_from;
  const bool checkpoint = exists(src + "/config.yaml");
  const std::string origin = checkpoint ? src + "/model.safetensors" : src;
  const hf::WeightSource weights = checkpoint ? hf::WeightSource::file(origin)
                                              : hf::WeightSource::model_dir(src, config.model.tie_embeddings);

  // Layers the run builds without K/V weights (CLA@k non-leaders): drop or average theirs.
  const layers::ModelConfig& m = model.config();
  const int64_t L = m.num_layers;
  for (int64_t l = 0; l < L; ++l) {
    if (m.layer_has_kv_weights(l)) {
      KV_CHECK(weights.has(layer_key(l, "k_proj.weight")),
               "{}: model.init_from has no K/V weights for layer {} ('{}' is missing), which this run needs", origin,
               l, layer_key(l, "k_proj.weight"));
    }
  }
  std::map<std::string, Tensor> averaged;  // leader tensors replaced by their group's mean (small)
  std::set<std::string> dropped;           // non-leaders' K/V tensors
  for (const char* suffix : {"k_proj.weight", "v_proj.weight", "k_norm.weight"}) {
    for (int64_t leader = 0; leader < L; ++leader) {
      if (!m.layer_has_kv_weights(leader)) continue;
      // The non-leaders that read this leader's K/V: the rest of its CLA group.
      std::vector<std::string> members;
      for (int64_t l = leader + 1; l < L && !m.layer_has_kv_weights(l); ++l) {
        if (weights.has(layer_key(l, suffix))) members.push_back(layer_key(l, suffix));
      }
      if (members.empty()) continue;
      if (config.router.kv_init == KvInit::Average) {
        const std::string key = layer_key(leader, suffix);
        KV_CHECK(weights.has(key), "{}: '{}' is missing", origin, key);
        Tensor acc = weights.read(key).to(DType::F32).contiguous().clone();
        float* a = acc.data<float>();
        for (const std::string& name : members) {
          const Tensor t = weights.read(name).to(DType::F32).contiguous();
          KV_CHECK(t.shape() == acc.shape(), "{}: '{}' has shape {} but '{}' has {}", origin, name, t.shape(), key,
                   acc.shape());
          const float* p = t.data<float>();
          for (int64_t i = 0; i < acc.numel(); ++i) a[i] += p[i];
        }
        const float scale = 1.0f / static_cast<float>(members.size() + 1);
        for (int64_t i = 0; i < acc.numel(); ++i) a[i] *= scale;
        averaged[key] = acc;
      }
      dropped.insert(members.begin(), members.end());
    }
  }
  std::vector<std::string> names;
  for (const std::string& name : weights.names()) {
    if (!dropped.count(name)) names.push_back(name);
  }
  model.load_parameters(
      names,
      [&](const std::string& name) {
        auto it = averaged.find(name);
        return it != averaged.end() ? it->second : weights.read(name);
      },
      origin);
}

}  // namespace kvroute::train
