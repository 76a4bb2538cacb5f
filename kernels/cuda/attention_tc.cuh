// Tensor-core attention for bf16 storage (mma.sync m16n8k16, f32 accumulation), the alternative
// to the CUDA-core kernels of attention.cu. Same contract as cuda::attention_forward/backward.
#pragma once

#include <cstdint>

#include "kernels/cuda/cuda_ops.h"

namespace kvroute::cuda {

bool attention_tc_supports(int device, int64_t head_dim);  // sm_80+ and head_dim 32, 64, 128
void attention_forward_tc(int device, const ops::AttentionShape& s, const void* q, const void* k, const void* v,
                          float softmax_scale, void* out, float* lse);
// delta[b, h, t] = sum_d dout * out, computed by the caller.
void attention_backward_tc(int device, const ops::AttentionShape& s, const void* dout, const void* q, const void* k,
                           const void* v, const float* lse, const float* delta, float softmax_scale, void* dq,
                           void* dk, void* dv);

}  // namespace kvroute::cuda
