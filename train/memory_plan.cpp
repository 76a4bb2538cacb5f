#include "train/memory_plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

#include "core/allocator.h"
#include "core/error.h"
#include "core/text.h"
#include "distributed/shard.h"
#include "layers/kv_cache.h"
#include "layers/router.h"

namespace kvroute::train {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Bytes per token of one tensor, rounded up to the allocator's size class at `tokens` tokens.
double tensor_bytes(int64_t tokens, double bytes_per_token) {
  if (bytes_per_token <= 0 || tokens <= 0) return 0;
  return static_cast<double>(allocation_size_class(static_cast<size_t>(static_cast<double>(tokens) * bytes_per_token)));
}

struct Widths {
  double a = 4;      // activation element bytes
  double g = 4;      // a GEMM-only input's element bytes (bf16 where the tape keeps those in bf16)
  bool copy = false;  // linear keeps a bf16 copy of an f32 input (CPU bf16: the output projection's)
};

Widths widths(Precision precision, bool cuda) {
  if (precision != Precision::BF16) return {};
  if (cuda) return {2, 2, false};
  return {4, 2, true};
}

// The tensors (bytes per token) a decoder layer's stored graph keeps for the backward pass, and
// the first `kept` of them: what a recomputed layer keeps (its input, norm, rstd and K/V).
struct LayerTerms {
  std::vector<double> all;
  size_t kept = 0;
};

LayerTerms layer_terms(const layers::ModelConfig& m, bool own_kv, const Widths& w) {
  const double H = static_cast<double>(m.hidden_size), q = static_cast<double>(m.num_heads * m.head_dim),
               kv = static_cast<double>(m.num_kv_heads * m.head_dim), F = static_cast<double>(m.intermediate_size),
               heads = static_cast<double>(m.num_heads), kv_heads = static_cast<double>(m.num_kv_heads);
  LayerTerms t;
  t.all = {w.a * H, 4, w.g * H};  // input (kept by the input norm), its rstd, the norm's output
  if (own_kv) {
    if (m.qk_norm) t.all.insert(t.all.end(), {w.a * kv, 4 * kv_heads});  // k before its norm, rstd
    t.all.insert(t.all.end(), {w.a * kv, w.a * kv});                      // k after RoPE, v
  }
  t.kept = t.all.size();
  if (m.qk_norm) t.all.insert(t.all.end(), {w.a * q, 4 * heads});  // q before its norm, rstd
  t.all.insert(t.all.end(), {w.a * q, w.a * q, 4 * heads});         // q after RoPE, attention output, lse
  if (w.copy) t.all.push_back(2 * q);                               // the output projection's bf16 input
  t.all.insert(t.all.end(), {w.a * H, 4, w.g * H});                  // residual, its rstd, post-attention norm
  t.all.insert(t.all.end(), {w.a * F, w.a * F, w.g * F});            // gate, up, SwiGLU's output
  return t;
}

double sum_bytes(int64_t tokens, const std::vector<double>& terms, size_t count) {
  double total = 0;
  for (size_t i = 0; i < count && i < terms.size(); ++i) total += tensor_bytes(tokens, terms[i]);
  return total;
}

}  // namespace

MemoryDevice memory_device(const std::string& name) {
  if (name == "cpu") return {"cpu (this machine's memory)", process_memory_limit()};
  // What tensors can use after the CUDA context and libraries: about 78 of 80 GiB (H100) and 139
  // of 141 GB (H200).
  if (name == "h100") return {"h100 (78 GiB usable)", 78 * kGiB};
  if (name == "h200") return {"h200 (139 GiB usable)", 139 * kGiB};
  KV_FAIL("--device '{}': expected cpu, h100 or h200", kvroute::excerpt(name, 60));
}

double activation_bytes(const layers::ModelConfig& m, int64_t tokens, Precision precision, bool cuda, bool recompute) {
  const Widths w = widths(precision, cuda);
  double stored = 0, kept = 0, largest_rest = 0;
  for (int64_t l = 0; l < m.num_layers; ++l) {
    const LayerTerms t = layer_terms(m, m.layer_has_kv_weights(l), w);
    const double all = sum_bytes(tokens, t.all, t.all.size()), mine = sum_bytes(tokens, t.all, t.kept);
    stored += all;
    kept += mine;
    largest_rest = std::max(largest_rest, all - mine);
  }
  const double H = static_cast<double>(m.hidden_size), V = static_cast<double>(m.vocab_size),
               F = static_cast<double>(m.intermediate_size);
  // The last layer's output and the final norm's rstd; the fused loss's d(hidden) and d(classifier
  // weight), formed in the forward pass and kept for the backward.
  const double head = tensor_bytes(tokens, w.a * H) + tensor_bytes(tokens, 4) + tensor_bytes(tokens, w.a * H) +
                      static_cast<double>(allocation_size_class(static_cast<size_t>(V * H * 4)));
  // At the start of the backward pass, the gradients in flight through one layer.
  const double transient = tensor_bytes(tokens, w.a * F) + 2 * tensor_bytes(tokens, w.a * H);
  const double backward_peak = (recompute ? kept + largest_rest : stored) + head + transient;
  // On CUDA the classifier's logits exist whole at the end of the forward pass (the CPU forms them
  // in blocks outside the tensor allocator).
  const double forward_peak = (recompute ? kept : stored) + head + (cuda ? tensor_bytes(tokens, w.a * V) : 0.0);
  return std::max(backward_peak, forward_peak);
}

MemoryPlan plan_memory(const RunConfig& config, int world_size) {
  KV_CHECK(world_size >= 1 && world_size <= (1 << 20), "--world-size {}: expected 1 to {}", world_size, 1 << 20);
  const layers::ModelConfig& m = config.model;
  m.validate();
  const bool cuda = config.train.device == Device::Kind::CUDA;
  MemoryPlan p;
  p.world_size = world_size;
  p.parameters = m.parameter_count();
  p.tokens_per_micro_batch = config.train.batch_size * config.train.seq_len;
  // Each a flat buffer, rounded to the allocator's size class as it is allocated (up to 25% more).
  auto flat = [&](double element_bytes) {
    return static_cast<double>(allocation_size_class(static_cast<size_t>(element_bytes * static_cast<double>(p.parameters))));
  };
  // ZeRO: the moments (stage 1) and the reduced gradients (stage 2) cover one rank's piece (the
  // trainer's layout; rank 0 holds the largest).
  const int64_t largest_piece = dist::ShardLayout(p.parameters, config.dist.zero > 0 ? world_size : 1, 0).count();
  auto piece = [&](double element_bytes) {
    return static_cast<double>(allocation_size_class(static_cast<size_t>(element_bytes * static_cast<double>(largest_piece))));
  };
  p.zero = config.dist.zero;
  p.weights = cuda && config.train.precision == Precision::BF16 ? flat(2) : 0;
  // With a bf16 compute copy the f32 masters are only the optimizer's: sharded by ZeRO too.
  p.master_weights = config.dist.zero >= 1 && p.weights > 0 ? piece(4) : flat(4);
  p.gradients = config.dist.zero == 2 ? piece(4) : flat(4);
  p.optimizer = 2 * (config.dist.zero >= 1 ? piece(4) : flat(4));
  p.activations = activation_bytes(m, p.tokens_per_micro_batch, config.train.precision, cuda, false);
  p.activations_recompute = activation_bytes(m, p.tokens_per_micro_batch, config.train.precision, cuda, true);
  p.recompute = config.train.recompute == Recompute::Layer;
  const DType kv_dtype = cuda || config.train.precision == Precision::BF16 ? DType::BF16 : DType::F32;
  for (double r : {1.0, 0.5, 0.25}) {
    const int kept = static_cast<int>(layers::keep_retention(static_cast<int>(m.num_layers), r).size());
    p.kv_cache.emplace_back(r, static_cast<double>(layers::KVCache::bytes_per_token(m, kept, kv_dtype)) *
                                   static_cast<double>(p.tokens_per_micro_batch));
  }
  return p;
}

std::string format_memory_plan(const MemoryPlan& p, const RunConfig& c, const MemoryDevice& device) {
  auto gib = [](double b) {
    return b < kGiB ? fmt::format("{:.1f} MiB", b / (1024.0 * 1024.0)) : fmt::format("{:.2f} GiB", b / kGiB);
  };
  std::vector<std::string> sharded;
  if (p.zero >= 1 && p.weights > 0) sharded.push_back("the f32 master weights");
  if (p.zero >= 1) sharded.push_back("the AdamW moments");
  if (p.zero == 2) sharded.push_back("the reduced gradients");
  const std::string sharding =
      sharded.empty() ? "dist.zero 0: every rank holds all of the below"
                      : fmt::format("dist.zero {}: {} are sharded over the ranks", p.zero, fmt::join(sharded, ", "));
  std::string out = fmt::format(
      "model: {} parameters ({} layers, hidden {}, vocab {}); train.batch_size {} x train.seq_len {} = {} tokens per "
      "micro-batch; {} on {}; {} rank{} ({})\n",
      p.parameters, c.model.num_layers, c.model.hidden_size, c.model.vocab_size, c.train.batch_size, c.train.seq_len,
      p.tokens_per_micro_batch, precision_name(c.train.precision), device_kind_name(c.train.device), p.world_size,
      p.world_size == 1 ? "" : "s", sharding);
  out += fmt::format("  weights (bf16 compute copy)    {:>12}\n", gib(p.weights));
  out += fmt::format("  master weights (f32)           {:>12}\n", gib(p.master_weights));
  out += fmt::format("  gradients (f32)                {:>12}{}\n", gib(p.gradients),
                     p.zero == 2 ? "  (reduced piece; the backward pass holds at most its unfinished buckets more)" : "");
  out += fmt::format("  optimizer state (AdamW, f32)   {:>12}\n", gib(p.optimizer));
  out += fmt::format("  activations, recompute none    {:>12}{}\n", gib(p.activations), p.recompute ? "" : "  <- this config");
  out += fmt::format("  activations, recompute layer   {:>12}{}\n", gib(p.activations_recompute),
                     p.recompute ? "  <- this config" : "");
  out += fmt::format("  total per rank                 {:>12}\n", gib(p.total()));
  out += fmt::format("  KV cache for generation at {} x {} tokens:", c.train.batch_size, c.train.seq_len);
  for (const auto& [r, bytes] : p.kv_cache) out += fmt::format(" retention {:g}: {}", r, gib(bytes));
  out += "\n";
  if (device.bytes <= 0) return out + fmt::format("device {}: its memory is unknown\n", device.name);
  if (p.total() <= device.bytes) {
    return out + fmt::format("fits {}: {} of {} ({:.0f}%)\n", device.name, gib(p.total()), gib(device.bytes),
                             100.0 * p.total() / device.bytes);
  }
  out += fmt::format("does not fit {}: {} needed, {} available\n", device.name, gib(p.total()), gib(device.bytes));
  const bool cuda = c.train.device == Device::Kind::CUDA;
  if (p.model_state() > device.bytes) {
    // Say what ZeRO stage 2 would need: the weights the layers read stay whole on every rank (the
    // bf16 copy, or on the CPU the f32 masters); the rest divides by the ranks.
    const double whole = p.weights > 0 ? p.weights
                                       : static_cast<double>(allocation_size_class(static_cast<size_t>(4.0 * p.parameters)));
    const double sharded = (p.weights > 0 ? 16.0 : 12.0) * static_cast<double>(p.parameters);
    const double room = device.bytes - whole - p.activations_recompute;
    const int ranks = room > 0 ? static_cast<int>(std::ceil(sharded / room)) : 0;
    out += fmt::format("  the model state alone ({}) exceeds the device: ", gib(p.model_state()));
    out += ranks > 0 ? fmt::format("with dist.zero=2 and train.recompute=layer it needs at least {} ranks{}\n", ranks,
                                   ranks <= p.world_size && p.zero == 2 ? " (the size classes of the pieces push it over)" : "")
                     : "the weights alone (every rank holds them whole, also with dist.zero=2) leave no room for the "
                       "activations\n";
    return out;
  }
  if (p.zero < 2 && p.world_size > 1) {
    // A cheaper fix than a smaller batch: shard what can be sharded.
    RunConfig zero2 = c;
    zero2.dist.zero = 2;
    const MemoryPlan z = plan_memory(zero2, p.world_size);
    if (z.total() <= device.bytes) out += "  would fit with dist.zero=2\n";
  }
  std::vector<std::string> fixes;
  const double room = device.bytes - p.model_state();
  if (!p.recompute && p.activations_recompute <= room) fixes.push_back("train.recompute=layer");
  for (bool recompute : {p.recompute, true}) {
    // The largest micro-batch that fits; train.global_batch_tokens keeps the step's batch.
    for (int64_t b = c.train.batch_size - 1; b >= 1; --b) {
      if (activation_bytes(c.model, b * c.train.seq_len, c.train.precision, cuda, recompute) <= room) {
        fixes.push_back(fmt::format("train.batch_size={}{} (train.global_batch_tokens keeps the step's tokens)", b,
                                    recompute && !p.recompute ? " with train.recompute=layer" : ""));
        break;
      }
    }
    if (p.recompute) break;
  }
  if (cuda && c.train.precision != Precision::BF16) fixes.push_back("train.precision=bf16 (halves the activations)");
  if (fixes.empty()) {
    out += "  no setting of this build makes it fit: shorter train.seq_len or a smaller model\n";
  } else {
    for (const std::string& f : fixes) out += "  would fit with " + f + "\n";
  }
  return out;
}

}  // namespace kvroute::train
