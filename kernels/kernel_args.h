// Argument structs that the op layer (kernels/ops.h) and both backends (kernels/cpu/cpu_ops.h,
// kernels/cuda/cuda_ops.h) pass around, defined once. nvcc compiles this header, so it stays free
// of fmt and of CUDA types.
#pragma once

#include <cstdint>

namespace kvroute::ops {

// One causal attention call: q [batch, q_len, q_heads, head_dim], k and v
// [batch, kv_len, kv_heads, head_dim]. k/v rows are contiguous within a batch; a prefix view of a
// larger KV cache is read in place through kv_batch_stride.
struct AttentionShape {
  int64_t batch = 0, q_len = 0, kv_len = 0, q_heads = 0, kv_heads = 0, head_dim = 0;
  int64_t kv_batch_stride = 0;  // elements between batches of k/v (0: kv_len * kv_heads * head_dim)
  int64_t kv_stride() const { return kv_batch_stride > 0 ? kv_batch_stride : kv_len * kv_heads * head_dim; }
};

// Which kernel a CUDA attention call runs (the CPU has one). TensorCores applies to bf16 storage
// on sm_80+ with head_dim 32, 64 or 128 and 16-byte aligned rows; any other call falls back to the
// CUDA-core kernel. The op layer holds the process-wide choice (ops::set_attention_kernel).
enum class AttentionKernel { CudaCores, TensorCores };

// AdamW hyper-parameters (torch.optim.AdamW's names and defaults, except weight_decay 0).
struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
};

// A run of the flat buffer belonging to one parameter tensor, and whether it is decayed.
struct DecaySegment {
  int64_t offset = 0;
  int64_t numel = 0;
  bool decay = true;
};

}  // namespace kvroute::ops
