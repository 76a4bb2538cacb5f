#include "layers/transformer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "autograd/functions.h"
#include "core/allocator.h"
#include "core/rng.h"
#include "layers/kv_cache.h"

namespace kvroute::layers {

namespace ag = autograd;

// ---- Config ------------------------------------------------------------------------------------

const char* architecture_name(Architecture a) {
  switch (a) {
    case Architecture::Qwen3: return "qwen3";
    case Architecture::Llama: return "llama";
    case Architecture::Mistral: return "mistral";
  }
  return "?";
}

const char* rope_scaling_name(RopeScaling s) { return s == RopeScaling::Llama3 ? "llama3" : "none"; }

ops::RopeConfig ModelConfig::rope() const {
  ops::RopeConfig r;
  r.theta = rope_theta;
  if (rope_scaling == RopeScaling::Llama3) {
    r.llama3_factor = rope_factor;
    r.low_freq_factor = rope_low_freq_factor;
    r.high_freq_factor = rope_high_freq_factor;
    r.original_max_position = static_cast<double>(rope_original_max_position);
  }
  return r;
}

void ModelConfig::validate() const {
  auto positive = [](const char* key, int64_t v) { KV_CHECK(v > 0, "model.{}: must be > 0, got {}", key, v); };
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("num_layers", num_layers);
  positive("num_heads", num_heads);
  positive("num_kv_heads", num_kv_heads);
  positive("head_dim", head_dim);
  positive("intermediate_size", intermediate_size);
  positive("max_seq_len", max_seq_len);
  KV_CHECK(num_heads % num_kv_heads == 0, "model.num_heads: {} is not a multiple of model.num_kv_heads {}",
           num_heads, num_kv_heads);
  KV_CHECK(head_dim % 2 == 0, "model.head_dim: must be even for rotary embeddings, got {}", head_dim);
  KV_CHECK(rope_theta > 0, "model.rope_theta: must be > 0, got {}", rope_theta);
  KV_CHECK(rms_norm_eps > 0, "model.rms_norm_eps: must be > 0, got {}", rms_norm_eps);
  if (rope_scaling == RopeScaling::Llama3) {
    KV_CHECK(rope_factor >= 1, "model.rope_factor: must be >= 1 for llama3 rope scaling, got {}", rope_factor);
    KV_CHECK(rope_low_freq_factor > 0 && rope_high_freq_factor > rope_low_freq_factor,
             "model.rope_high_freq_factor {} must exceed model.rope_low_freq_factor {} > 0", rope_high_freq_factor,
             rope_low_freq_factor);
    KV_CHECK(rope_original_max_position > 0, "model.rope_original_max_position: must be > 0, got {}",
             rope_original_max_position);
  }
  KV_CHECK(architecture != Architecture::Qwen3 || qk_norm,
           "model.qk_norm: false is not a Qwen3 model (Qwen3 has QK-norm); set model.architecture: llama");
  KV_CHECK(architecture == Architecture::Qwen3 || !qk_norm,
           "model.qk_norm: {} has no QK-norm; set model.qk_norm: false or model.architecture: qwen3",
           architecture_name(architecture));
  KV_CHECK(sliding_window == 0 || architecture == Architecture::Mistral,
           "model.sliding_window: only Mistral models have one (model.architecture is {})", architecture_name(architecture));
  KV_CHECK(sliding_window == 0 || sliding_window >= max_seq_len,
           "model.sliding_window {} is shorter than model.max_seq_len {}: kvroute attends over the whole context, "
           "so positions beyond the window would not match the model; set model.max_seq_len <= {}",
           sliding_window, max_seq_len, sliding_window);
  KV_CHECK(init_std > 0, "model.init_std: must be > 0, got {}", init_std);
  KV_CHECK(kv_weight_layers.empty() || static_cast<int64_t>(kv_weight_layers.size()) == num_layers,
           "model: kv_weight_layers has {} entries for {} layers", kv_weight_layers.size(), num_layers);
  KV_CHECK(kv_weight_layers.empty() || kv_weight_layers[0], "model: layer 0 must own K/V projection weights");
}

bool ModelConfig::layer_has_kv_weights(int64_t layer) const {
  return kv_weight_layers.empty() || kv_weight_layers[static_cast<size_t>(layer)];
}

// ---- Building blocks -----------------------------------------------------------------------------

Linear::Linear(int64_t in_features, int64_t out_features)
    : weight_(register_parameter("weight", {out_features, in_features})) {}

Variable Linear::forward(const Variable& x, const ops::Execution& ex) const { return ag::linear(x, weight_, ex); }

Embedding::Embedding(int64_t vocab_size, int64_t dim) : weight_(register_parameter("weight", {vocab_size, dim})) {}

Variable Embedding::forward(const Tensor& tokens) const { return ag::embedding(weight_, tokens); }

RMSNorm::RMSNorm(int64_t dim, double eps) : weight_(register_parameter("weight", {dim})), eps_(static_cast<float>(eps)) {}

Variable RMSNorm::forward(const Variable& x) const { return ag::rms_norm(x, weight_, eps_); }

Variable RMSNorm::forward(const Variable& x, DType out_dtype) const {
  return ag::rms_norm(x, weight_, eps_, out_dtype);
}

Variable Rotary::apply(const Variable& x, const Positions& at) const {
  return ag::rope(x, config_, at.offset, at.positions);
}

Attention::Attention(const ModelConfig& c, bool has_kv_weights)
    : num_heads_(c.num_heads),
      num_kv_heads_(c.num_kv_heads),
      head_dim_(c.head_dim),
      softmax_scale_(1.0f / std::sqrt(static_cast<float>(c.head_dim))),
      rotary_(c.rope()) {
  // Hugging Face Qwen3Attention order: q, k, v, o, q_norm, k_norm.
  q_proj_ = register_module("q_proj", std::make_shared<Linear>(c.hidden_size, c.num_heads * c.head_dim));
  if (has_kv_weights) {
    k_proj_ = register_module("k_proj", std::make_shared<Linear>(c.hidden_size, c.num_kv_heads * c.head_dim));
    v_proj_ = register_module("v_proj", std::make_shared<Linear>(c.hidden_size, c.num_kv_heads * c.head_dim));
  }
  o_proj_ = register_module("o_proj", std::make_shared<Linear>(c.num_heads * c.head_dim, c.hidden_size));
  if (c.qk_norm) {
    q_norm_ = register_module("q_norm", std::make_shared<RMSNorm>(c.head_dim, c.rms_norm_eps));
    if (has_kv_weights) k_norm_ = register_module("k_norm", std::make_shared<RMSNorm>(c.head_dim, c.rms_norm_eps));
  }
}

LayerKV Attention::project_kv(const Variable& h, const Positions& at, const ops::Execution& ex) const {
  KV_CHECK(has_kv_weights(), "attention: this layer has no K/V projections (a CLA non-leader)");
  const int64_t B = h.data().size(0), T = h.data().size(1);
  Variable k = ag::reshape(k_proj_->forward(h, ex), {B, T, num_kv_heads_, head_dim_});
  if (k_norm_) k = k_norm_->forward(k);
  k = rotary_.apply(k, at);
  Variable v = ag::reshape(v_proj_->forward(h, ex), {B, T, num_kv_heads_, head_dim_});
  return {k, v};
}

Variable Attention::forward(const Variable& h, const LayerKV& kv, const Positions& at,
                           const ops::Execution& ex) const {
  const int64_t B = h.data().size(0), T = h.data().size(1);
  Variable q = ag::reshape(q_proj_->forward(h, ex), {B, T, num_heads_, head_dim_});
  if (q_norm_) q = q_norm_->forward(q);
  q = rotary_.apply(q, at);
  Variable attn = ag::causal_attention(q, kv.k, kv.v, softmax_scale_, ex, at.key_begin);
  return o_proj_->forward(ag::reshape(attn, {B, T, num_heads_ * head_dim_}), ex);
}

SwiGLU::SwiGLU(int64_t hidden, int64_t intermediate) {
  gate_proj_ = register_module("gate_proj", std::make_shared<Linear>(hidden, intermediate));
  up_proj_ = register_module("up_proj", std::make_shared<Linear>(hidden, intermediate));
  down_proj_ = register_module("down_proj", std::make_shared<Linear>(intermediate, hidden));
}

Variable SwiGLU::forward(const Variable& x, const ops::Execution& ex) const {
  Variable gate = gate_proj_->forward(x, ex), up = up_proj_->forward(x, ex);
  return down_proj_->forward(ag::swiglu(gate, up, ag::gemm_input_dtype(gate.data(), ex)), ex);
}

DecoderLayer::DecoderLayer(const ModelConfig& c, bool has_kv_weights) {
  // Hugging Face Qwen3DecoderLayer order: self_attn, mlp, input_layernorm, post_attention_layernorm.
  self_attn_ = register_module("self_attn", std::make_shared<Attention>(c, has_kv_weights));
  mlp_ = register_module("mlp", std::make_shared<SwiGLU>(c.hidden_size, c.intermediate_size));
  input_layernorm_ = register_module("input_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm_ =
      register_module("post_attention_layernorm", std::make_shared<RMSNorm>(c.hidden_size, c.rms_norm_eps));
}

Variable DecoderLayer::forward(const Variable& x, LayerKV* kv_out, const std::vector<LayerKV>& kv_by_layer, int source,
                               const Positions& at, const ops::Execution& ex, bool recompute) const {
  // The norms' outputs feed only projections: bf16 where the GEMMs would round them (gemm_input_dtype).
  const DType gemm_in = ag::gemm_input_dtype(x.data(), ex);
  Variable h = input_layernorm_->forward(x, gemm_in);
  if (kv_out != nullptr) *kv_out = self_attn_->project_kv(h, at, ex);  // kv_out points into kv_by_layer
  const LayerKV& kv = kv_by_layer[static_cast<size_t>(source)];
  auto rest = [this, at, ex, gemm_in](const Variable& x_in, const Variable& h_in, const LayerKV& kv_in) {
    Variable y = ag::add(x_in, self_attn_->forward(h_in, kv_in, at, ex));
    return ag::add(y, mlp_->forward(post_attention_layernorm_->forward(y, gemm_in), ex));
  };
  if (!recompute) return rest(x, h, kv);
  return ag::checkpoint([rest](const std::vector<Variable>& in) { return rest(in[0], in[1], {in[2], in[3]}); },
                        {x, h, kv.k, kv.v});
}

Variable DecoderLayer::forward_cached(const Variable& x, KVCache& cache, int layer, int source,
                                      const ops::Execution& ex) const {
  const int64_t pos = cache.length(), T = x.data().size(1);
  Variable h = input_layernorm_->forward(x);
  if (cache.ragged()) {
    // Rows at different positions: attention (with its RoPE positions and cache rows) row by row;
    // the norms and the MLP stay batched.
    Tensor attn = Tensor::empty(x.data().shape(), x.data().dtype(), x.data().device());
    for (int64_t b = 0; b < cache.batch(); ++b) {
      const int64_t at = cache.row_length(b);
      Variable hb(h.data().slice(0, b, b + 1));
      if (cache.holds(layer)) {
        LayerKV fresh = self_attn_->project_kv(hb, at, ex);
        cache.write_row(layer, b, fresh.k.data(), fresh.v.data());
      }
      LayerKV kv{Variable(cache.row_keys(source, b, at + T)), Variable(cache.row_values(source, b, at + T))};
      attn.slice(0, b, b + 1).copy_(self_attn_->forward(hb, kv, at, ex).data());
    }
    Variable y = ag::add(x, Variable(attn));
    return ag::add(y, mlp_->forward(post_attention_layernorm_->forward(y), ex));
  }
  if (cache.holds(layer)) {
    LayerKV fresh = self_attn_->project_kv(h, pos, ex);
    cache.write(layer, fresh.k.data(), fresh.v.data());
  }
  LayerKV kv{Variable(cache.keys(source, pos + T)), Variable(cache.values(source, pos + T))};
  Variable y = ag::add(x, self_attn_->forward(h, kv, pos, ex));
  return ag::add(y, mlp_->forward(post_attention_layernorm_->forward(y), ex));
}

Tensor forward_cached(const Transformer& model, const Tensor& tokens, KVCache& cache,
                      const std::vector<int64_t>* logit_positions) {
  autograd::NoGradGuard no_grad;
  KV_CHECK(tokens.dim() == 2 && tokens.size(0) == cache.batch(), "forward_cached: tokens {} for a cache of batch {}",
           tokens.shape(), cache.batch());
  Variable x = model.embed_tokens_->forward(tokens);
  for (int l = 0; l < model.num_layers(); ++l) {
    x = model.layers_[static_cast<size_t>(l)]->forward_cached(x, cache, l, cache.plan()[static_cast<size_t>(l)],
                                                                model.execution_);
  }
  if (logit_positions != nullptr) {
    const int64_t B = tokens.size(0), T = tokens.size(1);
    KV_CHECK(static_cast<int64_t>(logit_positions->size()) == B, "forward_cached: {} logit positions for {} rows",
             logit_positions->size(), B);
    Tensor picked = Tensor::empty({B, 1, x.data().size(2)}, x.data().dtype(), x.data().device());
    for (int64_t b = 0; b < B; ++b) {
      const int64_t p = (*logit_positions)[static_cast<size_t>(b)];
      KV_CHECK(p >= 0 && p < T, "forward_cached: logit position {} outside [0, {})", p, T);
      picked.slice(0, b, b + 1).copy_(x.data().slice(0, b, b + 1).slice(1, p, p + 1));
    }
    x = Variable(picked);
  }
  Tensor logits = model.head(model.norm_->forward(x)).data();
  cache.advance(tokens.size(1));
  return logits;
}

// ---- Transformer -------------------------------------------------------------------------------

std::vector<std::pair<std::string, Shape>> ModelConfig::parameter_shapes() const {
  // The order of registration in the modules below (Hugging Face Qwen3's).
  const int64_t H = hidden_size, q = num_heads * head_dim, kv = num_kv_heads * head_dim, F = intermediate_size;
  std::vector<std::pair<std::string, Shape>> out{{"model.embed_tokens.weight", {vocab_size, H}}};
  for (int64_t l = 0; l < num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const bool own_kv = layer_has_kv_weights(l);
    out.push_back({p + "self_attn.q_proj.weight", {q, H}});
    if (own_kv) {
      out.push_back({p + "self_attn.k_proj.weight", {kv, H}});
      out.push_back({p + "self_attn.v_proj.weight", {kv, H}});
    }
    out.push_back({p + "self_attn.o_proj.weight", {H, q}});
    if (qk_norm) {
      out.push_back({p + "self_attn.q_norm.weight", {head_dim}});
      if (own_kv) out.push_back({p + "self_attn.k_norm.weight", {head_dim}});
    }
    out.push_back({p + "mlp.gate_proj.weight", {F, H}});
    out.push_back({p + "mlp.up_proj.weight", {F, H}});
    out.push_back({p + "mlp.down_proj.weight", {H, F}});
    out.push_back({p + "input_layernorm.weight", {H}});
    out.push_back({p + "post_attention_layernorm.weight", {H}});
  }
  out.push_back({"model.norm.weight", {H}});
  if (!tie_embeddings) out.push_back({"lm_head.weight", {vocab_size, H}});
  return out;
}

int64_t ModelConfig::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, shape] : parameter_shapes()) n += shape_numel(shape);
  return n;
}

void ModelConfig::check_fits_in_memory(double bytes_per_parameter, const std::string& what) const {
  const double have = process_memory_limit();
  if (have <= 0) return;  // unknown: nothing to compare with
  const double need = static_cast<double>(parameter_count()) * bytes_per_parameter;
  KV_CHECK(need <= have,
           "model: {} parameters (model.vocab_size {}, hidden_size {}, num_layers {}, intermediate_size {}) need "
           "{:.1f} GB for {}, more than the {:.1f} GB of memory this process may use",
           parameter_count(), vocab_size, hidden_size, num_layers, intermediate_size, need / 1e9, what, have / 1e9);
}

Transformer::Transformer(const ModelConfig& config, uint64_t seed) : config_(config) {
  config_.validate();
  config_.check_fits_in_memory(8, "weights and gradients");
  auto model = register_module("model", std::make_shared<Container>());
  embed_tokens_ = model->add("embed_tokens", std::make_shared<Embedding>(config_.vocab_size, config_.hidden_size));
  auto layer_list = model->add("layers", std::make_shared<Container>());
  for (int64_t l = 0; l < config_.num_layers; ++l) {
    layers_.push_back(layer_list->add(std::to_string(l),
                                      std::make_shared<DecoderLayer>(config_, config_.layer_has_kv_weights(l))));
  }
  norm_ = model->add("norm", std::make_shared<RMSNorm>(config_.hidden_size, config_.rms_norm_eps));
  if (!config_.tie_embeddings) {
    lm_head_ = register_module("lm_head", std::make_shared<Linear>(config_.hidden_size, config_.vocab_size));
  }

  // One flat buffer for the parameters and one for the gradients; each parameter becomes a view.
  NamedParameters params = named_parameters();
  int64_t total = 0;
  for (const auto& [name, p] : params) total += p.data().numel();
  flat_params_ = Tensor::empty({total});
  flat_grads_ = Tensor::zeros({total});
  int64_t offset = 0;
  uint64_t stream = 0;
  for (auto& [name, p] : params) {
    const Shape shape = p.data().shape();
    const int64_t n = p.data().numel();
    Tensor view = flat_params_.slice(0, offset, offset + n).view(shape);
    if (shape.size() == 1) {
      view.fill_(1.0);  // norm scales
    } else {
      const bool residual_out = name.ends_with("o_proj.weight") || name.ends_with("down_proj.weight");
      const double std = config_.scaled_residual_init && residual_out
                             ? config_.init_std / std::sqrt(2.0 * static_cast<double>(config_.num_layers))
                             : config_.init_std;
      fill_normal(view, seed, stream, 0.0f, static_cast<float>(std));
    }
    ++stream;
    p.impl()->data = view;
    p.impl()->name = name;
    p.set_grad(flat_grads_.slice(0, offset, offset + n).view(shape));
    offset += n;
  }
  // The modules' own parameter tensors, now replaced by views of the flat buffer, went back to the
  // CPU pool: return them to the system, or the pool keeps a second model's worth of memory
  // (4 bytes per parameter; 4.7 GB for a 1B model, docs/benchmarks.md 2026-12-07).
  cpu_allocator().empty_cache();
}

void Transformer::bind_views() {
  const Tensor& source = flat_compute_.defined() ? flat_compute_ : flat_params_;
  int64_t offset = 0;
  for (auto& [name, p] : named_parameters()) {
    const Shape shape = p.data().shape();
    const int64_t n = p.data().numel();
    p.impl()->data = source.slice(0, offset, offset + n).view(shape);
    p.set_grad(flat_grads_.slice(0, offset, offset + n).view(shape));
    offset += n;
  }
}

void Transformer::to(Device device, DType compute_dtype) {
  KV_CHECK(compute_dtype == DType::F32 || (compute_dtype == DType::BF16 && device.is_cuda()),
           "transformer: compute dtype {} on {} is not supported (bf16 needs a CUDA device)", compute_dtype, device);
  if (flat_params_.device() != device) flat_params_ = flat_params_.to(device);
  flat_grads_ = Tensor::zeros(flat_params_.shape(), DType::F32, device);
  flat_compute_ = compute_dtype == DType::F32 ? Tensor() : flat_params_.to(compute_dtype);
  bind_views();
}

void Transformer::zero_grad() {
  if (flat_grads_.defined()) {
    flat_grads_.zero_();
  } else {
    for (auto& [name, p] : named_parameters()) p.set_grad(Tensor());
  }
}

void Transformer::release_gradient_buffer() {
  for (auto& [name, p] : named_parameters()) p.set_grad(Tensor());
  flat_grads_ = Tensor();
}

void Transformer::refresh_compute_copy() {
  KV_CHECK(!masters_sharded_, "transformer: the master weights are sharded; the compute copy is refreshed by the "
           "all-gather after each update");
  if (flat_compute_.defined()) flat_compute_.copy_(flat_params_);
}

std::vector<std::pair<std::string, Tensor>> Transformer::views_of(const Tensor& flat) const {
  KV_CHECK(flat.dim() == 1 && flat.is_contiguous() && flat.numel() == parameter_count(),
           "transformer: a flat buffer of {} parameters expected, got {}", parameter_count(), flat.str());
  std::vector<std::pair<std::string, Tensor>> out;
  int64_t offset = 0;
  for (const auto& [name, p] : named_parameters()) {
    const int64_t n = p.data().numel();
    out.emplace_back(name, flat.slice(0, offset, offset + n).view(p.data().shape()));
    offset += n;
  }
  return out;
}

std::vector<std::pair<std::string, Tensor>> Transformer::master_parameters() const {
  KV_CHECK(!masters_sharded_, "transformer: the master weights are sharded over the ranks (dist.zero); gather them "
           "first");
  return views_of(flat_params_);
}

void Transformer::shard_master_weights(int64_t begin, int64_t end) {
  KV_CHECK(!masters_sharded_, "transformer: the master weights are sharded already");
  KV_CHECK(begin >= 0 && begin <= end && end <= parameter_count(), "transformer: master piece [{}, {}) of {} parameters",
           begin, end, parameter_count());
  if (!flat_compute_.defined()) {
    flat_compute_ = flat_params_.clone();
    bind_views();
  }
  flat_params_ = flat_params_.slice(0, begin, end).clone();
  master_offset_ = begin;
  masters_sharded_ = true;
}

std::vector<ops::DecaySegment> Transformer::decay_segments() const {
  std::vector<ops::DecaySegment> segments;
  int64_t offset = 0;
  for (const auto& [name, p] : named_parameters()) {
    const int64_t n = p.data().numel();
    segments.push_back({offset, n, p.data().dim() >= 2});
    offset += n;
  }
  return segments;
}

void Transformer::load_parameters(const std::vector<std::pair<std::string, Tensor>>& tensors, const std::string& source) {
  std::map<std::string, Tensor> given(tensors.begin(), tensors.end());
  std::vector<std::string> names;
  for (const auto& [name, t] : given) names.push_back(name);
  load_parameters(names, [&given](const std::string& name) { return given.at(name); }, source);
}

void Transformer::load_parameters(const std::vector<std::string>& names,
                                  const std::function<Tensor(const std::string&)>& read, const std::string& source) {
  std::set<std::string> given(names.begin(), names.end());
  // Sharded masters: each tensor goes whole into the compute copy and in part into the piece.
  const auto masters = masters_sharded_ ? views_of(flat_compute_) : master_parameters();
  for (const auto& [name, master] : masters) {
    KV_CHECK(given.count(name), "{}: missing parameter '{}' {}", source, name, master.shape());
  }
  for (const auto& [name, master] : masters) given.erase(name);
  KV_CHECK(given.empty(), "{}: unknown parameter '{}' (not in this model's configuration)", source,
           given.empty() ? "" : *given.begin());
  int64_t offset = 0;  // of the tensor in the parameter order
  for (auto [name, master] : masters) {
    const Tensor t = read(name);
    KV_CHECK(t.shape() == master.shape(), "{}: parameter '{}' has shape {} but the model expects {}", source, name,
             t.shape(), master.shape());
    KV_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16,
             "{}: parameter '{}' is {}, expected floating-point weights (F32 or BF16)", source, name, t.dtype());
    const int64_t bad = first_nonfinite(t);
    KV_CHECK(bad < 0, "{}: parameter '{}' holds a non-finite value (NaN or inf) at element {}", source, name, bad);
    master.copy_(t);
    const int64_t n = t.numel();
    if (masters_sharded_) {
      // master is the compute copy's view here; the piece takes the part of t that falls in it.
      const int64_t b = std::max(offset, master_offset_), e = std::min(offset + n, master_offset_ + flat_params_.numel());
      if (e > b) {
        flat_params_.slice(0, b - master_offset_, e - master_offset_)
            .copy_(t.contiguous().view({n}).slice(0, b - offset, e - offset));
      }
    }
    offset += n;
  }
  if (!masters_sharded_) refresh_compute_copy();
}

Variable Transformer::final_hidden(const Tensor& tokens, const RoutingPlan& plan, const Positions& at) const {
  KV_CHECK(tokens.dim() == 2, "transformer: tokens must be [B, T], got {}", tokens.shape());
  KV_CHECK(at.offset + tokens.size(1) <= config_.max_seq_len,
           "transformer: positions up to {} exceed model.max_seq_len {}", at.offset + tokens.size(1),
           config_.max_seq_len);
  KV_CHECK(at.packed() == at.key_begin.defined(), "transformer: packed rows need both positions and key_begin");
  validate_plan(plan, num_layers());
  const std::vector<bool> needed = kv_needed(plan);
  for (int l = 0; l < num_layers(); ++l) {
    KV_CHECK(!needed[l] || config_.layer_has_kv_weights(l),
             "routing plan {}: layer {} is read as a K/V source but has no K/V weights (CLA non-leader)",
             format_plan(plan), l);
  }
  Variable x = embed_tokens_->forward(tokens);
  std::vector<LayerKV> kv(static_cast<size_t>(num_layers()));
  for (int l = 0; l < num_layers(); ++l) {
    // A layer computes K/V only if some layer (itself or a later one) reads them.
    const bool compute = needed[l] || (compute_unused_kv_ && config_.layer_has_kv_weights(l));
    LayerKV* kv_out = compute ? &kv[static_cast<size_t>(l)] : nullptr;
    x = layers_[static_cast<size_t>(l)]->forward(x, kv_out, kv, plan[l], at, execution_, recompute_);
  }
  return norm_->forward(x);
}

Variable Transformer::head(const Variable& hidden) const {
  return ag::linear(hidden, lm_head_ ? lm_head_->weight() : embed_tokens_->weight(), execution_);
}

Variable Transformer::logits(const Tensor& tokens, const RoutingPlan& plan, int64_t position_offset) const {
  return head(final_hidden(tokens, plan, position_offset));
}

Variable Transformer::loss(const Tensor& inputs, const Tensor& targets, const RoutingPlan& plan, int64_t ignore_index,
                           const Positions& at) const {
  KV_CHECK(inputs.shape() == targets.shape(), "transformer.loss: inputs {} and targets {} differ in shape",
           inputs.shape(), targets.shape());
  Variable h = final_hidden(inputs, plan, at);
  // The classifier and the loss fused: no [B * T, vocab] logits tensor.
  return ag::linear_cross_entropy(ag::reshape(h, {-1, config_.hidden_size}),
                                  lm_head_ ? lm_head_->weight() : embed_tokens_->weight(), targets.reshape({-1}),
                                  ignore_index, execution_);
}

}  // namespace kvroute::layers
