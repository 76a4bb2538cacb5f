// The Qwen3-style causal LM: Linear, Embedding, RMSNorm, Rotary, Attention (GQA, QK-norm, K/V
// from the layer the routing plan names), SwiGLU MLP, DecoderLayer, Transformer. Parameter names
// and order are Hugging Face Qwen3's; all parameters live in one flat buffer and all gradients in
// another (each tensor a view), so all-reduce, clipping and AdamW are one loop each.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "kernels/ops.h"
#include "layers/module.h"
#include "layers/router.h"

namespace kvroute::layers {

class KVCache;

// The Hugging Face architecture a model is (imported from, exported as): Qwen3 has QK-norm; Llama
// and Mistral do not; Mistral may declare a sliding window (kvroute always attends to the whole
// context, so a window shorter than the context is refused).
enum class Architecture { Qwen3, Llama, Mistral };
const char* architecture_name(Architecture a);  // qwen3 | llama | mistral
enum class RopeScaling { None, Llama3 };
const char* rope_scaling_name(RopeScaling s);  // none | llama3

struct ModelConfig {
  Architecture architecture = Architecture::Qwen3;
  int64_t vocab_size = 8192;
  int64_t hidden_size = 256;
  int64_t num_layers = 6;
  int64_t num_heads = 8;
  int64_t num_kv_heads = 4;
  int64_t head_dim = 32;
  int64_t intermediate_size = 768;
  double rope_theta = 1e6;
  // Llama 3.1 rope scaling (rope_type "llama3"); the factors are ignored with RopeScaling::None.
  RopeScaling rope_scaling = RopeScaling::None;
  double rope_factor = 8.0;
  double rope_low_freq_factor = 1.0;
  double rope_high_freq_factor = 4.0;
  int64_t rope_original_max_position = 8192;
  int64_t sliding_window = 0;  // Mistral's; 0: none. Must be >= max_seq_len.
  double rms_norm_eps = 1e-6;
  int64_t max_seq_len = 2048;
  bool tie_embeddings = true;
  bool qk_norm = true;
  double init_std = 0.02;
  // GPT-2's scaled init: the projections that write into the residual stream (o_proj, down_proj)
  // drawn with init_std / sqrt(2 * num_layers), so the stream's variance does not grow with depth.
  bool scaled_residual_init = false;
  // Layers that own K/V projection weights (empty: all). CLA@k leaves the non-leaders without.
  std::vector<bool> kv_weight_layers;

  void validate() const;  // one-line errors naming the key and value
  // The parameters of the model this config builds, Hugging Face names and shapes in the model's
  // order (tested equal to Transformer::master_parameters()), known before anything is allocated:
  // what export checks a checkpoint against without building the model.
  std::vector<std::pair<std::string, Shape>> parameter_shapes() const;
  int64_t parameter_count() const;  // the sum over parameter_shapes()
  // Refuses a model whose `bytes_per_parameter` (weights, gradients, optimizer state) exceed the
  // machine's physical memory, naming the size keys, instead of an out-of-memory failure later.
  void check_fits_in_memory(double bytes_per_parameter, const std::string& what) const;
  bool layer_has_kv_weights(int64_t layer) const;
  ops::RopeConfig rope() const;
};

class Linear final : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features);
  Variable forward(const Variable& x, const ops::Execution& ex) const;
  const Variable& weight() const { return weight_; }

 private:
  Variable weight_;
};

class Embedding final : public Module {
 public:
  Embedding(int64_t vocab_size, int64_t dim);
  Variable forward(const Tensor& tokens) const;
  const Variable& weight() const { return weight_; }

 private:
  Variable weight_;
};

class RMSNorm final : public Module {
 public:
  RMSNorm(int64_t dim, double eps);
  Variable forward(const Variable& x) const;
  Variable forward(const Variable& x, DType out_dtype) const;  // ag::rms_norm's out_dtype

 private:
  Variable weight_;
  float eps_;
};

// Where the tokens of a batch sit: rows of one sequence from position `offset` (converts from
// an integer offset), or packed rows: several sequences per row (data::Batch::positions and
// key_begin, [B, T] i32), each with its own positions from 0 and attending only within itself.
struct Positions {
  Positions(int64_t offset = 0) : offset(offset) {}  // NOLINT: an offset is a Positions
  Positions(Tensor positions, Tensor key_begin) : positions(std::move(positions)), key_begin(std::move(key_begin)) {}
  bool packed() const { return positions.defined(); }
  int64_t offset = 0;
  Tensor positions, key_begin;
};

class Rotary {
 public:
  explicit Rotary(const ops::RopeConfig& config) : config_(config) {}
  Variable apply(const Variable& x, const Positions& at) const;

 private:
  ops::RopeConfig config_;
};

// Keys and values of one layer, [B, T, num_kv_heads, head_dim], RoPE already applied to keys.
struct LayerKV {
  Variable k, v;
};

class Attention final : public Module {
 public:
  Attention(const ModelConfig& config, bool has_kv_weights);
  bool has_kv_weights() const { return k_proj_ != nullptr; }
  LayerKV project_kv(const Variable& h, const Positions& at, const ops::Execution& ex) const;
  // Attention of this layer's queries (from h) over `kv`, then the output projection.
  Variable forward(const Variable& h, const LayerKV& kv, const Positions& at, const ops::Execution& ex) const;

 private:
  int64_t num_heads_, num_kv_heads_, head_dim_;
  float softmax_scale_;
  Rotary rotary_;
  std::shared_ptr<Linear> q_proj_, k_proj_, v_proj_, o_proj_;
  std::shared_ptr<RMSNorm> q_norm_, k_norm_;
};

class SwiGLU final : public Module {
 public:
  SwiGLU(int64_t hidden, int64_t intermediate);
  Variable forward(const Variable& x, const ops::Execution& ex) const;

 private:
  std::shared_ptr<Linear> gate_proj_, up_proj_, down_proj_;
};

class DecoderLayer final : public Module {
 public:
  DecoderLayer(const ModelConfig& config, bool has_kv_weights);
  // Pre-norm: h = norm(x); K/V of h when `kv_out` is given (some layer reads them); then
  // x + attn(h, kv_in) and x + mlp(norm(x)).
  // recompute: everything after the K/V projection (query, attention, output projection, MLP) is
  // recomputed in the backward pass (autograd::checkpoint), keeping only x, norm(x) and the K/V it
  // reads; the K/V projection stays outside, since later layers may read its output.
  Variable forward(const Variable& x, LayerKV* kv_out, const std::vector<LayerKV>& kv_by_layer, int source,
                   const Positions& at, const ops::Execution& ex, bool recompute = false) const;
  // Cached step: new K/V (when this layer keeps a cache) go into `cache`, attention reads the
  // cache of layer `source` up to the new tokens.
  Variable forward_cached(const Variable& x, KVCache& cache, int layer, int source, const ops::Execution& ex) const;

 private:
  std::shared_ptr<Attention> self_attn_;
  std::shared_ptr<SwiGLU> mlp_;
  std::shared_ptr<RMSNorm> input_layernorm_, post_attention_layernorm_;
};

class Transformer final : public Module {
 public:
  // Builds the model, initialises it from Philox(seed) (projections and embeddings normal(0,
  // init_std), norms ones) and moves all parameters into one flat buffer.
  explicit Transformer(const ModelConfig& config, uint64_t seed = 0);

  const ModelConfig& config() const { return config_; }
  int num_layers() const { return static_cast<int>(config_.num_layers); }

  // tokens [B, T] -> logits [B, T, V] under `plan`.
  Variable logits(const Tensor& tokens, const RoutingPlan& plan, int64_t position_offset = 0) const;
  // Mean cross-entropy of the next-token predictions: inputs, targets [B, T]; targets equal to
  // ignore_index do not count. The logits buffer is reused for d(logits) (fused, in place).
  // `at`: packed rows (Positions(positions, key_begin)), else rows from position 0.
  Variable loss(const Tensor& inputs, const Tensor& targets, const RoutingPlan& plan, int64_t ignore_index = -100,
                const Positions& at = {}) const;

  // Places the flat buffers on `device` and sets the dtype the forward computes in. f32: the
  // parameters the layers read are the f32 buffer itself. bf16 (CUDA): the layers read a bf16 copy
  // of the f32 master weights (written by AdamW with every update: adamw_step's compute_copy),
  // gradients stay f32. Gradients are reset to zero.
  void to(Device device, DType compute_dtype = DType::F32);
  Device device() const { return flat_params_.device(); }
  DType compute_dtype() const { return flat_compute_.defined() ? flat_compute_.dtype() : DType::F32; }
  // How the ops run (bf16 CPU GEMMs, the CUDA attention kernel): set once where the model is
  // placed (train::execution builds it from the run's settings); every layer passes it to its ops.
  void set_execution(const ops::Execution& ex) { execution_ = ex; }
  const ops::Execution& execution() const { return execution_; }
  // The bf16 copy the forward reads (undefined in f32 mode); refresh_compute_copy() re-derives it
  // from the master weights after they were written directly.
  Tensor* compute_copy() { return flat_compute_.defined() ? &flat_compute_ : nullptr; }
  void refresh_compute_copy();
  // (name, f32 master view) in Hugging Face order: what checkpoints save. An error once the master
  // weights are sharded (gather them, then views_of()).
  std::vector<std::pair<std::string, Tensor>> master_parameters() const;
  // (name, view) of every parameter in a whole flat buffer laid out as the model's (P elements).
  std::vector<std::pair<std::string, Tensor>> views_of(const Tensor& flat) const;
  // ZeRO with a compute copy (bf16 on GPUs): keep only elements [begin, end) of the f32 master
  // weights; the layers read the compute copy, which stays whole. flat_parameters() is then that
  // piece, load_parameters() writes the compute copy and the piece, and the caller refreshes the
  // rest of the compute copy after each update (all-gather). Without a compute copy (the CPU's
  // f32 mode, where the masters are what the layers read) an f32 one is made first: no memory is
  // saved then, which is why the trainer shards the masters only where a bf16 copy exists.
  void shard_master_weights(int64_t begin, int64_t end);
  bool masters_sharded() const { return masters_sharded_; }
  int64_t master_offset() const { return master_offset_; }

  // Flat buffers: every parameter / gradient is a view into these (master weights, f32).
  Tensor& flat_parameters() { return flat_params_; }
  Tensor& flat_gradients() { return flat_grads_; }
  const Tensor& flat_parameters() const { return flat_params_; }
  const Tensor& flat_gradients() const { return flat_grads_; }
  // Zeroes the flat gradient buffer, or without one (release_gradient_buffer) drops every
  // parameter's own gradient tensor.
  void zero_grad();
  // ZeRO stage 2: no flat gradient buffer; each parameter's gradient becomes a tensor of its own,
  // allocated by the backward pass and released by dist::GradientReducer once reduce-scattered.
  // flat_gradients() is undefined from here on.
  void release_gradient_buffer();
  // Weight decay applies to 2-D weights (projections, embeddings), not to norm scales.
  std::vector<ops::DecaySegment> decay_segments() const;
  NamedParameters parameters() const { return named_parameters(); }
  // Copies named tensors (Hugging Face names) into the parameters; every parameter must be given
  // with its exact shape, and no unknown name is accepted. `source` names the origin in errors.
  void load_parameters(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& source);
  // The same, streaming: `names` are the tensors on offer and `read(name)` fetches one (F32 or
  // BF16), which is copied into its parameter and dropped before the next is read, so the import
  // holds the model plus one tensor. Names are checked before any tensor is read.
  void load_parameters(const std::vector<std::string>& names, const std::function<Tensor(const std::string&)>& read,
                       const std::string& source);
  // Compute every layer's K/V even when the plan reads none of them (what the paper does). Off by
  // default: skipping gives the same loss and gradients, which a test checks with this switch.
  void set_compute_unused_kv(bool on) { compute_unused_kv_ = on; }
  // Activation recomputation per decoder layer (train.recompute: layer): the same gradients, bit
  // for bit, for a fraction of the activation memory and about one more forward pass of time.
  void set_recompute(bool on) { recompute_ = on; }
  bool recompute() const { return recompute_; }
  // Cached inference step (see layers/kv_cache.h).
  friend Tensor forward_cached(const Transformer& model, const Tensor& tokens, KVCache& cache,
                               const std::vector<int64_t>* logit_positions);

 private:
  Variable final_hidden(const Tensor& tokens, const RoutingPlan& plan, const Positions& at) const;
  Variable head(const Variable& hidden) const;

  ModelConfig config_;
  std::shared_ptr<Embedding> embed_tokens_;
  std::vector<std::shared_ptr<DecoderLayer>> layers_;
  std::shared_ptr<RMSNorm> norm_;
  std::shared_ptr<Linear> lm_head_;  // null when tied to embed_tokens
  // Points every parameter's data at its slice of the compute buffer and its gradient at the
  // flat gradient buffer.
  void bind_views();

  Tensor flat_params_, flat_grads_;
  Tensor flat_compute_;  // bf16 copy of flat_params_ in mixed precision; undefined otherwise
  bool masters_sharded_ = false;
  int64_t master_offset_ = 0;  // of flat_params_ in the parameter order, when sharded
  bool compute_unused_kv_ = false;
  bool recompute_ = false;
  ops::Execution execution_;
};

}  // namespace kvroute::layers
