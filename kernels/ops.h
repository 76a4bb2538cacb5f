// Every op of kvroute, declared once. Each op checks its arguments here (shapes, dtypes, devices)
// and dispatches to the backend of its tensors' device (kernels/cpu/, kernels/cuda/). Layouts:
// activations are row-major [..., C]; attention tensors are [B, T, H, D] (the natural output of a
// projection, so no transposes are needed); weights follow Hugging Face, Linear as [out, in].
// Dtypes: the CPU kernels are f32. On CUDA, activations may also be bf16 (f32 arithmetic inside
// every kernel); the tensors of one call share a dtype, except where an op names an f32 operand
// (saved statistics rstd/lse, parameter gradients, optimizer state). Reductions return a host
// 0-dim f32 tensor (on CUDA they wait for the device).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "kernels/kernel_args.h"

namespace kvroute::ops {

// ---- GEMM ------------------------------------------------------------------------------------
// out = alpha * op(a) @ op(b) + beta * out, op(x) = x or x^T (last two dims).
// a: [..., M, K] ([..., K, M] if trans_a); b: [..., K, N] ([..., N, K] if trans_b) or 2-D (shared
// by every batch); out: [..., M, N]. Transposed views (strides) are read in place, not copied.
// a and b share a dtype; out has it too, or is f32 (bf16 inputs accumulated into an f32 result,
// how parameter gradients are formed in mixed precision). On the CPU, ex.cpu_bf16_gemm rounds the
// f32 operands to bf16 and accumulates in f32 (oneDNN); an operand already in bf16 (an activation
// rounded once for several GEMMs) is read in place; the result is f32.
void matmul_into(const Tensor& a, const Tensor& b, Tensor& out, bool trans_a = false,
                 bool trans_b = false, float alpha = 1.0f, float beta = 0.0f, const Execution& ex = {});
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false,
              const Execution& ex = {});
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, DType out_dtype,
              const Execution& ex = {});

// One line naming the CPU GEMM path `ex` takes, for logs and benchmarks, e.g.
// "bf16 GEMMs via oneDNN brg:avx512_core_bf16 (ISA avx512_core_bf16)" or "f32 GEMMs via OpenBLAS
// (ISA avx2)".
std::string cpu_matmul_description(const Execution& ex);
// Whether this CPU can run bf16 GEMMs; the one-line notice printed when bf16 falls back to f32.
bool cpu_bf16_supported();
std::string cpu_bf16_fallback_notice();

// ---- Element-wise (same shape and dtype) ---------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& a, float s);
void add_into(const Tensor& a, const Tensor& b, Tensor& out);  // out may alias a or b
void mul_into(const Tensor& a, const Tensor& b, Tensor& out);
void scale_(Tensor& a, float s);
void axpy_(float alpha, const Tensor& x, Tensor& y);  // y += alpha * x (on CUDA x may be bf16, y f32)

// ---- Reductions over all elements (accumulated in double; 0-dim f32 result) ---------------------
Tensor sum(const Tensor& a);
Tensor mean(const Tensor& a);
Tensor squared_norm(const Tensor& a);  // sum of squares
double squared_norm_f64(const Tensor& a);  // the same, before its rounding to f32 (0 when empty)
// Rows: out[r] = sum_c a[r, c] over the last dim.
Tensor sum_last_dim(const Tensor& a);

// ---- Embedding -------------------------------------------------------------------------------
// tokens: i32/u16/u32 of any shape, on any device (ids are range-checked on the host, so host
// tokens spare a device round trip); weight [V, C] -> out [..., C] in the weight's dtype.
Tensor embedding_forward(const Tensor& weight, const Tensor& tokens);
// dweight[V, C] (f32) += scatter of dout by tokens. Deterministic: the result is bit-identical for
// any thread count and on every CUDA run.
void embedding_backward(const Tensor& dout, const Tensor& tokens, Tensor& dweight);

// ---- RMSNorm over the last dim ------------------------------------------------------------------
// out = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps) saved per row ([rows], f32).
// On the CPU, out may be bf16 for an f32 x (rounded as written: the input of bf16 GEMMs).
void rms_norm_forward(const Tensor& x, const Tensor& weight, float eps, Tensor& out, Tensor& rstd);
// dx = rstd * (w*dout - x * rstd^2 * mean(w*dout*x)); dweight += sum_rows(dout * x * rstd).
// dx is overwritten; dweight is accumulated (deterministically).
void rms_norm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight, const Tensor& rstd,
                       Tensor& dx, Tensor& dweight);

// ---- Rotary position embedding (Hugging Face rotate-half convention) ----------------------------
// x [B, T, H, D], D even: for i < D/2 and position p = position_offset + t,
// angle = p * inv_freq(i) (kernel_args.h: theta^(-2i/D), optionally Llama-3 scaled);
// out[i] = x[i] cos - x[i+D/2] sin; out[i+D/2] = x[i+D/2] cos + x[i] sin.
// Packed rows (several sequences per row): `positions` [B, T] i32 (host memory, as token ids) gives
// each token's position in its own sequence instead (position_offset must then be 0).
void rope_forward(const Tensor& x, const RopeConfig& rope, int64_t position_offset, Tensor& out,
                  const Tensor& positions = Tensor());
void rope_backward(const Tensor& dout, const RopeConfig& rope, int64_t position_offset, Tensor& dx,
                   const Tensor& positions = Tensor());

// ---- SwiGLU: out = silu(gate) * up ------------------------------------------------------------
// On the CPU, out (forward) and dgate/dup (backward, both) may be bf16 for f32 inputs, as rms_norm.
void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out);
void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup);

// ---- Causal attention with GQA; K/V may come from another layer than Q -------------------------
// q [B, Tq, Hq, D]; k, v [B, Tk, Hkv, D] with Hq % Hkv == 0 (query head h reads kv head
// h / (Hq/Hkv)) and Tk >= Tq: query t sits at position Tk - Tq + t and sees keys 0..that position
// (decoding with a cache is Tq < Tk). out [B, Tq, Hq, D]; lse [B, Hq, Tq] the log-sum-exp of the
// scaled scores, saved for the backward. Tiled online softmax: no [T, T] score matrix is stored.
// k/v may be a prefix view (dim 1) of a larger [B, T_max, Hkv, D] KV cache: read in place. On the
// CPU, k and v may be bf16 with f32 q (a bf16 KV cache, forward only): read widened to f32.
// ex.attention picks the CUDA kernel (the CPU has one). Packed rows (several sequences per row,
// Tq == Tk): key_begin [B, Tq] i32 (host memory, as token ids) holds the first key each query sees,
// the row index of its sequence's first token (key_begin[b][t] <= t), so no query sees another
// sequence. On CUDA, packed rows run on the CUDA-core kernel (the tensor-core one reads no bounds).
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, float softmax_scale,
                       Tensor& out, Tensor& lse, const Execution& ex = {}, const Tensor& key_begin = Tensor());
// Recomputes the scores tile by tile from q, k and lse. dq, dk, dv are overwritten.
void attention_backward(const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse, float softmax_scale, Tensor& dq,
                        Tensor& dk, Tensor& dv, const Execution& ex = {}, const Tensor& key_begin = Tensor());

// The CUDA attention kernels (AttentionKernel in kernels/kernel_args.h). CudaCores is the default
// until the two kernels are measured against each other; TensorCores falls back to it where it
// does not apply.
const char* attention_kernel_name(AttentionKernel kernel);  // "cuda_cores" or "tensor_cores"
// The kernel of that name; any other name is an error naming it and the choices.
AttentionKernel parse_attention_kernel(const std::string& name);

// ---- Fused cross-entropy ------------------------------------------------------------------------
// logits [N, V] f32, targets [N] (i32/u16/u32). Returns the mean loss over targets != ignore_index
// (0-dim f32; 0 when every target is ignored). When dlogits is non-null it receives
// (softmax - onehot) * grad_scale / n_valid in the same pass (rows of ignored targets get 0);
// dlogits may be the logits tensor itself (in place), saving one [N, V] buffer.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index,
                     Tensor* dlogits = nullptr, float grad_scale = 1.0f);

// The classifier fused with it: h [N, H] and weight [V, H] (a Linear's [out, in], e.g. tied
// embeddings) give logits = h @ weight^T, and the same mean loss as cross_entropy of them. With
// dh/dweight non-null (shapes of h and weight; dweight f32), both receive their gradient of the
// loss scaled by grad_scale (overwritten). On the CPU the logits exist one block of rows at a time
// and rows of ignored targets skip the GEMMs; ex.cpu_bf16_gemm rounds the GEMM operands to bf16 as
// matmul does. On CUDA it is matmul, cross_entropy and matmul composed.
Tensor linear_cross_entropy(const Tensor& h, const Tensor& weight, const Tensor& targets, int64_t ignore_index,
                            const Execution& ex = {}, Tensor* dh = nullptr, Tensor* dweight = nullptr,
                            float grad_scale = 1.0f);

// ---- AdamW on flat buffers --------------------------------------------------------------------
// AdamWConfig and DecaySegment are in kernels/kernel_args.h (shared with the kernels).
// One step (step >= 1, for bias correction) over param/grad/m/v (same numel, f32, contiguous).
// Decoupled weight decay: param -= lr * wd * param on decayed segments, then the Adam update.
// Segments must cover the buffer exactly once. compute_copy (optional, same numel, f32 or bf16)
// receives the updated parameters in its dtype: the bf16 weights of mixed precision, written in
// the same pass over the f32 master weights.
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& config,
                int64_t step, const std::vector<DecaySegment>& segments, Tensor* compute_copy = nullptr);

// ---- Casts ------------------------------------------------------------------------------------
Tensor cast(const Tensor& x, DType dtype);  // f32 <-> bf16 round to nearest even (and ints)

}  // namespace kvroute::ops
