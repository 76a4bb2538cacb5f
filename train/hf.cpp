#include "train/hf.h"

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "core/text.h"
#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "data/tokenizer.h"

namespace kvroute::train::hf {

namespace fs = std::filesystem;
using json::Json;
using layers::Architecture;

namespace {

constexpr int64_t kMaxDim = int64_t{1} << 24;

bool exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

// Optional keys: absent or null gives the default; anything else must have the right type.
int64_t opt_int(const Json& j, const char* key, const std::string& what, int64_t min, int64_t max, int64_t fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  return json::get_int(j, key, what, min, max);
}

double opt_number(const Json& j, const char* key, const std::string& what, double min, double max, double fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  const Json& v = j[key];
  KV_CHECK(v.is_number(), "{}: {}: expected a number, got {}", what, key, json::excerpt(v));
  const double d = v.get<double>();
  KV_CHECK(std::isfinite(d) && d >= min && d <= max, "{}: {}: {} is out of range [{}, {}]", what, key, json::excerpt(v),
           min, max);
  return d;
}

bool opt_bool(const Json& j, const char* key, const std::string& what, bool fallback) {
  if (!j.contains(key) || j[key].is_null()) return fallback;
  KV_CHECK(j[key].is_boolean(), "{}: {}: expected true or false, got {}", what, key, json::excerpt(j[key]));
  return j[key].get<bool>();
}

std::string opt_string(const Json& j, const char* key, const std::string& what) {
  if (!j.contains(key) || j[key].is_null()) return "";
  return json::get_string(j, key, what);
}

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
    m.rope_theta = opt_number(rp, "rope_theta", where, 1e-6, 1e12, opt_number(j, "rope_theta", path, 1e-6, 1e12, 10000.0));
    scaling = &rp;
  } else {
    m.rope_theta = opt_number(j, "rope_theta", path, 1e-6, 1e12, 10000.0);
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null()) {
      scaling = &json::get_object(j, "rope_scaling", path);
      where = path + ": rope_scaling";
    }
  }
  m.rope_scaling = layers::RopeScaling::None;
  if (scaling == nullptr) return;
  std::string type = opt_string(*scaling, "rope_type", where);
  if (type.empty()) type = opt_string(*scaling, "type", where);
  if (type.empty() || type == "default") return;
  KV_CHECK(type == "llama3", "{}: rope_type '{}' is not supported (kvroute implements default and llama3)", where,
           kvroute::excerpt(type, 60));
  m.rope_scaling = layers::RopeScaling::Llama3;
  m.rope_factor = opt_number(*scaling, "factor", where, 1, 1e6, 8.0);
  m.rope_low_freq_factor = opt_number(*scaling, "low_freq_factor", where, 1e-9, 1e6, 1.0);
  m.rope_high_freq_factor = opt_number(*scaling, "high_freq_factor", where, 1e-9, 1e6, 4.0);
  m.rope_original_max_position = json::get_int(*scaling, "original_max_position_embeddings", where, 1, kMaxDim);
  KV_CHECK(m.rope_high_freq_factor > m.rope_low_freq_factor, "{}: high_freq_factor {} must exceed low_freq_factor {}",
           where, m.rope_high_freq_factor, m.rope_low_freq_factor);
}

// The tensor as F32 (a host copy); F16/BF16 convert exactly.
Tensor to_f32(const Tensor& t, const std::string& file, const std::string& name) {
  KV_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16,
           "{}: tensor '{}' is {}, expected floating-point weights (F32, BF16 or F16)", file, name, t.dtype());
  return t.dtype() == DType::F32 ? t : t.to(DType::F32);
}

// A shard file name from an index: one plain component ending in .safetensors.
void check_shard_name(const std::string& name, const std::string& index_path, const std::string& tensor) {
  const bool plain = !name.empty() && name.size() <= 255 && name.find('/') == std::string::npos &&
                     name.find('\0') == std::string::npos && name != "." && name != ".." &&
                     name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0;
  KV_CHECK(plain, "{}: weight_map: '{}' maps to '{}', which is not a .safetensors file name in the model directory",
           index_path, kvroute::excerpt(tensor, 120), kvroute::excerpt(name, 120));
}

std::string layer_key(int64_t layer, const char* suffix) {
  return fmt::format("model.layers.{}.self_attn.{}", layer, suffix);
}

}  // namespace

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
  const std::string model_type = opt_string(j, "model_type", path);
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
  m.num_kv_heads = opt_int(j, "num_key_value_heads", path, 1, 4096, m.num_heads);
  KV_CHECK(m.hidden_size % m.num_heads == 0 || (j.contains("head_dim") && !j["head_dim"].is_null()),
           "{}: hidden_size {} is not a multiple of num_attention_heads {} and head_dim is not given", path,
           m.hidden_size, m.num_heads);
  m.head_dim = opt_int(j, "head_dim", path, 2, 4096, m.hidden_size / m.num_heads);
  m.rms_norm_eps = opt_number(j, "rms_norm_eps", path, 1e-30, 1, 1e-6);
  m.tie_embeddings = opt_bool(j, "tie_word_embeddings", path, false);
  m.init_std = opt_number(j, "initializer_range", path, 1e-9, 10, 0.02);
  const int64_t max_positions = opt_int(j, "max_position_embeddings", path, 1, kMaxDim, 2048);
  m.max_seq_len = max_positions;
  m.qk_norm = m.architecture == Architecture::Qwen3;
  read_rope(j, path, m);

  const std::string act = opt_string(j, "hidden_act", path);
  KV_CHECK(act.empty() || act == "silu", "{}: hidden_act '{}' is not supported (kvroute's MLP is SwiGLU: silu)", path,
           kvroute::excerpt(act, 60));
  KV_CHECK(!opt_bool(j, "attention_bias", path, false), "{}: attention_bias: true is not supported (no biases)", path);
  KV_CHECK(!opt_bool(j, "mlp_bias", path, false), "{}: mlp_bias: true is not supported (no biases)", path);
  if (m.architecture == Architecture::Qwen3) {
    KV_CHECK(!opt_bool(j, "use_sliding_window", path, false),
             "{}: use_sliding_window: true is not supported (kvroute attends over the whole context)", path);
  }
  if (m.architecture == Architecture::Mistral) {
    m.sliding_window = opt_int(j, "sliding_window", path, 1, kMaxDim, 0);
    // Attention over the whole context equals the windowed one only up to the window.
    if (m.sliding_window > 0) m.max_seq_len = std::min(m.max_seq_len, m.sliding_window);
  }
  info.torch_dtype = opt_string(j, "torch_dtype", path);
  if (info.torch_dtype.empty()) info.torch_dtype = opt_string(j, "dtype", path);
  info.bos_token_id = opt_int(j, "bos_token_id", path, 0, kMaxDim, -1);
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    const Json& e = j["eos_token_id"];
    KV_CHECK(!e.empty() && e[0].is_number_integer(), "{}: eos_token_id: expected an id or a list of ids", path);
    info.eos_token_id = e[0].get<int64_t>();
  } else {
    info.eos_token_id = opt_int(j, "eos_token_id", path, 0, kMaxDim, -1);
  }
  try {
    m.validate();
  } catch (const Error& e) {
    KV_FAIL("{}: {}", path, e.what());
  }
  return info;
}

safetensors::NamedTensors read_weights(const std::string& dir, bool tie_embeddings) {
  safetensors::NamedTensors out;
  std::set<std::string> names;
  auto take = [&](const std::string& file, const std::string& name, const Tensor& t) {
    if (name.ends_with("rotary_emb.inv_freq")) return;
    KV_CHECK(names.insert(name).second, "{}: tensor '{}' appears in more than one file", file, name);
    if (tie_embeddings && name == "lm_head.weight") return;  // transformers ties it to embed_tokens
    out.emplace_back(name, to_f32(t, file, name));
  };
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (exists(index_path)) {
    const Json index = json::parse_file(index_path);
    KV_CHECK(index.is_object(), "{}: expected a JSON object", index_path);
    const Json& map = json::get_object(index, "weight_map", index_path);
    KV_CHECK(!map.empty(), "{}: weight_map is empty", index_path);
    std::vector<std::string> files;  // in first-mention order
    std::map<std::string, std::string> file_of;
    for (const auto& [name, file] : map.items()) {
      KV_CHECK(file.is_string(), "{}: weight_map: '{}' maps to {}, expected a file name", index_path,
               kvroute::excerpt(name, 120), json::excerpt(file));
      const std::string f = file.get<std::string>();
      check_shard_name(f, index_path, name);
      if (std::find(files.begin(), files.end(), f) == files.end()) files.push_back(f);
      file_of[name] = f;
    }
    for (const std::string& f : files) {
      KV_CHECK(exists(dir + "/" + f), "{}: weight_map names '{}', which does not exist", index_path, f);
    }
    for (const std::string& f : files) {
      const std::string shard = dir + "/" + f;
      safetensors::File file = safetensors::load(shard);
      for (const auto& [name, t] : file.tensors) {
        auto it = file_of.find(name);
        KV_CHECK(it != file_of.end() && it->second == f, "{}: tensor '{}' is not listed for this file in {}", shard,
                 name, index_path);
        take(shard, name, t);
        file_of.erase(it);
      }
    }
    KV_CHECK(file_of.empty(), "{}: tensor '{}' is listed in weight_map but missing from {}", index_path,
             file_of.empty() ? "" : file_of.begin()->first, file_of.empty() ? "" : file_of.begin()->second);
  } else {
    const std::string single = dir + "/model.safetensors";
    KV_CHECK(exists(single), "{}: no model.safetensors or model.safetensors.index.json", dir);
    safetensors::File file = safetensors::load(single);
    for (const auto& [name, t] : file.tensors) take(single, name, t);
  }
  return out;
}

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
  return read_config(init_from).model;
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
    weights = read_weights(src, config.model.tie_embeddings);
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

namespace {

// The keep-sets of the checkpoint's eval.json (kvroute eval), as [{plan, kept, val_loss}], or "".
std::string evaluated_keep_sets(const std::string& checkpoint_dir) {
  const std::string path = checkpoint_dir + "/eval.json";
  if (!exists(path)) return "";
  const Json results = json::parse_file(path);
  KV_CHECK(results.is_array(), "{}: expected a list of evaluated plans", path);
  Json out = Json::array();
  for (const Json& r : results) {
    KV_CHECK(r.is_object() && r.contains("kept") && r["kept"].is_array(), "{}: an entry without 'kept': {}", path,
             json::excerpt(r));
    out.push_back({{"plan", r.value("plan", "")}, {"kept", r["kept"]}, {"val_loss", r.value("val_loss", 0.0)}});
  }
  return out.dump();
}

void copy_file(const std::string& from, const std::string& to) {
  io::write_file_durable(to, io::read_file(from));
}

// Tokenizer files next to the model: a Hugging Face tokenizer.json as is; GPT-2-format files under
// the names transformers' GPT2Tokenizer reads (vocab.json, merges.txt). Returns what was written.
std::string export_tokenizer(const RunConfig& config, const std::string& out, int64_t& eos_id) {
  const std::string& dir = config.data.tokenizer;
  if (dir.empty() || !exists(dir)) return "no tokenizer (data.tokenizer '" + dir + "' not found)";
  const data::Tokenizer tok = data::Tokenizer::load(dir);
  eos_id = tok.eot_id();
  if (exists(dir + "/tokenizer.json")) {
    std::string copied = "tokenizer.json";
    copy_file(dir + "/tokenizer.json", out + "/tokenizer.json");
    for (const char* extra : {"tokenizer_config.json", "special_tokens_map.json"}) {
      if (exists(dir + "/" + extra)) {
        copy_file(dir + "/" + extra, out + "/" + extra);
        copied += std::string(", ") + extra;
      }
    }
    return "tokenizer: " + copied;
  }
  copy_file(dir + "/encoder.json", out + "/vocab.json");
  copy_file(dir + "/vocab.bpe", out + "/merges.txt");
  const std::string eot = data::kEndOfText;
  Json tc = {{"tokenizer_class", "GPT2Tokenizer"}, {"bos_token", eot},  {"eos_token", eot},
             {"unk_token", eot},                  {"add_prefix_space", false}, {"model_max_length", config.model.max_seq_len}};
  io::write_file_durable(out + "/tokenizer_config.json", tc.dump(2) + "\n");
  return "tokenizer: vocab.json, merges.txt, tokenizer_config.json (GPT-2 format)";
}

std::string shard_name(size_t i, size_t n) { return fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n); }

}  // namespace

std::string export_checkpoint(const std::string& checkpoint_dir, const std::string& out_dir,
                              const ExportOptions& options) {
  std::error_code ec;
  KV_CHECK(fs::is_directory(checkpoint_dir, ec), "{}: no such checkpoint directory", checkpoint_dir);
  KV_CHECK(options.dtype == DType::F32 || options.dtype == DType::BF16 || options.dtype == DType::F16,
           "export: --dtype {} is not a weight dtype (f32, bf16, f16)", options.dtype);
  KV_CHECK(options.shard_bytes > 0, "export: --shard-size must be positive, got {}", options.shard_bytes);
  const RunConfig config = load_config(checkpoint_dir + "/config.yaml");
  const std::string weights_path = checkpoint_dir + "/model.safetensors";
  safetensors::File weights = safetensors::load(weights_path);
  // The checkpoint must be complete for the model its config describes (every shape checked).
  const layers::ModelConfig m = config.model_config();
  for (int64_t l = 0; l < m.num_layers; ++l) {
    KV_CHECK(m.layer_has_kv_weights(l),
             "{}: layer {} has no K/V projections (router.policy {} with group_size {}): {} cannot represent a "
             "model whose layers share K/V weights; export a model trained with router.policy stochastic, "
             "random_fixed_groups or none", checkpoint_dir, l, layers::policy_name(config.router.config.policy),
             config.router.config.group_size, arch_info(m.architecture).class_name);
  }
  {
    layers::Transformer shape_check(m, 0);
    shape_check.load_parameters(weights.tensors, weights_path);
  }

  KV_CHECK(!out_dir.empty() && fs::path(out_dir).filename() != "." && fs::path(out_dir).filename() != "..",
           "export: --out '{}' is not a directory name", out_dir);
  const std::string out_path = fs::path(out_dir).lexically_normal().string();
  const std::string checkpoint_path = fs::path(checkpoint_dir).lexically_normal().string();
  KV_CHECK(out_path != checkpoint_path, "export: --out {} is the checkpoint itself", out_dir);
  KV_CHECK(options.overwrite || !exists(out_dir), "{}: already exists (pass --overwrite to replace it)", out_dir);
  io::check_output_directory(out_path);  // a file, FIFO, device or link is never replaced
  const std::string parent = io::parent_dir(out_path);
  KV_CHECK(fs::is_directory(parent, ec), "export: the parent directory {} of --out does not exist", parent);
  // A private staging directory next to OUT, swapped into place whole (io::StagedDirectory).
  io::StagedDirectory staged(out_path);
  const std::string& tmp = staged.path();
  std::string summary;
  {
    // Shards: tensors in checkpoint (Hugging Face) order, a new file when the next would overflow.
    std::vector<safetensors::NamedTensors> shards(1);
    std::vector<int64_t> shard_sizes(1, 0);
    int64_t total = 0;
    for (const auto& [name, t] : weights.tensors) {
      Tensor out = t.dtype() == options.dtype ? t : t.to(options.dtype);
      const int64_t bytes = out.numel() * static_cast<int64_t>(dtype_size(options.dtype));
      if (!shards.back().empty() && shard_sizes.back() + bytes > options.shard_bytes) {
        shards.emplace_back();
        shard_sizes.push_back(0);
      }
      shards.back().emplace_back(name, std::move(out));
      shard_sizes.back() += bytes;
      total += bytes;
    }
    if (shards.size() == 1) {
      safetensors::save(tmp + "/model.safetensors", shards[0], {{"format", "pt"}});
    } else {
      Json map = Json::object();
      for (size_t i = 0; i < shards.size(); ++i) {
        safetensors::save(tmp + "/" + shard_name(i, shards.size()), shards[i], {{"format", "pt"}});
        for (const auto& [name, t] : shards[i]) map[name] = shard_name(i, shards.size());
      }
      Json index = {{"metadata", {{"total_size", total}}}, {"weight_map", map}};
      io::write_file_staged(tmp + "/model.safetensors.index.json", index.dump(2) + "\n");
    }
    int64_t eos = -1;
    const std::string tokenizer_note = export_tokenizer(config, tmp, eos);
    io::write_file_staged(tmp + "/config.json", config_json(config, options.dtype, evaluated_keep_sets(checkpoint_dir)));
    Json gen = {{"do_sample", false}};
    if (eos >= 0) gen = {{"bos_token_id", eos}, {"eos_token_id", eos}, {"do_sample", false}};
    io::write_file_staged(tmp + "/generation_config.json", gen.dump(2) + "\n");
    summary = fmt::format("exported {} as {} ({}, {} tensors, {:.1f} MB in {} file{}; {}) to {}", checkpoint_dir,
                          arch_info(m.architecture).class_name, dtype_name(options.dtype), weights.tensors.size(),
                          static_cast<double>(total) / 1e6, shards.size(), shards.size() == 1 ? "" : "s",
                          tokenizer_note, out_dir);
  }
  staged.publish();
  return summary;
}

}  // namespace kvroute::train::hf
