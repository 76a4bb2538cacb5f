#include "train/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/safetensors.h"

namespace kvroute::train {

namespace fs = std::filesystem;

namespace {

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.close();
  KV_CHECK(!out.fail(), "{}: write failed (disk full?)", path);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  KV_CHECK(in.good(), "{}: cannot open", path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> complete_checkpoints(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind("step_", 0) == 0 && name.find(".tmp") == std::string::npos) {
      out.push_back(entry.path().string());
    }
  }
  std::sort(out.begin(), out.end());  // zero-padded step numbers sort in order
  return out;
}

}  // namespace

std::string checkpoint_path(const std::string& checkpoints_dir, int64_t step) {
  return fmt::format("{}/step_{:08d}", checkpoints_dir, step);
}

std::string hf_config_json(const RunConfig& c) {
  const layers::ModelConfig& m = c.model;
  nlohmann::ordered_json j = {
      {"architectures", {"Qwen3ForCausalLM"}},
      {"model_type", "qwen3"},
      {"vocab_size", m.vocab_size},
      {"hidden_size", m.hidden_size},
      {"intermediate_size", m.intermediate_size},
      {"num_hidden_layers", m.num_layers},
      {"num_attention_heads", m.num_heads},
      {"num_key_value_heads", m.num_kv_heads},
      {"head_dim", m.head_dim},
      {"hidden_act", "silu"},
      {"max_position_embeddings", m.max_seq_len},
      {"rms_norm_eps", m.rms_norm_eps},
      {"rope_theta", m.rope_theta},
      {"rope_scaling", nullptr},
      {"tie_word_embeddings", m.tie_embeddings},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"use_sliding_window", false},
      {"initializer_range", m.init_std},
      {"use_cache", true},
      {"torch_dtype", "float32"},
      {"kvroute",
       {{"router_policy", layers::policy_name(c.router.config.policy)},
        {"share_prob", c.router.config.share_prob},
        {"source", layers::source_name(c.router.config.source)},
        {"group_size", c.router.config.group_size},
        {"group_share_prob", c.router.config.group_share_prob},
        {"qk_norm", m.qk_norm}}}};
  return j.dump(2) + "\n";
}

std::string save_checkpoint(const std::string& checkpoints_dir, const TrainState& state, const layers::Transformer& model,
                            const Tensor& adam_m, const Tensor& adam_v, const RunConfig& config, int64_t keep) {
  const std::string final_dir = checkpoint_path(checkpoints_dir, state.step);
  const std::string tmp = final_dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  KV_CHECK(!ec, "{}: cannot create checkpoint directory: {}", tmp, ec.message());
  safetensors::NamedTensors weights;
  for (const auto& [name, master] : model.master_parameters()) weights.emplace_back(name, master);  // f32, any device
  safetensors::save(tmp + "/model.safetensors", weights, {{"format", "pt"}});
  safetensors::save(tmp + "/optimizer.safetensors", {{"exp_avg", adam_m}, {"exp_avg_sq", adam_v}},
                    {{"optimizer", "adamw"}});
  nlohmann::ordered_json s = {{"step", state.step},
                              {"tokens_seen", state.tokens_seen},
                              {"data_cursor", {{"epoch", state.cursor.epoch}, {"position", state.cursor.position}}},
                              {"world_size", state.world_size},
                              {"global_batch_tokens", state.global_batch_tokens},
                              {"fingerprint", state.fingerprint}};
  write_text(tmp + "/state.json", s.dump(2) + "\n");
  write_text(tmp + "/config.yaml", config.to_yaml());
  write_text(tmp + "/config.json", hf_config_json(config));
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  KV_CHECK(!ec, "{}: cannot rename the finished checkpoint into place: {}", final_dir, ec.message());
  std::vector<std::string> all = complete_checkpoints(checkpoints_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove_all(all[i], ec);
  return final_dir;
}

std::string latest_checkpoint(const std::string& checkpoints_dir) {
  std::vector<std::string> all = complete_checkpoints(checkpoints_dir);
  return all.empty() ? std::string() : all.back();
}

TrainState load_checkpoint(const std::string& dir, layers::Transformer& model, Tensor& adam_m, Tensor& adam_v,
                           const RunConfig& config) {
  std::error_code ec;
  KV_CHECK(fs::is_directory(dir, ec), "{}: no such checkpoint directory", dir);
  nlohmann::json s;
  try {
    s = nlohmann::json::parse(read_text(dir + "/state.json"));
  } catch (const nlohmann::json::exception& e) {
    KV_FAIL("{}/state.json: corrupt checkpoint state: {}", dir, e.what());
  }
  TrainState state;
  try {
    state.step = s.at("step");
    state.tokens_seen = s.at("tokens_seen");
    state.cursor.epoch = s.at("data_cursor").at("epoch");
    state.cursor.position = s.at("data_cursor").at("position");
    state.world_size = s.at("world_size");
    state.global_batch_tokens = s.at("global_batch_tokens");
    state.fingerprint = s.at("fingerprint");
  } catch (const nlohmann::json::exception& e) {
    KV_FAIL("{}/state.json: corrupt checkpoint state: {}", dir, e.what());
  }
  KV_CHECK(state.fingerprint == config.model_fingerprint(),
           "{}: checkpoint does not match the config's model ({} vs {})", dir, state.fingerprint,
           config.model_fingerprint());
  safetensors::File weights = safetensors::load(dir + "/model.safetensors");
  model.load_parameters(weights.tensors, dir + "/model.safetensors");
  safetensors::File optim = safetensors::load(dir + "/optimizer.safetensors");
  for (auto [name, target] : {std::pair<const char*, Tensor*>{"exp_avg", &adam_m}, {"exp_avg_sq", &adam_v}}) {
    const Tensor& t = optim.get(name);
    KV_CHECK(t.shape() == target->shape(), "{}/optimizer.safetensors: {} has shape {} but the model needs {}", dir, name,
             t.shape(), target->shape());
    target->copy_(t);
  }
  return state;
}

}  // namespace kvroute::train
