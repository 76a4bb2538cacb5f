// Rotary position embedding, Hugging Face rotate-half convention. Angles are computed in double
// and rounded once, so long positions keep full float accuracy.
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace kvroute::cpu {

void rope(const float* x, float* out, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
          const ops::RopeConfig& rope, int64_t position_offset, int sign) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos_table(static_cast<size_t>(seq * half)), sin_table(static_cast<size_t>(seq * half));
  for (int64_t t = 0; t < seq; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const double inv_freq = ops::rope_inv_freq(rope, i, head_dim);
      double angle = static_cast<double>(position_offset + t) * inv_freq;
      cos_table[t * half + i] = static_cast<float>(std::cos(angle));
      sin_table[t * half + i] = static_cast<float>(sign) * static_cast<float>(std::sin(angle));
    }
  }
#pragma omp parallel for collapse(2) schedule(static) if (batch * seq * heads * head_dim > (1 << 15))
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < seq; ++t) {
      const float* cs = cos_table.data() + t * half;
      const float* sn = sin_table.data() + t * half;
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t base = ((b * seq + t) * heads + h) * head_dim;
        const float* xr = x + base;
        float* yr = out + base;
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          float x1 = xr[i], x2 = xr[i + half];
          yr[i] = x1 * cs[i] - x2 * sn[i];
          yr[i + half] = x2 * cs[i] + x1 * sn[i];
        }
      }
    }
  }
}

}  // namespace kvroute::cpu
