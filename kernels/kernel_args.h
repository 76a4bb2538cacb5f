// Argument structs that the op layer (kernels/ops.h) and both backends (kernels/cpu/cpu_ops.h,
// kernels/cuda/cuda_ops.h) pass around, defined once. nvcc compiles this header, so it stays free
// of fmt and of CUDA types.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KV_HOST_DEVICE __host__ __device__
#else
#define KV_HOST_DEVICE
#endif

namespace kvroute::ops {

// Rotary embedding frequencies: inv_freq(i) = theta^(-2i/head_dim), optionally rescaled as Llama 3.1
// does (Hugging Face rope_type "llama3"): wavelengths longer than original_max_position /
// low_freq_factor are divided by `factor`, shorter than original_max_position / high_freq_factor
// kept, and those in between interpolated. llama3_factor 0 means no scaling.
struct RopeConfig {
  double theta = 1e6;
  double llama3_factor = 0;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  double original_max_position = 8192;
};

// The inverse frequency of rotated pair i (0 <= i < head_dim / 2), in double; both backends call it.
KV_HOST_DEVICE inline double rope_inv_freq(const RopeConfig& c, int64_t i, int64_t head_dim) {
  const double inv_freq = pow(c.theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
  if (c.llama3_factor <= 0) return inv_freq;
  const double wavelen = 2.0 * 3.14159265358979323846 / inv_freq;
  const double low_freq_wavelen = c.original_max_position / c.low_freq_factor;
  const double high_freq_wavelen = c.original_max_position / c.high_freq_factor;
  if (wavelen > low_freq_wavelen) return inv_freq / c.llama3_factor;
  if (wavelen < high_freq_wavelen) return inv_freq;
  const double smooth =
      (c.original_max_position / wavelen - c.low_freq_factor) / (c.high_freq_factor - c.low_freq_factor);
  return (1.0 - smooth) * inv_freq / c.llama3_factor + smooth * inv_freq;
}

// One causal attention call: q [batch, q_len, q_heads, head_dim], k and v
// [batch, kv_len, kv_heads, head_dim]. k/v rows are contiguous within a batch; a prefix view of a
// larger KV cache is read in place through kv_batch_stride.
struct AttentionShape {
  int64_t batch = 0, q_len = 0, kv_len = 0, q_heads = 0, kv_heads = 0, head_dim = 0;
  int64_t kv_batch_stride = 0;  // elements between batches of k/v (0: kv_len * kv_heads * head_dim)
  // Packed rows (several sequences per row, q_len == kv_len): [batch, q_len], the first key each
  // query sees, key_begin[b][t] <= t (its sequence's first token); nullptr: every query sees key 0.
  // Host memory for both backends (the CUDA kernels upload it).
  const int32_t* key_begin = nullptr;
  int64_t kv_stride() const { return kv_batch_stride > 0 ? kv_batch_stride : kv_len * kv_heads * head_dim; }
};

// Which kernel a CUDA attention call runs (the CPU has one). TensorCores applies to bf16 storage
// on sm_80+ with head_dim 32, 64 or 128 and 16-byte aligned rows; any other call falls back to the
// CUDA-core kernel.
enum class AttentionKernel { CudaCores, TensorCores };

// How the ops of one model run: passed to each GEMM and attention call, never a process-wide mode.
// Built once from train.device/precision/attention or --device/--precision (train::execution) and
// carried by the model (layers::Transformer::execution()); the default is plain f32.
struct Execution {
  // CPU GEMMs: operands rounded to bf16, f32 accumulation (oneDNN), as PyTorch's CPU autocast
  // does; only true where the CPU has bf16 instructions (ops::cpu_bf16_supported).
  bool cpu_bf16_gemm = false;
  AttentionKernel attention = AttentionKernel::CudaCores;  // the CUDA attention kernel
};

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
