#include "train/hf.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/text.h"

namespace kvroute::train::hf {

namespace fs = std::filesystem;
using json::Json;
using layers::Architecture;

namespace {

constexpr int64_t kMaxDim = int64_t{1} << 24;

using io::exists;

struct ArchInfo {
  Architecture arch;
  const char* class_name;
  const char* model_type;
};
constexpr ArchInfo kArchitectures[] = {{Architecture::Qwen3, "Qwen3ForCausalLM", "qwen3"},
                                       {Architecture::Llama, "LlamaForCausalLM", "llama"},
                                       {Architecture::Mistral, "MistralForCausalLM", "mistral"}};

const ArchInfo& arch_info(Architecture a) {
  for (const ArchInfo& info : kArchitectures)
    if (info.arch == a) return info;
  return kArchitectures[0];
}

// rope_theta and llama3 scaling, from a 5.x rope_parameters object or 4.x rope_theta/rope_scaling.
void read_rope(const Json& j, const std::string& path, layers::ModelConfig& m) {
  const Json* scaling = nullptr;
  std::string where;
  if (j.contains("rope_parameters") && !j["rope_parameters"].is_null()) {
    const Json& rp = json::get_object(j, "rope_parameters", path);
    where = path + ": rope_parameters";
    m.rope_theta = json::opt_number(rp, "rope_theta", where, 1e-6, 1e12, json::opt_number(j, "rope_theta", path, 1e-6, 1e12, 10000.0));
    scaling = &rp;
  } else {
    m.rope_theta = json::opt_number(j, "rope_theta", path, 1e-6, 1e12, 10000.0);
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
      scaling = &json::get_object(j, "rope_scaling", path);
      where = path + ": rope_scaling";
    }
  }
  m.rope_scaling = layers::RopeScaling::None;
  if (scaling == nullptr) return;
  std::string type = json::opt_string(*scaling, "rope_type", where);
  if (type.empty()) type = json::opt_string(*scaling, "type", where);
  if (type.empty() || type == "default") return;
  KV_CHECK(type == "llama3", "{}: rope_type '{}' is not supported (kvroute implements default and llama3)", where,
           kvroute::excerpt(type, 60));
  m.rope_scaling = layers::RopeScaling::Llama3;
  m.rope_factor = json::opt_number(*scaling, "factor", where, 1, 1e6, 8.0);
  m.rope_low_freq_factor = json::opt_number(*scaling, "low_freq_factor", where, 1e-9, 1e6, 1.0);
  m.rope_high_freq_factor = json::opt_number(*scaling, "high_freq_factor", where, 1e-9, 1e6, 4.0);
  m.rope_original_max_position = json::get_int(*scaling, "original_max_position_embeddings", where, 1, kMaxDim);
  KV_CHECK(m.rope_high_freq_factor > m.rope_low_freq_factor, "{}: high_freq_factor {} must exceed low_freq_factor {}",
           where, m.rope_high_freq_factor, m.rope_low_freq_factor);
}

}  // namespace

const char* architecture_class_name(Architecture a) { return arch_info(a).class_name; }

bool is_model_dir(const std::string& dir) {
  return exists(dir + "/config.json") &&
         (exists(dir + "/model.safetensors") || exists(dir + "/model.safetensors.index.json"));
}

ModelInfo read_config(const std::string& dir) {
  const std::string path = dir + "/config.json";
  const Json j = json::parse_file(path);
  KV_CHECK(j.is_object(), "{}: expected a JSON object", path);
  ModelInfo info;
  layers::ModelConfig& m = info.model;

  std::string class_name;
  if (j.contains("architectures") && !j["architectures"].is_null()) {
    const Json& a = j["architectures"];
    KV_CHECK(a.is_array() && a.size() == 1 && a[0].is_string(),
             "{}: architectures: expected a list of one class name, got {}", path, json::excerpt(a));
    class_name = a[0].get<std::string>();
  }
  const std::string model_type = json::opt_string(j, "model_type", path);
  const ArchInfo* found = nullptr;
  for (const ArchInfo& a : kArchitectures) {
    if (class_name.empty() ? model_type == a.model_type : class_name == a.class_name) found = &a;
  }
  KV_CHECK(found != nullptr,
           "{}: architecture '{}' is not supported (kvroute imports Qwen3ForCausalLM, LlamaForCausalLM, "
           "MistralForCausalLM)", path, kvroute::excerpt(class_name.empty() ? model_type : class_name, 80));
  KV_CHECK(model_type.empty() || model_type == found->model_type, "{}: model_type '{}' does not match architectures '{}'",
           path, kvroute::excerpt(model_type, 60), found->class_name);
  m.architecture = found->arch;
  KV_CHECK(!j.contains("quantization_config") || j["quantization_config"].is_null(),
           "{}: quantization_config: quantized checkpoints are not supported (import the unquantized model)", path);

  m.vocab_size = json::get_int(j, "vocab_size", path, 1, kMaxDim);
  m.hidden_size = json::get_int(j, "hidden_size", path, 1, kMaxDim);
  m.intermediate_size = json::get_int(j, "intermediate_size", path, 1, kMaxDim);
  m.num_layers = json::get_int(j, "num_hidden_layers", path, 1, 4096);
  m.num_heads = json::get_int(j, "num_attention_heads", path, 1, 4096);
  m.num_kv_heads = json::opt_int(j, "num_key_value_heads", path, 1, 4096, m.num_heads);
  KV_CHECK(m.hidden_size % m.num_heads == 0 || (j.contains("head_dim") && !j["head_dim"].is_null()),
           "{}: hidden_size {} is not a multiple of num_attention_heads {} and head_dim is not given", path,
           m.hidden_size, m.num_heads);
  m.head_dim = json::opt_int(j, "head_dim", path, 2, 4096, m.hidden_size / m.num_heads);
  m.rms_norm_eps = json::opt_number(j, "rms_norm_eps", path, 1e-30, 1, 1e-6);
  m.tie_embeddings = json::opt_bool(j, "tie_word_embeddings", path, false);
  m.init_std = json::opt_number(j, "initializer_range", path, 1e-9, 10, 0.02);
  const int64_t max_positions = json::opt_int(j, "max_position_embeddings", path, 1, kMaxDim, 2048);
  m.max_seq_len = max_positions;
  m.qk_norm = m.architecture == Architecture::Qwen3;
  read_rope(j, path, m);

  const std::string act = json::opt_string(j, "hidden_act", path);
  KV_CHECK(act.empty() || act == "silu", "{}: hidden_act '{}' is not supported (kvroute's MLP is SwiGLU: silu)", path,
           kvroute::excerpt(act, 60));
  KV_CHECK(!json::opt_bool(j, "attention_bias", path, false), "{}: attention_bias: true is not supported (no biases)", path);
  KV_CHECK(!json::opt_bool(j, "mlp_bias", path, false), "{}: mlp_bias: true is not supported (no biases)", path);
  if (m.architecture == Architecture::Qwen3) {
    KV_CHECK(!json::opt_bool(j, "use_sliding_window", path, false),
             "{}: use_sliding_window: true is not supported (kvroute attends over the whole context)", path);
  }
  if (m.architecture == Architecture::Mistral) {
    m.sliding_window = json::opt_int(j, "sliding_window", path, 1, kMaxDim, 0);
    // Attention over the whole context equals the windowed one only up to the window.
    if (m.sliding_window > 0) m.max_seq_len = std::min(m.max_seq_len, m.sliding_window);
  }
  info.torch_dtype = json::opt_string(j, "torch_dtype", path);
  if (info.torch_dtype.empty()) info.torch_dtype = json::opt_string(j, "dtype", path);
  info.bos_token_id = json::opt_int(j, "bos_token_id", path, 0, kMaxDim, -1);
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    const Json& e = j["eos_token_id"];
    KV_CHECK(!e.empty() && e[0].is_number_integer(), "{}: eos_token_id: expected an id or a list of ids", path);
    info.eos_token_id = e[0].get<int64_t>();
  } else {
    info.eos_token_id = json::opt_int(j, "eos_token_id", path, 0, kMaxDim, -1);
  }
  try {
    m.validate();
  } catch (const Error& e) {
    KV_FAIL("{}: {}", path, e.what());
  }
  return info;
}

std::string config_json(const RunConfig& c, DType dtype, const std::string& evaluated_json) {
  const layers::ModelConfig& m = c.model;
  const ArchInfo& info = arch_info(m.architecture);
  const char* torch_dtype = dtype == DType::BF16 ? "bfloat16" : dtype == DType::F16 ? "float16" : "float32";
  Json rope_scaling = nullptr;
  Json rope_parameters = {{"rope_type", "default"}, {"rope_theta", m.rope_theta}};
  if (m.rope_scaling == layers::RopeScaling::Llama3) {
    rope_scaling = {{"rope_type", "llama3"},
                    {"factor", m.rope_factor},
                    {"low_freq_factor", m.rope_low_freq_factor},
                    {"high_freq_factor", m.rope_high_freq_factor},
                    {"original_max_position_embeddings", m.rope_original_max_position}};
    rope_parameters = rope_scaling;
    rope_parameters["rope_theta"] = m.rope_theta;
  }
  Json j = {{"architectures", {info.class_name}},
            {"model_type", info.model_type},
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
            {"rope_scaling", rope_scaling},
            {"rope_parameters", rope_parameters},
            {"tie_word_embeddings", m.tie_embeddings},
            {"attention_bias", false},
            {"attention_dropout", 0.0},
            {"initializer_range", m.init_std},
            {"use_cache", true},
            {"torch_dtype", torch_dtype},
            {"dtype", torch_dtype}};
  switch (m.architecture) {
    case Architecture::Qwen3:
      j["use_sliding_window"] = false;
      j["sliding_window"] = nullptr;
      j["max_window_layers"] = m.num_layers;
      break;
    case Architecture::Llama:
      j["mlp_bias"] = false;
      j["pretraining_tp"] = 1;
      break;
    case Architecture::Mistral:
      j["sliding_window"] = m.sliding_window > 0 ? Json(m.sliding_window) : Json(nullptr);
      break;
  }
  Json kv = {{"router_policy", layers::policy_name(c.router.config.policy)},
             {"share_prob", c.router.config.share_prob},
             {"source", layers::source_name(c.router.config.source)},
             {"group_size", c.router.config.group_size},
             {"group_share_prob", c.router.config.group_share_prob},
             {"qk_norm", m.qk_norm}};
  if (!evaluated_json.empty()) kv["evaluated"] = json::parse(evaluated_json, "evaluated keep-sets");
  j["kvroute"] = kv;
  return j.dump(2) + "\n";
}

}  // namespace kvroute::train::hf
