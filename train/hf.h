// Hugging Face interop: model directories of Qwen3ForCausalLM, LlamaForCausalLM and
// MistralForCausalLM in (config.json in the transformers 4.x or 5.x style; model.safetensors or
// shards with model.safetensors.index.json; F32/BF16/F16 tensors), and kvroute checkpoints out in
// the same layout. One place for the mapping between Hugging Face configs and layers::ModelConfig.
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

// The model section of `init_from` (a Hugging Face directory or a kvroute checkpoint) and where it
// came from ("DIR/config.json" or "DIR/config.yaml").
layers::ModelConfig source_model_config(const std::string& init_from, std::string* origin = nullptr);

// Fresh start from config.init_from: copies its weights into `model`, checking every shape. When
// the run's router leaves layers without K/V weights (CLA@k) and the source has them, the router's
// kv_init decides: drop the non-leaders' K/V, or average each group's K/V (and k_norm) into its
// leader. A source without K/V weights for a layer the run needs is an error.
void load_initial_weights(const RunConfig& config, layers::Transformer& model);

// config.json of the run's architecture, as transformers writes it, plus a "kvroute" block
// (router settings and `evaluated`, the keep-sets the model was evaluated with, if any).
std::string config_json(const RunConfig& config, DType dtype, const std::string& evaluated_json = "");

struct ExportOptions {
  DType dtype = DType::F32;  // F32, BF16 or F16
  int64_t shard_bytes = int64_t{5} << 30;
  bool overwrite = false;
};

// Writes CHECKPOINT's model as a Hugging Face directory OUT: config.json, generation_config.json,
// model.safetensors (or shards + index), and the tokenizer files of data.tokenizer when they
// exist. Written to OUT.tmp and renamed; an existing OUT is replaced only with `overwrite`.
// Returns a one-line summary.
std::string export_checkpoint(const std::string& checkpoint_dir, const std::string& out_dir,
                              const ExportOptions& options);

}  // namespace kvroute::train::hf
