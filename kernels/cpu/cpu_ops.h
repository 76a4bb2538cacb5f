// CPU kernels behind kernels/ops.h. Arguments are already checked by the op layer: kernels see
// raw pointers, sizes and leading dimensions, and never throw (they run inside OpenMP regions).
// One file per op family, named as in kernels/cuda/: matmul, elementwise (element-wise ops,
// SwiGLU, reductions), embedding, rms_norm, rope, attention, cross_entropy, adamw.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>
#include <string>

#include "core/dtype.h"
#include "kernels/kernel_args.h"

namespace kvroute::cpu {

// Row-major GEMM: C = alpha * op(A) @ op(B) + beta * C.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
// `batch` GEMMs at element strides stride_a/b/c (stride_b = 0 shares B).
void gemm_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, int64_t stride_a, const float* b, int64_t ldb,
                  int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch);
// A GEMM operand of the bf16 path: f32 values, rounded to bf16 on the way (nearest even), or bf16
// bits read in place; leading dimension and batch stride in elements, in its stored orientation.
struct Bf16Operand {
  const void* data = nullptr;
  bool is_bf16 = false;
  int64_t ld = 0;
  int64_t stride = 0;
};
// The same GEMMs with both operands in bf16 and products accumulated in f32 (oneDNN); only where
// bf16_gemm_supported(). Called outside parallel regions (oneDNN threads itself).
void gemm_batched_bf16(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, Bf16Operand a,
                       Bf16Operand b, float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch);
// The same on operands already in bf16 (raw bits), read in place with leading dimensions lda/ldb in
// their stored orientation (A [M, K] or, transposed, [K, M]); k > 0.
void gemm_batched_bf16_raw(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                           const uint16_t* a, int64_t lda, int64_t stride_a, const uint16_t* b, int64_t ldb,
                           int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch);
// Rows rounded to bf16 (nearest even, as core/dtype.h) into a dense buffer: `rows` x `cols` read
// with leading dimension `ld`, `batch` times at `stride`. Parallel over rows (OpenMP).
void to_bf16(const float* src, int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t batch,
             uint16_t* dst);
// Whether oneDNN reaches bf16 dot-product instructions (AVX512-BF16 or AMX) on this CPU.
bool bf16_gemm_supported();
// The same GEMM in f32 through oneDNN's matmul (operands read in place): the alternative to
// OpenBLAS' sgemm for the f32 path. Called outside parallel regions.
void gemm_batched_f32_dnnl(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                           const float* a, int64_t lda, int64_t stride_a, const float* b, int64_t ldb,
                           int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch);
std::string f32_gemm_impl();  // e.g. "brg:avx512_core"
// Whether ops::matmul's f32 GEMMs go through oneDNN (true with AVX-512) or OpenBLAS.
bool f32_gemm_prefers_dnnl();
// oneDNN's implementation of a bf16 matmul here, e.g. "brg:avx512_core_bf16"; "none" without one.
std::string bf16_gemm_impl();
// oneDNN's effective instruction set: avx512_core_amx, avx512_core_bf16, avx512_core, avx2, ...
std::string cpu_isa_name();

void add(const float* a, const float* b, float* out, int64_t n);
void mul(const float* a, const float* b, float* out, int64_t n);
void scale(float* a, float s, int64_t n);
void axpy(float alpha, const float* x, float* y, int64_t n);
double sum(const float* a, int64_t n);
double sum_squares(const float* a, int64_t n);
void sum_last_dim(const float* a, float* out, int64_t rows, int64_t cols);

void embedding_forward(const float* weight, const int32_t* tokens, float* out, int64_t n_tokens,
                       int64_t channels);
void embedding_backward(const float* dout, const int32_t* tokens, float* dweight, int64_t n_tokens,
                        int64_t channels);

// f32 -> bf16 bits, nearest even: core/dtype.h's float_to_bf16, with finite values rounded inline
// (vectorisable). Every CPU kernel that writes bf16 rounds through this.
inline uint16_t round_to_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  return (u & 0x7F800000u) == 0x7F800000u ? float_to_bf16(x).bits
                                          : static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

// The output goes to `out` (f32) or, where out is null, to `out_bf16` (rounded: the input of bf16
// GEMMs, which would round it anyway).
void rms_norm_forward(const float* x, const float* weight, float eps, float* out, uint16_t* out_bf16, float* rstd,
                      int64_t rows, int64_t channels);
void rms_norm_backward(const float* dout, const float* x, const float* weight, const float* rstd,
                       float* dx, float* dweight, int64_t rows, int64_t channels);

// sign = +1 forward rotation, -1 its transpose (the backward). Token (b, t) sits at position
// positions[b * seq + t] when positions != nullptr (packed rows), else position_offset + t.
void rope(const float* x, float* out, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
          const ops::RopeConfig& rope, int64_t position_offset, int sign, const int32_t* positions = nullptr);

// out (f32) or, where it is null, out_bf16 (rounded), as rms_norm_forward.
void swiglu_forward(const float* gate, const float* up, float* out, uint16_t* out_bf16, int64_t n);
void swiglu_backward(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                     int64_t n);
// The gradients rounded to bf16: they feed only the gate and up projections' bf16 GEMMs.
void swiglu_backward_bf16(const float* dout, const float* gate, const float* up, uint16_t* dgate, uint16_t* dup,
                          int64_t n);

void attention_forward(const ops::AttentionShape& s, const float* q, const float* k, const float* v,
                       float softmax_scale, float* out, float* lse);
// The same with K/V in bf16 (raw bits; a KV cache under --precision bf16): q, out and lse f32.
void attention_forward_bf16_kv(const ops::AttentionShape& s, const float* q, const uint16_t* k, const uint16_t* v,
                               float softmax_scale, float* out, float* lse);
void attention_backward(const ops::AttentionShape& s, const float* dout, const float* q, const float* k,
                        const float* v, const float* out, const float* lse, float softmax_scale,
                        float* dq, float* dk, float* dv);
// Shared by the f32 and the bf16-tile attention kernels (attention.cpp):
// packed rows: the first key block (a multiple of `block`) any of a query tile's `rows` rows sees;
int64_t attention_first_key_block(const int32_t* key_begin, int64_t rows, int64_t block);
// a finished query tile (b, h, rows from t0): out = acc / row_sum, lse = row_max + log(row_sum);
void attention_finish_tile(const ops::AttentionShape& s, int64_t b, int64_t h, int64_t t0, int64_t rows,
                           const float* acc, int64_t ld_acc, const float* row_max, const float* row_sum, float* out,
                           float* lse);
// backward: delta[r] = out_r . dout_r over a query tile (rows of stride q_heads * head_dim), and
// the tile's dq rows zeroed;
void attention_tile_delta(const ops::AttentionShape& s, const float* out_tile, const float* dout_tile, int64_t rows,
                          float* delta, float* dq_tile);
// backward: dk and dv of one (batch, kv head) zeroed (contiguous k/v rows).
void attention_zero_kv_head(const ops::AttentionShape& s, float* dk_head, float* dv_head);

// The same three with bf16 tile products (AVX512-BF16 dot products, f32 accumulation and softmax):
// q, k, v, dout and the tile's probabilities and score gradients are rounded to bf16 as operands.
// Only where bf16_attention_supported(); attention_bf16.cpp.
bool bf16_attention_supported();
void attention_forward_bf16(const ops::AttentionShape& s, const float* q, const float* k, const float* v,
                            float softmax_scale, float* out, float* lse);
void attention_forward_bf16_from_bf16_kv(const ops::AttentionShape& s, const float* q, const uint16_t* k,
                                         const uint16_t* v, float softmax_scale, float* out, float* lse);
void attention_backward_bf16(const ops::AttentionShape& s, const float* dout, const float* q, const float* k,
                             const float* v, const float* out, const float* lse, float softmax_scale, float* dq,
                             float* dk, float* dv);

// Returns the sum of the row losses (rows whose target is ignore_index count 0). n_valid, the
// number of the other rows, is counted by the caller; dlogits (may alias logits) gets
// (softmax - onehot) * grad_scale / n_valid. With dlogits_bf16 also non-null, the gradient goes
// there rounded to bf16 (nearest even) and dlogits is only scratch.
double cross_entropy(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                     int64_t ignore_index, float* dlogits, float grad_scale, int64_t n_valid,
                     uint16_t* dlogits_bf16 = nullptr);

// The classifier and cross_entropy fused (linear_cross_entropy.cpp): logits = h [rows, hidden] @
// w [vocab, hidden]^T in blocks of block_rows scored rows, never stored whole; returns the sum of
// the row losses as cross_entropy does. With dh != nullptr, also dh [rows, hidden] (overwritten;
// 0 on ignored rows) and dw [vocab, hidden] (overwritten) of the loss scaled by grad_scale / n_valid.
// bf16: the GEMM operands rounded to bf16 (only where bf16_gemm_supported()). Called outside
// parallel regions.
double linear_cross_entropy(const float* h, const float* w, const int32_t* targets, int64_t rows, int64_t hidden,
                            int64_t vocab, int64_t ignore_index, float grad_scale, int64_t n_valid, bool bf16,
                            int64_t block_rows, float* dh, float* dw);

// One step over the buffers, which the segments tile; decoupled weight decay on decayed segments.
void adamw(float* param, const float* grad, float* m, float* v, const ops::AdamWConfig& c, int64_t step,
           const ops::DecaySegment* segments, int64_t n_segments);

// max(init, x[0..n)), vectorised with GCC's vector extension (16 lanes: one AVX-512 register, two
// AVX2 ones). `omp simd reduction(max)` over std::max compiles to a scalar vmaxss chain: it was a
// third of the cross-entropy kernel's time. NaN elements are skipped, as std::max(m, x) skips them.
inline float max_of(float init, const float* x, int64_t n) {
  typedef float f32x16 __attribute__((vector_size(64)));
  f32x16 acc;
  for (int l = 0; l < 16; ++l) acc[l] = init;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    f32x16 v;
    __builtin_memcpy(&v, x + i, sizeof v);
    acc = v > acc ? v : acc;
  }
  float m = init;
  for (int l = 0; l < 16; ++l) m = acc[l] > m ? acc[l] : m;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// exp for float, vectorisable; |relative error| < 2e-7 on [-87, 88], 0 below.
// Written so that GCC vectorises loops calling it (std::min/max clamps, bit_cast).
inline float fast_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float kLog2e = 1.44269504088896341f;
  float n = __builtin_floorf(x * kLog2e + 0.5f);
  // Cody-Waite range reduction: r = x - n ln2 in two parts for accuracy.
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t biased_exponent = static_cast<int32_t>(n) + 127;
  return p * std::bit_cast<float>(biased_exponent << 23);
}

}  // namespace kvroute::cpu
