// Causal attention with GQA on the CPU, flash-attention style: queries in tiles of kQueryTile rows,
// keys in blocks of kKeyTile, an online softmax, and only the per-row log-sum-exp saved for the
// backward. Tile products are OpenBLAS sgemm calls reading q/k/v in place ([B, T, H, D] rows with
// leading dimension H*D), single-threaded inside our OpenMP tasks.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "core/dtype.h"
#include "kernels/cpu/cpu_ops.h"

namespace kvroute::cpu {

namespace {
constexpr int64_t kQueryTile = 64;
constexpr int64_t kKeyTile = 64;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
}  // namespace

void attention_finish_tile(const ops::AttentionShape& s, int64_t b, int64_t h, int64_t t0, int64_t rows,
                           const float* acc, int64_t ld_acc, const float* row_max, const float* row_sum, float* out,
                           float* lse) {
  const int64_t D = s.head_dim, ldq = s.q_heads * D;
  for (int64_t r = 0; r < rows; ++r) {
    const float inv = 1.0f / row_sum[r];
    float* orow = out + (b * s.q_len + t0 + r) * ldq + h * D;
    const float* ar = acc + r * ld_acc;
#pragma omp simd
    for (int64_t d = 0; d < D; ++d) orow[d] = ar[d] * inv;
    lse[(b * s.q_heads + h) * s.q_len + t0 + r] = row_max[r] + std::log(row_sum[r]);
  }
}

void attention_tile_delta(const ops::AttentionShape& s, const float* out_tile, const float* dout_tile, int64_t rows,
                          float* delta, float* dq_tile) {
  const int64_t D = s.head_dim, ldq = s.q_heads * D;
  for (int64_t r = 0; r < rows; ++r) {
    const float* o = out_tile + r * ldq;
    const float* g = dout_tile + r * ldq;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < D; ++d) dot += o[d] * g[d];
    delta[r] = dot;
    std::fill_n(dq_tile + r * ldq, D, 0.0f);
  }
}

void attention_zero_kv_head(const ops::AttentionShape& s, float* dk_head, float* dv_head) {
  const int64_t D = s.head_dim, ldkv = s.kv_heads * D;
  for (int64_t j = 0; j < s.kv_len; ++j) {
    std::fill_n(dk_head + j * ldkv, D, 0.0f);
    std::fill_n(dv_head + j * ldkv, D, 0.0f);
  }
}

int64_t attention_first_key_block(const int32_t* key_begin, int64_t rows, int64_t block) {
  if (key_begin == nullptr) return 0;
  int64_t first = key_begin[0];
  for (int64_t r = 1; r < rows; ++r) first = std::min<int64_t>(first, key_begin[r]);
  return first / block * block;
}

namespace {
int64_t first_block(const int32_t* key_begin, int64_t rows) {
  return attention_first_key_block(key_begin, rows, kKeyTile);
}
}  // namespace

namespace {
// K/V in f32 are read in place; in bf16 (a CPU KV cache under --precision bf16) each key block is
// widened into a per-thread f32 tile first, so the tile products stay sgemm.
template <typename KV>
void attention_forward_impl(const ops::AttentionShape& s, const float* q, const KV* k, const KV* v,
                            float softmax_scale, float* out, float* lse) {
  constexpr bool kWiden = !std::is_same_v<KV, float>;
  const int64_t D = s.head_dim, group = s.q_heads / s.kv_heads;
  const int64_t ldq = s.q_heads * D, ldkv = s.kv_heads * D;
  const int64_t q_tiles = (s.q_len + kQueryTile - 1) / kQueryTile;
  const int64_t shift = s.kv_len - s.q_len;  // absolute position of query 0
  const int64_t tasks = s.batch * s.q_heads * q_tiles;
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(kQueryTile * kKeyTile));
    std::vector<float> acc(static_cast<size_t>(kQueryTile * D));
    std::vector<float> row_max(kQueryTile), row_sum(kQueryTile);
    std::vector<float> k_tile(kWiden ? static_cast<size_t>(kKeyTile * D) : 0), v_tile(k_tile.size());
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t tile = task % q_tiles;
      const int64_t h = (task / q_tiles) % s.q_heads;
      const int64_t b = task / (q_tiles * s.q_heads);
      const int64_t hk = h / group;
      const int64_t t0 = tile * kQueryTile, rows = std::min(kQueryTile, s.q_len - t0);
      const float* q_tile = q + (b * s.q_len + t0) * ldq + h * D;
      const KV* k_head = k + b * s.kv_stride() + hk * D;
      const KV* v_head = v + b * s.kv_stride() + hk * D;
      std::fill(acc.begin(), acc.begin() + rows * D, 0.0f);
      std::fill(row_max.begin(), row_max.end(), kNegInf);
      std::fill(row_sum.begin(), row_sum.end(), 0.0f);
      const int32_t* key_begin = s.key_begin != nullptr ? s.key_begin + b * s.q_len + t0 : nullptr;
      const int64_t key_end = shift + t0 + rows;  // exclusive: last visible key + 1
      for (int64_t j0 = first_block(key_begin, rows); j0 < key_end; j0 += kKeyTile) {
        const int64_t cols = std::min(kKeyTile, key_end - j0);
        const float *k_rows, *v_rows;
        int64_t ld_rows;
        if constexpr (kWiden) {
          for (int64_t c = 0; c < cols; ++c) {
            const uint16_t* kr = reinterpret_cast<const uint16_t*>(k_head + (j0 + c) * ldkv);
            const uint16_t* vr = reinterpret_cast<const uint16_t*>(v_head + (j0 + c) * ldkv);
            for (int64_t d = 0; d < D; ++d) {
              k_tile[static_cast<size_t>(c * D + d)] = bf16_to_float(bf16{kr[d]});
              v_tile[static_cast<size_t>(c * D + d)] = bf16_to_float(bf16{vr[d]});
            }
          }
          k_rows = k_tile.data();
          v_rows = v_tile.data();
          ld_rows = D;
        } else {
          k_rows = k_head + j0 * ldkv;
          v_rows = v_head + j0 * ldkv;
          ld_rows = ldkv;
        }
        gemm(false, true, rows, cols, D, softmax_scale, q_tile, ldq, k_rows, ld_rows, 0.0f, scores.data(), kKeyTile);
        for (int64_t r = 0; r < rows; ++r) {
          float* sr = scores.data() + r * kKeyTile;
          // Keys j0+lo..j0+hi-1 are visible: causal, and (packed rows) not before the row's sequence.
          const int64_t lo = key_begin != nullptr ? std::max<int64_t>(key_begin[r] - j0, 0) : 0;
          const int64_t hi = std::min(cols, shift + t0 + r + 1 - j0);
          if (hi <= lo) {  // nothing visible in this block: the row's softmax state is unchanged
            std::fill(sr, sr + cols, 0.0f);
            continue;
          }
          const float m = max_of(row_max[r], sr + lo, hi - lo);
          const float correction = fast_exp(row_max[r] - m);  // row_max = -inf -> 0
          float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
          for (int64_t c = lo; c < hi; ++c) {
            float p = fast_exp(sr[c] - m);
            sr[c] = p;
            sum += p;
          }
          for (int64_t c = 0; c < lo; ++c) sr[c] = 0.0f;
          for (int64_t c = hi; c < cols; ++c) sr[c] = 0.0f;
          row_sum[r] = row_sum[r] * correction + sum;
          row_max[r] = m;
          float* ar = acc.data() + r * D;
          if (correction != 1.0f) {
#pragma omp simd
            for (int64_t d = 0; d < D; ++d) ar[d] *= correction;
          }
        }
        gemm(false, false, rows, D, cols, 1.0f, scores.data(), kKeyTile, v_rows, ld_rows, 1.0f, acc.data(), D);
      }
      attention_finish_tile(s, b, h, t0, rows, acc.data(), D, row_max.data(), row_sum.data(), out, lse);
    }
  }
}
}  // namespace

void attention_forward(const ops::AttentionShape& s, const float* q, const float* k, const float* v,
                       float softmax_scale, float* out, float* lse) {
  attention_forward_impl(s, q, k, v, softmax_scale, out, lse);
}

void attention_forward_bf16_kv(const ops::AttentionShape& s, const float* q, const uint16_t* k, const uint16_t* v,
                               float softmax_scale, float* out, float* lse) {
  attention_forward_impl(s, q, k, v, softmax_scale, out, lse);
}

void attention_backward(const ops::AttentionShape& s, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, float softmax_scale,
                        float* dq, float* dk, float* dv) {
  // One task per (batch, kv head): it owns dk/dv of that head and dq of the query heads that
  // read it, so no two threads write the same element and the sums run in a fixed order.
  const int64_t D = s.head_dim, group = s.q_heads / s.kv_heads;
  const int64_t ldq = s.q_heads * D, ldkv = s.kv_heads * D;
  const int64_t shift = s.kv_len - s.q_len;
  const int64_t tasks = s.batch * s.kv_heads;
#pragma omp parallel
  {
    std::vector<float> probs(static_cast<size_t>(kQueryTile * kKeyTile));
    std::vector<float> dprobs(static_cast<size_t>(kQueryTile * kKeyTile));
    std::vector<float> delta(kQueryTile);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t hk = task % s.kv_heads, b = task / s.kv_heads;
      const float* k_head = k + b * s.kv_len * ldkv + hk * D;
      const float* v_head = v + b * s.kv_len * ldkv + hk * D;
      float* dk_head = dk + b * s.kv_len * ldkv + hk * D;
      float* dv_head = dv + b * s.kv_len * ldkv + hk * D;
      attention_zero_kv_head(s, dk_head, dv_head);
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        for (int64_t t0 = 0; t0 < s.q_len; t0 += kQueryTile) {
          const int64_t rows = std::min(kQueryTile, s.q_len - t0);
          const int64_t row0 = (b * s.q_len + t0) * ldq + h * D;
          const float* q_tile = q + row0;
          const float* do_tile = dout + row0;
          float* dq_tile = dq + row0;
          const float* lse_tile = lse + (b * s.q_heads + h) * s.q_len + t0;
          attention_tile_delta(s, out + row0, do_tile, rows, delta.data(), dq_tile);
          const int32_t* key_begin = s.key_begin != nullptr ? s.key_begin + b * s.q_len + t0 : nullptr;
          const int64_t key_end = shift + t0 + rows;
          for (int64_t j0 = first_block(key_begin, rows); j0 < key_end; j0 += kKeyTile) {
            const int64_t cols = std::min(kKeyTile, key_end - j0);
            // P = exp(scale * q k^T - lse), recomputed.
            gemm(false, true, rows, cols, D, softmax_scale, q_tile, ldq, k_head + j0 * ldkv, ldkv, 0.0f,
                 probs.data(), kKeyTile);
            for (int64_t r = 0; r < rows; ++r) {
              float* pr = probs.data() + r * kKeyTile;
              const int64_t lo = key_begin != nullptr ? std::clamp<int64_t>(key_begin[r] - j0, 0, cols) : 0;
              const int64_t hi = std::max(std::min(cols, shift + t0 + r + 1 - j0), lo);
              const float l = lse_tile[r];
              for (int64_t c = 0; c < lo; ++c) pr[c] = 0.0f;
#pragma omp simd
              for (int64_t c = lo; c < hi; ++c) pr[c] = fast_exp(pr[c] - l);
              for (int64_t c = hi; c < cols; ++c) pr[c] = 0.0f;
            }
            // dV += P^T dO
            gemm(true, false, cols, D, rows, 1.0f, probs.data(), kKeyTile, do_tile, ldq, 1.0f,
                 dv_head + j0 * ldkv, ldkv);
            // dP = dO V^T, then dS = P * (dP - delta)
            gemm(false, true, rows, cols, D, 1.0f, do_tile, ldq, v_head + j0 * ldkv, ldkv, 0.0f,
                 dprobs.data(), kKeyTile);
            for (int64_t r = 0; r < rows; ++r) {
              float* dr = dprobs.data() + r * kKeyTile;
              const float* pr = probs.data() + r * kKeyTile;
              const float dl = delta[r];
#pragma omp simd
              for (int64_t c = 0; c < cols; ++c) dr[c] = pr[c] * (dr[c] - dl);
            }
            // dQ += scale * dS K;  dK += scale * dS^T Q
            gemm(false, false, rows, D, cols, softmax_scale, dprobs.data(), kKeyTile, k_head + j0 * ldkv,
                 ldkv, 1.0f, dq_tile, ldq);
            gemm(true, false, cols, D, rows, softmax_scale, dprobs.data(), kKeyTile, q_tile, ldq, 1.0f,
                 dk_head + j0 * ldkv, ldkv);
          }
        }
      }
    }
  }
}

}  // namespace kvroute::cpu
