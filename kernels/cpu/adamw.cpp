// AdamW on flat f32 buffers with decoupled weight decay, segment by segment (each parameter's run
// of the buffer is decayed or not). Mirrors kernels/cuda/adamw.cu.
#include <cmath>

#include "kernels/cpu/cpu_ops.h"

namespace kvroute::cpu {

namespace {

// One segment: its elements share the decay factor.
void adamw_segment(float* param, const float* grad, float* m, float* v, int64_t n, const ops::AdamWConfig& c,
                   int64_t step, bool decay) {
  // Same arithmetic as torch.optim.AdamW (foreach=False): decay first, then
  // p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps).
  const float bias1 = 1.0f - std::pow(c.beta1, static_cast<float>(step));
  const float bias2_sqrt = std::sqrt(1.0f - std::pow(c.beta2, static_cast<float>(step)));
  const float step_size = c.lr / bias1;
  const float decay_factor = decay ? 1.0f - c.lr * c.weight_decay : 1.0f;
  const float b1 = c.beta1, b2 = c.beta2, eps = c.eps;
#pragma omp parallel for simd schedule(static) if (n > (1 << 15))
  for (int64_t i = 0; i < n; ++i) {
    float g = grad[i];
    float mi = b1 * m[i] + (1.0f - b1) * g;
    float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float denom = std::sqrt(vi) / bias2_sqrt + eps;
    param[i] = param[i] * decay_factor - step_size * mi / denom;
  }
}

}  // namespace

void adamw(float* param, const float* grad, float* m, float* v, const ops::AdamWConfig& c, int64_t step,
           const ops::DecaySegment* segments, int64_t n_segments) {
  for (int64_t s = 0; s < n_segments; ++s) {
    const ops::DecaySegment& seg = segments[s];
    adamw_segment(param + seg.offset, grad + seg.offset, m + seg.offset, v + seg.offset, seg.numel, c, step,
                  seg.decay);
  }
}

}  // namespace kvroute::cpu
