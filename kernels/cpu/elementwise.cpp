// Element-wise ops (add, mul, scale, axpy, SwiGLU) and reductions on f32 buffers. Reductions
// accumulate in double over fixed-size blocks summed in order, so the result is the same for any
// thread count. Mirrors kernels/cuda/elementwise.cu.
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace kvroute::cpu {

namespace {
constexpr int64_t kParallelMin = 1 << 15;
constexpr int64_t kReduceBlock = 1 << 14;

template <class BlockFn>
double blocked_sum(int64_t n, BlockFn&& block_sum) {
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
#pragma omp parallel for schedule(static) if (blocks > 1)
  for (int64_t bi = 0; bi < blocks; ++bi) {
    int64_t begin = bi * kReduceBlock, end = std::min(n, begin + kReduceBlock);
    partial[bi] = block_sum(begin, end);
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}
}  // namespace

void add(const float* a, const float* b, float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void mul(const float* a, const float* b, float* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}

void scale(float* a, float s, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) a[i] *= s;
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

double sum(const float* a, int64_t n) {
  return blocked_sum(n, [a](int64_t begin, int64_t end) {
    double s = 0.0;
    for (int64_t i = begin; i < end; ++i) s += a[i];
    return s;
  });
}

double sum_squares(const float* a, int64_t n) {
  return blocked_sum(n, [a](int64_t begin, int64_t end) {
    double s = 0.0;
    for (int64_t i = begin; i < end; ++i) s += static_cast<double>(a[i]) * a[i];
    return s;
  });
}

void sum_last_dim(const float* a, float* out, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0.0;
    for (int64_t c = 0; c < cols; ++c) s += a[r * cols + c];
    out[r] = static_cast<float>(s);
  }
}

void swiglu_forward(const float* gate, const float* up, float* out, uint16_t* out_bf16, int64_t n) {
  if (out != nullptr) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      float g = gate[i];
      float sig = 1.0f / (1.0f + fast_exp(-g));
      out[i] = g * sig * up[i];
    }
  } else {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
    for (int64_t i = 0; i < n; ++i) {
      float g = gate[i];
      float sig = 1.0f / (1.0f + fast_exp(-g));
      out_bf16[i] = round_to_bf16(g * sig * up[i]);
    }
  }
}

void swiglu_backward(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                     int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    float sig = 1.0f / (1.0f + fast_exp(-g));
    float silu = g * sig;
    float d = dout[i];
    dup[i] = d * silu;
    dgate[i] = d * up[i] * sig * (1.0f + g * (1.0f - sig));
  }
}

void swiglu_backward_bf16(const float* dout, const float* gate, const float* up, uint16_t* dgate, uint16_t* dup,
                          int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    float g = gate[i];
    float sig = 1.0f / (1.0f + fast_exp(-g));
    float silu = g * sig;
    float d = dout[i];
    dup[i] = round_to_bf16(d * silu);
    dgate[i] = round_to_bf16(d * up[i] * sig * (1.0f + g * (1.0f - sig)));
  }
}

}  // namespace kvroute::cpu
