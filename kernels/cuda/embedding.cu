// Token embedding lookup and its deterministic backward: the host groups the positions of each
// token (the ids are there anyway for the range check), then one thread per channel sums a token's
// rows in order, so there are no atomics and the result is identical on every run.
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace kvroute::cuda {

namespace {

constexpr int kThreads = 256;

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

}  // namespace

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
