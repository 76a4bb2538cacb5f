// Hugging Face model directories of Qwen3ForCausalLM, LlamaForCausalLM and MistralForCausalLM:
// config.json in the transformers 4.x or 5.x style (hf_config.cpp, the one mapping between Hugging
// Face configs and layers::ModelConfig, both ways) and weights in model.safetensors or shards with
// model.safetensors.index.json, F32/BF16/F16 (hf_weights.cpp). Starting a run from one is
// train/init_from.h; writing one from a checkpoint is train/export.h.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "layers/transformer.h"
#include "train/config.h"

namespace kvroute::train::hf {

// DIR holds a Hugging Face model: config.json plus model.safetensors or model.safetensors.index.json.
bool is_model_dir(const std::string& dir);

struct ModelInfo {
  layers::ModelConfig model;
  std::string torch_dtype;  // "float32", "bfloat16", "float16" or "" (not given)
  int64_t bos_token_id = -1, eos_token_id = -1;
};

// Reads DIR/config.json. Errors name the file and the key: an architecture other than the three,
// rope scaling other than llama3, attention/MLP biases, an activation other than silu,
// quantization, a Qwen3 sliding window.
ModelInfo read_config(const std::string& dir);

// The weights of a model directory or of one safetensors file, opened without reading a tensor:
// every file's header is read and validated (and a shard index checked against the files) first,
// then tensors are read one at a time (F32 and BF16 as stored, F16 widened to F32), so an import
// holds one tensor besides the model. Errors name the file and the tensor.
class WeightSource {
 public:
  // DIR/model.safetensors or the shards of DIR/model.safetensors.index.json (Hugging Face layout).
  // A stored lm_head.weight is skipped when `tie_embeddings`; rotary inv_freq buffers always are.
  static WeightSource model_dir(const std::string& dir, bool tie_embeddings);
  // One safetensors file, e.g. a kvroute checkpoint's model.safetensors.
  static WeightSource file(const std::string& path);

  const std::vector<std::string>& names() const { return names_; }  // in file order
  bool has(const std::string& name) const { return where_.count(name) > 0; }
  Tensor read(const std::string& name) const;
  const std::string& origin() const { return origin_; }  // the file or the directory
  // Every tensor into the model's parameters, one at a time (Transformer::load_parameters).
  void load_into(layers::Transformer& model) const;

 private:
  void add_file(const std::string& path, const std::function<bool(const std::string&)>& keep);
  std::vector<std::unique_ptr<safetensors::Reader>> files_;
  std::map<std::string, std::pair<size_t, const safetensors::Entry*>> where_;
  std::vector<std::string> names_;
  std::string origin_;
};

// The weights of DIR as F32 tensors with their Hugging Face names, in file order (all in memory;
// WeightSource::model_dir reads them one at a time). A stored
// lm_head.weight is dropped when `tie_embeddings` (transformers ties it to embed_tokens);
// rotary inv_freq buffers of old checkpoints are skipped. Errors name the file and the tensor.
safetensors::NamedTensors read_weights(const std::string& dir, bool tie_embeddings);

// "Qwen3ForCausalLM", "LlamaForCausalLM" or "MistralForCausalLM".
const char* architecture_class_name(layers::Architecture architecture);

// config.json of the run's architecture, as transformers writes it, plus a "kvroute" block
// (router settings and `evaluated`, the keep-sets the model was evaluated with, if any).
std::string config_json(const RunConfig& config, DType dtype, const std::string& evaluated_json = "");

}  // namespace kvroute::train::hf
