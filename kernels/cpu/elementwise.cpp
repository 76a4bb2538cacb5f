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

namespace {
// SwiGLU's arithmetic, once for the f32 and the bf16 outputs (inlined into vectorised loops).
inline float swiglu_value(float g, float u) { return g * (1.0f / (1.0f + fast_exp(-g))) * u; }
inline void swiglu_grads(float d, float g, float u, float& dgate, float& dup) {
  const float sig = 1.0f / (1.0f + fast_exp(-g));
  dup = d * (g * sig);
  dgate = d * u * sig * (1.0f + g * (1.0f - sig));
}
inline float to_out(float x, float*) { return x; }
inline uint16_t to_out(float x, uint16_t*) { return round_to_bf16(x); }

template <class Out>
void swiglu_forward_into(const float* gate, const float* up, Out* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = to_out(swiglu_value(gate[i], up[i]), out);
}

template <class Out>
void swiglu_backward_into(const float* dout, const float* gate, const float* up, Out* dgate, Out* dup, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    float dg, du;
    swiglu_grads(dout[i], gate[i], up[i], dg, du);
    dgate[i] = to_out(dg, dgate);
    dup[i] = to_out(du, dup);
  }
}
}  // namespace

void swiglu_forward(const float* gate, const float* up, float* out, uint16_t* out_bf16, int64_t n) {
  if (out != nullptr) {
    swiglu_forward_into(gate, up, out, n);
  } else {
    swiglu_forward_into(gate, up, out_bf16, n);
  }
}

void swiglu_backward(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                     int64_t n) {
  swiglu_backward_into(dout, gate, up, dgate, dup, n);
}

void swiglu_backward_bf16(const float* dout, const float* gate, const float* up, uint16_t* dgate, uint16_t* dup,
                          int64_t n) {
  swiglu_backward_into(dout, gate, up, dgate, dup, n);
}

}  // namespace kvroute::cpu
