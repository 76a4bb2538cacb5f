// Hugging Face model directories of Qwen3ForCausalLM, LlamaForCausalLM and MistralForCausalLM:
// config.json in the transformers 4.x or 5.x style (hf_config.cpp, the one mapping between Hugging
// Face configs and layers::ModelConfig, both ways) and weights in model.safetensors or shards with
// model.safetensors.index.json, F32/BF16/F16 (hf_weights.cpp). Starting a run from one is
// train/init_from.h; writing one from a checkpoint is train/export.h.
#pragma once

#include <cstdint>
#include <string>
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

// The weights of DIR as F32 tensors with their Hugging Face names, in file order. A stored
// lm_head.weight is dropped when `tie_embeddings` (transformers ties it to embed_tokens);
// rotary inv_freq buffers of old checkpoints are skipped. Errors name the file and the tensor.
safetensors::NamedTensors read_weights(const std::string& dir, bool tie_embeddings);

// "Qwen3ForCausalLM", "LlamaForCausalLM" or "MistralForCausalLM".
const char* architecture_class_name(layers::Architecture architecture);

// config.json of the run's architecture, as transformers writes it, plus a "kvroute" block
// (router settings and `evaluated`, the keep-sets the model was evaluated with, if any).
std::string config_json(const RunConfig& config, DType dtype, const std::string& evaluated_json = "");

}  // namespace kvroute::train::hf
