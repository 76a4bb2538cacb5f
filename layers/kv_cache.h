// KVCache for generation under an inference routing plan: only the layers some layer reads (the
// keep-set S) get K/V buffers, [B, max_len, num_kv_heads, head_dim] each, so KV memory is exactly
// |S| / L of a full cache. Layers outside S skip their K/V projections entirely.
#pragma once

#include <vector>

#include "layers/router.h"
#include "layers/transformer.h"

namespace kvroute::layers {

// The dtype of a deployed cache for `model`: its compute dtype; on the CPU with bf16 GEMMs
// (the model's execution().cpu_bf16_gemm, --precision bf16) bf16, half the bytes, which the CPU attention reads
// widened to f32.
DType kv_cache_dtype(const Transformer& model);

class KVCache {
 public:
  // The buffers live on `device` in `dtype`: the model's (Transformer::device / compute_dtype).
  KVCache(const ModelConfig& config, const RoutingPlan& plan, int64_t batch, int64_t max_len,
          Device device = Device::cpu(), DType dtype = DType::F32);

  const RoutingPlan& plan() const { return plan_; }
  int64_t batch() const { return batch_; }
  int64_t length() const { return length_; }  // tokens cached so far (the longest row)
  // Rows of different lengths (prompts of different lengths in one batch): after a right-padded
  // prefill of length() tokens, row b holds only its first lengths[b] (the rest is overwritten by
  // its next tokens, which go to position lengths[b]). Each length at most length().
  void set_row_lengths(const std::vector<int64_t>& lengths);
  bool ragged() const { return ragged_; }
  int64_t row_length(int64_t row) const { return row_length_[static_cast<size_t>(row)]; }
  bool holds(int layer) const { return k_[static_cast<size_t>(layer)].defined(); }
  int kept_layers() const;
  int64_t bytes() const;                       // allocated K/V bytes
  // 2 |S| Hkv D x element bytes (4 for f32, 2 for bf16)
  static int64_t bytes_per_token(const ModelConfig& config, int kept_layers, DType dtype = DType::F32);

  // Stores the K/V of new positions [length, length + T) of `layer`.
  void write(int layer, const Tensor& k, const Tensor& v);
  // Views of positions [0, length + pending) of a layer's cache (read in place by attention).
  Tensor keys(int layer, int64_t upto) const;
  Tensor values(int layer, int64_t upto) const;
  // One row: new positions [row_length(row), + T) and views [1, upto, ...] of its cache.
  void write_row(int layer, int64_t row, const Tensor& k, const Tensor& v);
  Tensor row_keys(int layer, int64_t row, int64_t upto) const;
  Tensor row_values(int layer, int64_t row, int64_t upto) const;
  void advance(int64_t tokens);  // every row gains `tokens`

 private:
  RoutingPlan plan_;
  int64_t batch_, max_len_, length_ = 0;
  std::vector<int64_t> row_length_;
  bool ragged_ = false;
  std::vector<Tensor> k_, v_;
};

// One cached forward step: tokens [B, T] at positions cache.length() ... -> logits [B, T, V]
// (no autograd). Appends the new K/V to the cache and advances it. With `logit_positions` (one
// index in [0, T) per row), only those positions get logits: [B, 1, V] (a prefill needs the last
// prompt position only, and B x T x V logits would dominate its memory).
Tensor forward_cached(const Transformer& model, const Tensor& tokens, KVCache& cache,
                      const std::vector<int64_t>* logit_positions = nullptr);

}  // namespace kvroute::layers
