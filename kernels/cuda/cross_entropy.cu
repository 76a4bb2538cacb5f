// The fused classifier: one block per row reads the logits once for an online max / sum of
// exponentials, then (when asked) writes d(logits) = (softmax - onehot) * scale in a second sweep,
// in place if dlogits aliases the logits. No softmax is materialised; row losses are summed by the
// deterministic reduction of elementwise.cu.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_ops.h"

namespace kvroute::cuda {

namespace {

constexpr int kThreads = 512;

template <class T>
__global__ void cross_entropy_kernel(const T* logits, const int32_t* targets, int64_t vocab, int64_t ignore_index,
                                     T* dlogits, float row_scale, float* row_loss) {
  __shared__ float scratch[32];
  __shared__ float target_logit;
  const int64_t row = blockIdx.x;
  const T* x = logits + row * vocab;
  const int64_t target = targets[row];
  if (target == ignore_index) {
    if (dlogits != nullptr) {
      for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) dlogits[row * vocab + c] = from_f32<T>(0.0f);
    }
    if (threadIdx.x == 0) row_loss[row] = 0.0f;
    return;
  }
  // Online max and sum of exp per thread, then merged across the block.
  float m = -INFINITY, s = 0.0f;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
    const float v = to_f32(x[c]);
    if (v > m) {
      s = s * __expf(m - v) + 1.0f;
      m = v;
    } else {
      s += __expf(v - m);
    }
  }
  if (threadIdx.x == 0) target_logit = to_f32(x[target]);  // before an in-place gradient overwrites it
  const float row_max = block_max(m, scratch);
  s = m == -INFINITY ? 0.0f : s * __expf(m - row_max);
  const float total = block_sum(s, scratch);  // syncs: target_logit is visible after this
  if (threadIdx.x == 0) row_loss[row] = row_max + logf(total) - target_logit;
  if (dlogits != nullptr) {
    const float norm = row_scale / total;
    T* g = dlogits + row * vocab;
    for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
      float p = __expf(to_f32(x[c]) - row_max) * norm;
      if (c == target) p -= row_scale;
      g[c] = from_f32<T>(p);
    }
  }
}

}  // namespace

double cross_entropy(int device, DType dtype, const void* logits, const int32_t* host_targets, int64_t rows,
                     int64_t vocab, int64_t ignore_index, void* dlogits, float grad_scale, int64_t n_valid) {
  if (rows == 0) return 0.0;
  cudaStream_t stream = stream_of(device);
  DeviceUpload targets(host_targets, sizeof(int32_t) * static_cast<size_t>(rows), device);
  Scratch row_loss(sizeof(float) * static_cast<size_t>(rows), device);
  const float row_scale = n_valid > 0 ? grad_scale / static_cast<float>(n_valid) : 0.0f;
  KV_DISPATCH_FLOAT(dtype, T,
                    cross_entropy_kernel<T><<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(
                        static_cast<const T*>(logits), targets.get<int32_t>(), vocab, ignore_index,
                        static_cast<T*>(dlogits), row_scale, row_loss.get<float>()));
  KV_LAUNCH_CHECK();
  return sum(device, DType::F32, row_loss.get<float>(), rows, /*squares=*/false);
}

}  // namespace kvroute::cuda
