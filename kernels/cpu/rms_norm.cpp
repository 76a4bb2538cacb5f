// RMSNorm over the last dim. The weight gradient is reduced over fixed row chunks summed in
// order, so it is bit-identical for any thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace kvroute::cpu {

void rms_norm_forward(const float* x, const float* weight, float eps, float* out, uint16_t* out_bf16, float* rstd,
                      int64_t rows, int64_t channels) {
#pragma omp parallel for schedule(static) if (rows * channels > (1 << 14))
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * channels;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < channels; ++c) ss += xr[c] * xr[c];
    float s = 1.0f / std::sqrt(ss / static_cast<float>(channels) + eps);
    rstd[r] = s;
    if (out != nullptr) {
      float* yr = out + r * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) yr[c] = xr[c] * s * weight[c];
    } else {
      uint16_t* yr = out_bf16 + r * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) yr[c] = round_to_bf16(xr[c] * s * weight[c]);
    }
  }
}

void rms_norm_backward(const float* dout, const float* x, const float* weight, const float* rstd,
                       float* dx, float* dweight, int64_t rows, int64_t channels) {
  constexpr int64_t kRowChunk = 64;
  const int64_t chunks = (rows + kRowChunk - 1) / kRowChunk;
  std::vector<float> partial(static_cast<size_t>(chunks * channels), 0.0f);
  const float inv_c = 1.0f / static_cast<float>(channels);
#pragma omp parallel for schedule(static) if (rows * channels > (1 << 14))
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    float* dw = partial.data() + chunk * channels;
    const int64_t r1 = std::min(rows, (chunk + 1) * kRowChunk);
    for (int64_t r = chunk * kRowChunk; r < r1; ++r) {
      const float* xr = x + r * channels;
      const float* gr = dout + r * channels;
      float* dxr = dx + r * channels;
      const float s = rstd[r];
      float dot = 0.0f;  // sum_c (w_c g_c x_c)
#pragma omp simd reduction(+ : dot)
      for (int64_t c = 0; c < channels; ++c) dot += weight[c] * gr[c] * xr[c];
      const float coef = dot * s * s * inv_c;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        dxr[c] = s * (weight[c] * gr[c] - xr[c] * coef);
        dw[c] += gr[c] * xr[c] * s;
      }
    }
  }
#pragma omp parallel for schedule(static) if (chunks * channels > (1 << 14))
  for (int64_t c = 0; c < channels; ++c) {
    float total = 0.0f;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) total += partial[chunk * channels + c];
    dweight[c] += total;
  }
}

}  // namespace kvroute::cpu
