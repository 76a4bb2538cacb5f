// CUDA kernels behind kernels/ops.h: the .cu files here, or stub.cpp (every function fails with an
// error naming the op) in a build without CUDA. Same raw-pointer conventions as
// kernels/cpu/cpu_ops.h; pointers are device pointers on device `device` unless named host_*.
// Activations may be f32 or bf16 (`dtype`); arithmetic is always f32; statistics saved for the
// backward (rstd, lse) and parameter gradients are f32. Everything runs on the device's compute
// stream (core/device_runtime.h); functions returning a host value synchronise. This header is free
// of fmt (nvcc cannot compile it) and of CUDA types. One file per op family, named as in
// kernels/cpu/: matmul, elementwise (element-wise ops, SwiGLU, reductions), embedding, rms_norm,
// rope, attention (+ attention_tc, the tensor-core variant), cross_entropy, adamw.
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "kernels/kernel_args.h"

namespace kvroute::cuda {

// Loads cuBLASLt (dlopen, on the first GEMM otherwise) and resolves every function kvroute uses;
// returns the library's file name (libcublasLt.so.<major of the toolkit built with>); throws naming
// the library or the missing symbol. Needs no GPU.
const char* load_cublaslt();

// Row-major batched GEMM through cuBLASLt: C = alpha op(A) op(B) + beta C. A and B have dtype
// `ab_dtype`, C has `c_dtype` (f32 accumulation always; bf16 inputs use the tensor cores, f32
// inputs use true f32, no TF32). Descriptors and heuristic results are cached per shape.
void gemm_batched(int device, DType ab_dtype, DType c_dtype, bool trans_a, bool trans_b, int64_t m, int64_t n,
                  int64_t k, float alpha, const void* a, int64_t lda, int64_t stride_a, const void* b, int64_t ldb,
                  int64_t stride_b, float beta, void* c, int64_t ldc, int64_t stride_c, int64_t batch);

// ---- Element-wise (all operands `dtype`, contiguous) -------------------------------------------
void add(int device, DType dtype, const void* a, const void* b, void* out, int64_t n);
void mul(int device, DType dtype, const void* a, const void* b, void* out, int64_t n);
void scale(int device, DType dtype, void* a, float s, int64_t n);
// y += alpha * x; x and y may differ in dtype (a bf16 gradient into an f32 accumulator).
void axpy(int device, float alpha, DType x_dtype, const void* x, DType y_dtype, void* y, int64_t n);
void swiglu_forward(int device, DType dtype, const void* gate, const void* up, void* out, int64_t n);
void swiglu_backward(int device, DType dtype, const void* dout, const void* gate, const void* up, void* dgate,
                     void* dup, int64_t n);

// ---- Reductions: fixed two-pass trees in double, identical on every run ------------------------
double sum(int device, DType dtype, const void* a, int64_t n, bool squares);
void sum_last_dim(int device, DType dtype, const void* a, float* out, int64_t rows, int64_t cols);

// ---- Embedding: token ids come from the host (already range-checked there) ---------------------
void embedding_forward(int device, DType dtype, const void* weight, const int32_t* host_tokens, void* out,
                       int64_t n_tokens, int64_t channels);
// dweight (f32) += scatter of dout. The host groups positions by token; each row of dweight is
// then summed by one thread per channel in token order: deterministic, no atomics.
void embedding_backward(int device, DType dtype, const void* dout, const int32_t* host_tokens, float* dweight,
                        int64_t n_tokens, int64_t channels, int64_t vocab);

// ---- RMSNorm (x, weight, out, dx in `dtype`; rstd, dweight f32) ---------------------------------
void rms_norm_forward(int device, DType dtype, const void* x, const void* weight, float eps, void* out,
                      float* rstd, int64_t rows, int64_t channels);
void rms_norm_backward(int device, DType dtype, const void* dout, const void* x, const void* weight,
                       const float* rstd, void* dx, float* dweight, int64_t rows, int64_t channels);

// ---- RoPE (angles in double, as on the CPU); sign -1 is the backward ----------------------------
// host_positions [batch, seq] (packed rows): each token's position instead of position_offset + t.
void rope(int device, DType dtype, const void* x, void* out, int64_t batch, int64_t seq, int64_t heads,
          int64_t head_dim, const ops::RopeConfig& rope, int64_t position_offset, int sign,
          const int32_t* host_positions = nullptr);

// ---- Causal GQA attention, tiled with an online softmax (no [T, T] matrix) ----------------------
// `kernel` picks the CUDA-core kernel (attention.cu) or the tensor-core one (attention_tc.cu), which
// falls back to the former for calls it does not apply to (see ops::AttentionKernel) and for packed
// rows (s.key_begin, host memory: uploaded here).
bool attention_supports_head_dim(int64_t head_dim);  // 8, 16, 32, 64, 128
void attention_forward(int device, DType dtype, const ops::AttentionShape& s, ops::AttentionKernel kernel,
                       const void* q, const void* k, const void* v, float softmax_scale, void* out, float* lse);
// k, v contiguous here; dq, dk, dv overwritten. Deterministic (no atomics).
void attention_backward(int device, DType dtype, const ops::AttentionShape& s, ops::AttentionKernel kernel,
                        const void* dout, const void* q, const void* k, const void* v, const void* out,
                        const float* lse, float softmax_scale, void* dq, void* dk, void* dv);

// ---- Fused classifier: loss and d(logits) in one read of the logits -----------------------------
// Same contract as cpu::cross_entropy: returns the sum of the row losses (rows whose target is
// ignore_index count 0); n_valid, the number of the other rows, is counted by the caller. dlogits
// (same dtype as logits, may alias them) gets (softmax - onehot) * grad_scale / n_valid.
double cross_entropy(int device, DType dtype, const void* logits, const int32_t* host_targets, int64_t rows,
                     int64_t vocab, int64_t ignore_index, void* dlogits, float grad_scale, int64_t n_valid);

// ---- AdamW on the flat f32 master buffers ------------------------------------------------------
// Same arithmetic as the CPU kernel (torch.optim.AdamW); the segments (on the host) tile [0, n).
// When compute_copy is non-null it receives the updated parameters rounded to `copy_dtype` (the
// bf16 weights the next forward reads).
void adamw(int device, float* param, const float* grad, float* m, float* v, int64_t n,
           const ops::AdamWConfig& config, int64_t step, const ops::DecaySegment* host_segments,
           int64_t n_segments, void* compute_copy, DType copy_dtype);

}  // namespace kvroute::cuda
