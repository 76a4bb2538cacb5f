// Token embedding lookup and its deterministic backward.
#include <algorithm>
#include <cstring>

#include <omp.h>

#include "kernels/cpu/cpu_ops.h"

namespace kvroute::cpu {

void embedding_forward(const float* weight, const int32_t* tokens, float* out, int64_t n_tokens,
                       int64_t channels) {
#pragma omp parallel for schedule(static) if (n_tokens * channels > (1 << 15))
  for (int64_t i = 0; i < n_tokens; ++i) {
    std::memcpy(out + i * channels, weight + static_cast<int64_t>(tokens[i]) * channels,
                static_cast<size_t>(channels) * sizeof(float));
  }
}

void embedding_backward(const float* dout, const int32_t* tokens, float* dweight, int64_t n_tokens,
                        int64_t channels) {
  // Each thread owns a fixed column range and walks the tokens in order: every dweight element is
  // summed in token order whatever the thread count, with no atomics.
  constexpr int64_t kColumnBlock = 16;
  const int64_t blocks = (channels + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (n_tokens * channels > (1 << 15))
  for (int64_t cb = 0; cb < blocks; ++cb) {
    const int64_t c0 = cb * kColumnBlock, c1 = std::min(channels, c0 + kColumnBlock);
    for (int64_t i = 0; i < n_tokens; ++i) {
      float* row = dweight + static_cast<int64_t>(tokens[i]) * channels;
      const float* g = dout + i * channels;
      for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

}  // namespace kvroute::cpu
