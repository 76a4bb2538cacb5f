#include "layers/kv_cache.h"

#include <algorithm>

#include "autograd/variable.h"
#include "kernels/ops.h"

namespace kvroute::layers {

DType kv_cache_dtype(const Transformer& model) {
  if (!model.device().is_cuda() && model.execution().cpu_bf16_gemm) return DType::BF16;
  return model.compute_dtype();
}

KVCache::KVCache(const ModelConfig& config, const RoutingPlan& plan, int64_t batch, int64_t max_len, Device device,
                 DType dtype)
    : plan_(plan), batch_(batch), max_len_(max_len), row_length_(static_cast<size_t>(std::max<int64_t>(batch, 0)), 0) {
  validate_plan(plan, static_cast<int>(config.num_layers));
  KV_CHECK(batch > 0 && max_len > 0 && max_len <= config.max_seq_len,
           "kv cache: batch {} and length {} must be positive, length at most model.max_seq_len {}", batch, max_len,
           config.max_seq_len);
  const std::vector<bool> needed = kv_needed(plan);
  k_.resize(needed.size());
  v_.resize(needed.size());
  for (size_t l = 0; l < needed.size(); ++l) {
    if (!needed[l]) continue;
    KV_CHECK(config.layer_has_kv_weights(static_cast<int64_t>(l)),
             "kv cache: plan {} reads layer {}, which has no K/V weights", format_plan(plan), l);
    k_[l] = Tensor::empty({batch, max_len, config.num_kv_heads, config.head_dim}, dtype, device);
    v_[l] = Tensor::empty({batch, max_len, config.num_kv_heads, config.head_dim}, dtype, device);
  }
}

int KVCache::kept_layers() const {
  int n = 0;
  for (const Tensor& t : k_) n += t.defined();
  return n;
}

int64_t KVCache::bytes() const {
  int64_t total = 0;
  for (size_t l = 0; l < k_.size(); ++l)
    if (k_[l].defined()) total += static_cast<int64_t>(k_[l].nbytes() + v_[l].nbytes());
  return total;
}

int64_t KVCache::bytes_per_token(const ModelConfig& config, int kept_layers, DType dtype) {
  return 2 * static_cast<int64_t>(kept_layers) * config.num_kv_heads * config.head_dim *
         static_cast<int64_t>(dtype_size(dtype));
}

void KVCache::write(int layer, const Tensor& k, const Tensor& v) {
  KV_CHECK(holds(layer), "kv cache: layer {} keeps no cache under plan {}", layer, format_plan(plan_));
  const int64_t T = k.size(1);
  KV_CHECK(length_ + T <= max_len_, "kv cache: {} cached + {} new tokens exceed the capacity {}", length_, T, max_len_);
  k_[static_cast<size_t>(layer)].slice(1, length_, length_ + T).copy_(k);
  v_[static_cast<size_t>(layer)].slice(1, length_, length_ + T).copy_(v);
}

Tensor KVCache::keys(int layer, int64_t upto) const { return k_[static_cast<size_t>(layer)].slice(1, 0, upto); }
Tensor KVCache::values(int layer, int64_t upto) const { return v_[static_cast<size_t>(layer)].slice(1, 0, upto); }

void KVCache::set_row_lengths(const std::vector<int64_t>& lengths) {
  KV_CHECK(static_cast<int64_t>(lengths.size()) == batch_, "kv cache: {} row lengths for a batch of {}", lengths.size(),
           batch_);
  int64_t longest = 0;
  for (int64_t n : lengths) {
    KV_CHECK(n > 0 && n <= length_, "kv cache: row length {} outside (0, {}]", n, length_);
    longest = std::max(longest, n);
  }
  row_length_ = lengths;
  length_ = longest;
  ragged_ = std::any_of(lengths.begin(), lengths.end(), [&](int64_t n) { return n != longest; });
}

void KVCache::write_row(int layer, int64_t row, const Tensor& k, const Tensor& v) {
  KV_CHECK(holds(layer), "kv cache: layer {} keeps no cache under plan {}", layer, format_plan(plan_));
  const int64_t T = k.size(1), at = row_length(row);
  KV_CHECK(at + T <= max_len_, "kv cache: {} cached + {} new tokens exceed the capacity {}", at, T, max_len_);
  k_[static_cast<size_t>(layer)].slice(0, row, row + 1).slice(1, at, at + T).copy_(k);
  v_[static_cast<size_t>(layer)].slice(0, row, row + 1).slice(1, at, at + T).copy_(v);
}

Tensor KVCache::row_keys(int layer, int64_t row, int64_t upto) const {
  return k_[static_cast<size_t>(layer)].slice(0, row, row + 1).slice(1, 0, upto);
}
Tensor KVCache::row_values(int layer, int64_t row, int64_t upto) const {
  return v_[static_cast<size_t>(layer)].slice(0, row, row + 1).slice(1, 0, upto);
}

void KVCache::advance(int64_t tokens) {
  length_ += tokens;
  for (int64_t& n : row_length_) n += tokens;
}

}  // namespace kvroute::layers
