// Fused softmax cross-entropy: loss and d(logits) in one pass over each row, without storing the
// softmax. Row losses are summed in row order, so the result does not depend on the thread count.
#include <algorithm>
#include <bit>
#include <cmath>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace kvroute::cpu {

double cross_entropy(const float* logits, const int32_t* targets, int64_t rows, int64_t vocab,
                     int64_t ignore_index, float* dlogits, float grad_scale, int64_t n_valid,
                     uint16_t* dlogits_bf16) {
  const float row_scale = n_valid > 0 ? grad_scale / static_cast<float>(n_valid) : 0.0f;
  std::vector<double> row_loss(static_cast<size_t>(rows), 0.0);
#pragma omp parallel for schedule(static) if (rows * vocab > (1 << 15))
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits + r * vocab;
    float* g = dlogits != nullptr ? dlogits + r * vocab : nullptr;
    uint16_t* g16 = dlogits_bf16 != nullptr ? dlogits_bf16 + r * vocab : nullptr;
    const int64_t target = targets[r];
    if (target == ignore_index) {
      if (g != nullptr) std::fill_n(g, vocab, 0.0f);
      if (g16 != nullptr) std::fill_n(g16, vocab, uint16_t{0});
      continue;
    }
    const float m = max_of(x[0], x + 1, vocab - 1);
    const float target_logit = x[target];  // read before an in-place gradient overwrites it
    float sum = 0.0f;
    if (g != nullptr) {
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < vocab; ++c) {
        float e = fast_exp(x[c] - m);
        g[c] = e;
        sum += e;
      }
      const float norm = row_scale / sum;
      if (g16 != nullptr) {  // the gradient in bf16 only (g is scratch): one pass less
        const float target_grad = g[target] * norm - row_scale;
#pragma omp simd
        for (int64_t c = 0; c < vocab; ++c) g16[c] = round_to_bf16(g[c] * norm);
        g16[target] = round_to_bf16(target_grad);
      } else {
#pragma omp simd
        for (int64_t c = 0; c < vocab; ++c) g[c] *= norm;
        g[target] -= row_scale;
      }
    } else {
#pragma omp simd reduction(+ : sum)
      for (int64_t c = 0; c < vocab; ++c) sum += fast_exp(x[c] - m);
    }
    row_loss[r] = static_cast<double>(m) + std::log(static_cast<double>(sum)) - target_logit;
  }
  double total = 0.0;
  for (double l : row_loss) total += l;
  return total;
}

}  // namespace kvroute::cpu
