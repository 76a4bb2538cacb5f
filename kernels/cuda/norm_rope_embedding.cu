// Row-wise kernels: RMSNorm forward/backward (one warp per row), RoPE, and the embedding
// lookup and its deterministic backward.
#include <algorithm>
#include <vector>

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

template <class T>
__global__ void rope_kernel(const T* x, T* out, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                            double theta, int64_t position_offset, float sign) {
  const int64_t half = head_dim / 2;
  const int64_t n = batch * seq * heads * half;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx % half;
    const int64_t row = idx / half;  // (b, t, h)
    const int64_t t = (row / heads) % seq;
    // Double-precision angle, rounded once, exactly as the CPU kernel does.
    const double inv_freq = pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(head_dim));
    const double angle = static_cast<double>(position_offset + t) * inv_freq;
    double sd, cd;
    sincos(angle, &sd, &cd);
    const float cs = static_cast<float>(cd), sn = sign * static_cast<float>(sd);
    const int64_t base = row * head_dim;
    const float x1 = to_f32(x[base + i]), x2 = to_f32(x[base + i + half]);
    out[base + i] = from_f32<T>(x1 * cs - x2 * sn);
    out[base + i + half] = from_f32<T>(x2 * cs + x1 * sn);
  }
}

template <class T>
__global__ void embedding_forward_kernel(const T* weight, const int32_t* tokens, T* out, int64_t n_tokens,
                                         int64_t channels) {
  const int64_t n = n_tokens * channels;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / channels, c = idx % channels;
    out[idx] = weight[static_cast<int64_t>(tokens[i]) * channels + c];
  }
}

// Block (u, channel block): unique token u sums its positions (sorted) in order.
template <class T>
__global__ void embedding_backward_kernel(const T* dout, const int32_t* positions, const int32_t* unique_tokens,
                                          const int32_t* starts, float* dweight, int64_t channels) {
  const int64_t c = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= channels) return;
  const int u = blockIdx.x;
  float acc = 0.0f;
  for (int32_t p = starts[u]; p < starts[u + 1]; ++p) acc += to_f32(dout[static_cast<int64_t>(positions[p]) * channels + c]);
  dweight[static_cast<int64_t>(unique_tokens[u]) * channels + c] += acc;
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

void rope(int device, DType dtype, const void* x, void* out, int64_t batch, int64_t seq, int64_t heads,
          int64_t head_dim, float theta, int64_t position_offset, int sign) {
  const int64_t n = batch * seq * heads * (head_dim / 2);
  if (n == 0) return;
  cudaStream_t stream = stream_of(device);
  KV_DISPATCH_FLOAT(dtype, T,
                    rope_kernel<T><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                        static_cast<const T*>(x), static_cast<T*>(out), batch, seq, heads, head_dim,
                        static_cast<double>(theta), position_offset, static_cast<float>(sign)));
  KV_LAUNCH_CHECK();
}

void embedding_forward(int device, DType dtype, const void* weight, const int32_t* host_tokens, void* out,
                       int64_t n_tokens, int64_t channels) {
  if (n_tokens == 0) return;
  cudaStream_t stream = stream_of(device);
  DeviceUpload tokens(host_tokens, sizeof(int32_t) * static_cast<size_t>(n_tokens), device);
  KV_DISPATCH_FLOAT(dtype, T,
                    embedding_forward_kernel<T><<<blocks_for(n_tokens * channels, kThreads), kThreads, 0, stream>>>(
                        static_cast<const T*>(weight), tokens.get<int32_t>(), static_cast<T*>(out), n_tokens,
                        channels));
  KV_LAUNCH_CHECK();
}

void embedding_backward(int device, DType dtype, const void* dout, const int32_t* host_tokens, float* dweight,
                        int64_t n_tokens, int64_t channels, int64_t vocab) {
  if (n_tokens == 0) return;
  cudaStream_t stream = stream_of(device);
  // Counting sort of positions by token (stable): positions of one token stay in order.
  std::vector<int32_t> count(static_cast<size_t>(vocab) + 1, 0);
  for (int64_t i = 0; i < n_tokens; ++i) ++count[static_cast<size_t>(host_tokens[i]) + 1];
  std::vector<int32_t> unique_tokens, starts;
  for (int64_t t = 0; t < vocab; ++t) {
    if (count[static_cast<size_t>(t) + 1] > 0) {
      unique_tokens.push_back(static_cast<int32_t>(t));
      starts.push_back(count[static_cast<size_t>(t)]);
    }
    count[static_cast<size_t>(t) + 1] += count[static_cast<size_t>(t)];
  }
  starts.push_back(static_cast<int32_t>(n_tokens));
  std::vector<int32_t> next(count.begin(), count.end() - 1), positions(static_cast<size_t>(n_tokens));
  for (int64_t i = 0; i < n_tokens; ++i) positions[static_cast<size_t>(next[static_cast<size_t>(host_tokens[i])]++)] = static_cast<int32_t>(i);
  DeviceUpload d_positions(positions.data(), positions.size() * sizeof(int32_t), device);
  DeviceUpload d_unique(unique_tokens.data(), unique_tokens.size() * sizeof(int32_t), device);
  DeviceUpload d_starts(starts.data(), starts.size() * sizeof(int32_t), device);
  const dim3 grid(static_cast<unsigned>(unique_tokens.size()), static_cast<unsigned>((channels + kThreads - 1) / kThreads));
  KV_DISPATCH_FLOAT(dtype, T,
                    embedding_backward_kernel<T><<<grid, kThreads, 0, stream>>>(
                        static_cast<const T*>(dout), d_positions.get<int32_t>(), d_unique.get<int32_t>(),
                        d_starts.get<int32_t>(), dweight, channels));
  KV_LAUNCH_CHECK();
}

}  // namespace kvroute::cuda
