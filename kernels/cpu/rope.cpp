// Rotary position embedding, Hugging Face rotate-half convention. Angles are computed in double
// and rounded once, so long positions keep full float accuracy.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace kvroute::cpu {

void rope(const float* x, float* out, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
          const ops::RopeConfig& rope, int64_t position_offset, int sign, const int32_t* positions) {
  const int64_t half = head_dim / 2;
  // One table row per position in use: positions 0..max (packed rows) or offset + t.
  int64_t table_rows = seq;
  if (positions != nullptr) {
    table_rows = 0;
    for (int64_t i = 0; i < batch * seq; ++i) table_rows = std::max<int64_t>(table_rows, positions[i] + 1);
  }
  std::vector<float> cos_table(static_cast<size_t>(table_rows * half)), sin_table(cos_table.size());
  for (int64_t row = 0; row < table_rows; ++row) {
    const int64_t position = positions != nullptr ? row : position_offset + row;
    for (int64_t i = 0; i < half; ++i) {
      const double inv_freq = ops::rope_inv_freq(rope, i, head_dim);
      double angle = static_cast<double>(position) * inv_freq;
      cos_table[row * half + i] = static_cast<float>(std::cos(angle));
      sin_table[row * half + i] = static_cast<float>(sign) * static_cast<float>(std::sin(angle));
    }
  }
#pragma omp parallel for collapse(2) schedule(static) if (batch * seq * heads * head_dim > (1 << 15))
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < seq; ++t) {
      const int64_t row = positions != nullptr ? positions[b * seq + t] : t;
      const float* cs = cos_table.data() + row * half;
      const float* sn = sin_table.data() + row * half;
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
