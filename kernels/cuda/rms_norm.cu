// RMSNorm over the last dim: one warp per row for the forward and dx; the weight gradient is
// summed over fixed row chunks, then over the chunks in order, so it is identical on every run.
#include <algorithm>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace kvroute::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / 32;

template <class T>
__global__ void rms_norm_forward_kernel(const T* x, const T* weight, float eps, T* out, float* rstd, int64_t rows,
                                        int64_t channels) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * channels;
  float ss = 0.0f;
  for (int64_t c = lane; c < channels; c += 32) {
    const float v = to_f32(xr[c]);
    ss += v * v;
  }
  ss = warp_sum(ss);
  const float s = rsqrtf(ss / static_cast<float>(channels) + eps);
  if (lane == 0) rstd[row] = s;
  T* yr = out + row * channels;
  for (int64_t c = lane; c < channels; c += 32) yr[c] = from_f32<T>(to_f32(xr[c]) * s * to_f32(weight[c]));
}

template <class T>
__global__ void rms_norm_dx_kernel(const T* dout, const T* x, const T* weight, const float* rstd, T* dx, int64_t rows,
                                   int64_t channels) {
  const int64_t row = blockIdx.x * static_cast<int64_t>(kWarpsPerBlock) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * channels;
  const T* gr = dout + row * channels;
  float dot = 0.0f;
  for (int64_t c = lane; c < channels; c += 32) dot += to_f32(weight[c]) * to_f32(gr[c]) * to_f32(xr[c]);
  dot = warp_sum(dot);
  const float s = rstd[row];
  const float coef = dot * s * s / static_cast<float>(channels);
  T* dxr = dx + row * channels;
  for (int64_t c = lane; c < channels; c += 32) {
    dxr[c] = from_f32<T>(s * (to_f32(weight[c]) * to_f32(gr[c]) - to_f32(xr[c]) * coef));
  }
}

// partial[chunk, c] = sum over the chunk's rows of dout * x * rstd (coalesced over c).
template <class T>
__global__ void rms_norm_dweight_partial_kernel(const T* dout, const T* x, const float* rstd, float* partial,
                                                int64_t rows, int64_t channels, int64_t chunk_rows) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (c >= channels) return;
  const int64_t r1 = min(rows, (chunk + 1) * chunk_rows);
  float acc = 0.0f;
  for (int64_t r = chunk * chunk_rows; r < r1; ++r) acc += to_f32(dout[r * channels + c]) * to_f32(x[r * channels + c]) * rstd[r];
  partial[chunk * channels + c] = acc;
}

__global__ void sum_chunks_kernel(const float* partial, float* dweight, int64_t chunks, int64_t channels) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= channels) return;
  float total = 0.0f;
  for (int64_t k = 0; k < chunks; ++k) total += partial[k * channels + c];
  dweight[c] += total;
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>((rows + kWarpsPerBlock - 1) / kWarpsPerBlock); }

}  // namespace

void rms_norm_forward(int device, DType dtype, const void* x, const void* weight, float eps, void* out, float* rstd,
                      int64_t rows, int64_t channels) {
  if (rows == 0) return;
  cudaStream_t stream = stream_of(device);
  KV_DISPATCH_FLOAT(dtype, T,
                    rms_norm_forward_kernel<T><<<row_blocks(rows), kThreads, 0, stream>>>(
                        static_cast<const T*>(x), static_cast<const T*>(weight), eps, static_cast<T*>(out), rstd,
                        rows, channels));
  KV_LAUNCH_CHECK();
}

void rms_norm_backward(int device, DType dtype, const void* dout, const void* x, const void* weight,
                       const float* rstd, void* dx, float* dweight, int64_t rows, int64_t channels) {
  if (rows == 0) return;
  cudaStream_t stream = stream_of(device);
  // Rows per partial: at least 64, and few enough chunks for one grid dimension (<= 16384).
  const int64_t chunk_rows = std::max<int64_t>(64, (rows + 16383) / 16384);
  const int64_t chunks = (rows + chunk_rows - 1) / chunk_rows;
  Scratch partial(sizeof(float) * static_cast<size_t>(chunks * channels), device);
  const unsigned channel_blocks = static_cast<unsigned>((channels + kThreads - 1) / kThreads);
  KV_DISPATCH_FLOAT(dtype, T, {
    rms_norm_dx_kernel<T><<<row_blocks(rows), kThreads, 0, stream>>>(
        static_cast<const T*>(dout), static_cast<const T*>(x), static_cast<const T*>(weight), rstd,
        static_cast<T*>(dx), rows, channels);
    KV_LAUNCH_CHECK();
    rms_norm_dweight_partial_kernel<T><<<dim3(channel_blocks, static_cast<unsigned>(chunks)), kThreads, 0, stream>>>(
        static_cast<const T*>(dout), static_cast<const T*>(x), rstd, partial.get<float>(), rows, channels, chunk_rows);
  });
  KV_LAUNCH_CHECK();
  sum_chunks_kernel<<<channel_blocks, kThreads, 0, stream>>>(partial.get<float>(), dweight, chunks, channels);
  KV_LAUNCH_CHECK();
}

}  // namespace kvroute::cuda
