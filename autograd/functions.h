// Differentiable functions: coarse and fused, each one forward kernel plus one backward kernel
// from kernels/ops.h, so the tape stays short (a decoder layer is about a dozen nodes).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "autograd/variable.h"
#include "kernels/kernel_args.h"

namespace kvroute::autograd {

Variable add(const Variable& a, const Variable& b);  // same shape
Variable mul(const Variable& a, const Variable& b);  // same shape, element-wise
Variable scale(const Variable& a, float s);
// The GEMMs and the attention take the model's ops::Execution (bf16 CPU GEMMs, the CUDA attention
// kernel); the backward runs with the setting of the forward.
// op(a) @ op(b) on the last two dims; b may be 2-D (shared across a's batch, then trans_a = false).
Variable matmul(const Variable& a, const Variable& b, bool trans_a = false, bool trans_b = false,
                const ops::Execution& ex = {});
// x [..., in] @ weight[out, in]^T (Hugging Face / torch.nn.Linear layout, no bias). With bf16
// GEMMs on the CPU, x is rounded to bf16 once (unless it is bf16 already) for the forward GEMM and
// kept so for the weight gradient's, and the incoming gradient is rounded once for both backward
// GEMMs; dx is f32.
Variable linear(const Variable& x, const Variable& weight, const ops::Execution& ex = {});
// The dtype best given to an activation that only feeds GEMMs: bf16 on the CPU with bf16 GEMMs
// (they would round it anyway, once per GEMM), else the activation's own dtype.
DType gemm_input_dtype(const Tensor& x, const ops::Execution& ex);
Variable reshape(const Variable& x, const Shape& shape);
Variable sum(const Variable& x);   // 0-dim
Variable mean(const Variable& x);  // 0-dim

// weight [V, C] gathered by token ids (i32/u16/u32, any shape) -> [..., C].
Variable embedding(const Variable& weight, const Tensor& tokens);
// RMSNorm over the last dim with a learned scale. out_dtype may be bf16 for an f32 x on the CPU
// (gemm_input_dtype: the output is rounded as it is written); the backward is unchanged.
Variable rms_norm(const Variable& x, const Variable& weight, float eps);
Variable rms_norm(const Variable& x, const Variable& weight, float eps, DType out_dtype);
// Rotary embedding on x [B, T, H, D] (HF rotate-half), positions position_offset + t, or
// positions [B, T] i32 when given (packed rows; ops::rope_forward).
Variable rope(const Variable& x, const ops::RopeConfig& config, int64_t position_offset = 0,
              const Tensor& positions = Tensor());
// silu(gate) * up. out_dtype bf16 for f32 inputs on the CPU (gemm_input_dtype) also rounds the
// gradients of gate and up to bf16: for an MLP, whose gate and up are projections (linear) that
// read nothing but their GEMMs from them.
Variable swiglu(const Variable& gate, const Variable& up);
Variable swiglu(const Variable& gate, const Variable& up, DType out_dtype);
// Causal GQA attention: q [B, Tq, Hq, D], k/v [B, Tk, Hkv, D] (possibly another layer's);
// key_begin [B, T] i32 for packed rows (ops::attention_forward).
Variable causal_attention(const Variable& q, const Variable& k, const Variable& v, float softmax_scale,
                          const ops::Execution& ex = {}, const Tensor& key_begin = Tensor());
// Mean cross-entropy of logits [N, V] against targets [N], ignoring ignore_index; d(logits) is
// computed in the forward pass (fused) and only scaled in the backward. With overwrite_logits the
// gradient is written over the logits buffer (saving one [N, V] tensor): the logits variable must
// not be read afterwards.
Variable cross_entropy(const Variable& logits, const Tensor& targets, int64_t ignore_index = -100,
                       bool overwrite_logits = false);
// The same of the classifier's logits h [N, H] @ weight[V, H]^T, fused (ops::linear_cross_entropy):
// no [N, V] tensor is kept; both gradients are computed in the forward pass.
Variable linear_cross_entropy(const Variable& h, const Variable& weight, const Tensor& targets,
                              int64_t ignore_index = -100, const ops::Execution& ex = {});

// Activation recomputation: out = fn(inputs), run without recording; the backward runs fn again
// with recording on (the same kernels on the same inputs give the same values) and backpropagates
// through that. Only the inputs are kept in between. fn must be deterministic and may read
// parameters (their gradients accumulate as usual); a parameter used inside must not also be used
// outside (its gradient hook would fire twice per pass). With grad mode off, fn(inputs) alone.
Variable checkpoint(const std::function<Variable(const std::vector<Variable>&)>& fn,
                    const std::vector<Variable>& inputs);

}  // namespace kvroute::autograd
