// AdamW on the flat f32 master buffers, one grid-stride pass: each element finds its parameter's
// segment (decayed or not) by binary search, and in mixed precision the updated parameter is also
// written to the bf16 compute copy the next forward reads. Same arithmetic as kernels/cpu/adamw.cpp.
#include <cmath>
#include <vector>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace kvroute::cuda {

namespace {

constexpr int kThreads = 256;

template <class C>
__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n, ops::AdamWConfig c,
                             float step_size, float bias2_sqrt, const int64_t* seg_start, const uint8_t* seg_decay,
                             int n_segments, C* copy) {
  KV_GRID_STRIDE(i, n) {
    // The segment holding i: the last start <= i (binary search over a few hundred entries).
    int lo = 0, hi = n_segments - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (seg_start[mid] <= i) lo = mid;
      else hi = mid - 1;
    }
    const float decay_factor = seg_decay[lo] ? 1.0f - c.lr * c.weight_decay : 1.0f;
    const float g = grad[i];
    const float mi = c.beta1 * m[i] + (1.0f - c.beta1) * g;
    const float vi = c.beta2 * v[i] + (1.0f - c.beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / bias2_sqrt + c.eps;
    const float p = param[i] * decay_factor - step_size * mi / denom;
    param[i] = p;
    if (copy != nullptr) copy[i] = from_f32<C>(p);
  }
}

}  // namespace

void adamw(int device, float* param, const float* grad, float* m, float* v, int64_t n, const ops::AdamWConfig& config,
           int64_t step, const ops::DecaySegment* host_segments, int64_t n_segments, void* compute_copy,
           DType copy_dtype) {
  if (n == 0) return;
  cudaStream_t stream = stream_of(device);
  std::vector<int64_t> starts;
  std::vector<uint8_t> decay;
  for (int64_t s = 0; s < n_segments; ++s) {
    if (host_segments[s].numel == 0) continue;
    starts.push_back(host_segments[s].offset);
    decay.push_back(host_segments[s].decay ? 1 : 0);
  }
  DeviceUpload seg_start(starts.data(), starts.size() * sizeof(int64_t), device);
  DeviceUpload seg_decay(decay.data(), decay.size(), device);
  // Bias corrections exactly as the CPU kernel computes them (f32 powf).
  const float bias1 = 1.0f - std::pow(config.beta1, static_cast<float>(step));
  const float bias2_sqrt = std::sqrt(1.0f - std::pow(config.beta2, static_cast<float>(step)));
  const float step_size = config.lr / bias1;
  const int segments = static_cast<int>(starts.size());
  if (compute_copy == nullptr) {
    adamw_kernel<float><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
        param, grad, m, v, n, config, step_size, bias2_sqrt, seg_start.get<int64_t>(), seg_decay.get<uint8_t>(),
        segments, nullptr);
  } else {
    KV_DISPATCH_FLOAT(copy_dtype, C,
                      adamw_kernel<C><<<blocks_for(n, kThreads), kThreads, 0, stream>>>(
                          param, grad, m, v, n, config, step_size, bias2_sqrt, seg_start.get<int64_t>(),
                          seg_decay.get<uint8_t>(), segments, static_cast<C*>(compute_copy)));
  }
  KV_LAUNCH_CHECK();
}

}  // namespace kvroute::cuda
