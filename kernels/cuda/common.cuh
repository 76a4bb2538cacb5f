// Shared helpers of the CUDA kernels: the compute stream, launch geometry, f32/bf16 loads and
// stores (all arithmetic is f32), warp and block reductions, per-op device buffers (defined in
// common.cu). Included only by kernels/cuda/*.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/cuda_check.h"
#include "core/device_runtime.h"

namespace kvroute::cuda {

inline cudaStream_t stream_of(int device) {
  KV_CUDA_CHECK(cudaSetDevice(device));
  return static_cast<cudaStream_t>(device_runtime::cuda_stream(device));
}

// Grid-stride launches: enough blocks to fill the GPU, never more than the work.
inline unsigned blocks_for(int64_t n, int threads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > 65535LL * 16) blocks = 65535LL * 16;
  return static_cast<unsigned>(blocks);
}

#define KV_LAUNCH_CHECK() KV_CUDA_CHECK(cudaGetLastError())

// for (i = this thread's first element; i < n; i += the whole grid), with blocks_for's grid.
#define KV_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
// The order of additions is fixed by the launch geometry, so the result is deterministic.
__device__ __forceinline__ float block_sum(float v, float* scratch /* >= 32 floats */) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

// Device buffer of host data, uploaded through the pinned staging path on the compute stream and
// owned by the caching allocator (freed in stream order).
class DeviceUpload {
 public:
  DeviceUpload(const void* host, size_t nbytes, int device);
  ~DeviceUpload();
  DeviceUpload(const DeviceUpload&) = delete;
  DeviceUpload& operator=(const DeviceUpload&) = delete;
  template <class T>
  const T* get() const {
    return static_cast<const T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  size_t nbytes_ = 0;
  int device_ = 0;
};

// Scratch device memory from the caching allocator, for the lifetime of one op.
class Scratch {
 public:
  Scratch(size_t nbytes, int device);
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  template <class T>
  T* get() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  size_t nbytes_ = 0;
  int device_ = 0;
};

}  // namespace kvroute::cuda

// Runs `body` with `T` bound to the storage type of `dtype` (f32 or bf16).
#define KV_DISPATCH_FLOAT(dtype, T, ...)                                               \
  do {                                                                                 \
    if ((dtype) == ::kvroute::DType::F32) {                                            \
      using T = float;                                                                 \
      __VA_ARGS__;                                                                     \
    } else if ((dtype) == ::kvroute::DType::BF16) {                                    \
      using T = __nv_bfloat16;                                                         \
      __VA_ARGS__;                                                                     \
    } else {                                                                           \
      ::kvroute::throw_message("CUDA kernel: only f32 and bf16 tensors are supported"); \
    }                                                                                  \
  } while (0)
