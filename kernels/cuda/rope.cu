// Rotary position embedding (Hugging Face rotate-half convention), one thread per rotated pair.
// Angles are computed in double and rounded once, exactly as kernels/cpu/rope.cpp does.
#include <memory>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace kvroute::cuda {

namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void rope_kernel(const T* x, T* out, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                            ops::RopeConfig rope, int64_t position_offset, float sign, const int32_t* positions) {
  const int64_t half = head_dim / 2;
  const int64_t n = batch * seq * heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half;
    const int64_t row = idx / half;  // (b, t, h)
    const int64_t t = (row / heads) % seq, b = row / (heads * seq);
    const int64_t position = positions != nullptr ? positions[b * seq + t] : position_offset + t;
    // Double-precision angle, rounded once, exactly as the CPU kernel does.
    const double inv_freq = ops::rope_inv_freq(rope, i, head_dim);
    const double angle = static_cast<double>(position) * inv_freq;
    double sd, cd;
    sincos(angle, &sd, &cd);
    const float cs = static_cast<float>(cd), sn = sign * static_cast<float>(sd);
    const int64_t base = row * head_dim;
    const float x1 = to_f32(x[base + i]), x2 = to_f32(x[base + i + half]);
    out[base + i] = from_f32<T>(x1 * cs - x2 * sn);
    out[base + i + half] = from_f32<T>(x2 * cs + x1 * sn);
  }
}

}  // namespace

void rope(int device, DType dtype, const void* x, void* out, int64_t batch, int64_t seq, int64_t heads,
          int64_t head_dim, const ops::RopeConfig& rope, int64_t position_offset, int sign,
          const int32_t* host_positions) {
  const int64_t n = batch * seq * heads * (head_dim / 2);
  if (n == 0) return;
  cudaStream_t stream = stream_of(device);
  std::unique_ptr<DeviceUpload> positions;
  if (host_positions != nullptr)
    positions = std::make_unique<DeviceUpload>(host_positions, sizeof(int32_t) * static_cast<size_t>(batch * seq), device);
  KV_DISPATCH_FLOAT(dtype, T,
                    rope_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                        static_cast<const T*>(x), static_cast<T*>(out), batch, seq, heads, head_dim,
                        rope, position_offset, static_cast<float>(sign),
                        positions ? positions->get<int32_t>() : nullptr));
  KV_LAUNCH_CHECK();
}

}  // namespace kvroute::cuda
