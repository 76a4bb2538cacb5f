// CUDA kernels behind kernels/ops.h (only built with KVROUTE_HAS_CUDA). Same raw-pointer
// conventions as kernels/cpu/cpu_ops.h; pointers are device pointers on device `device`.
#pragma once

#include <cstdint>

namespace kvroute::cuda {

// Row-major batched GEMM through cuBLASLt, f32 in/out, f32 accumulation (no TF32), on the
// default stream. Heuristic results are cached per shape.
void gemm_batched(int device, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, int64_t stride_a, const float* b, int64_t ldb, int64_t stride_b,
                  float beta, float* c, int64_t ldc, int64_t stride_c, int64_t batch);

}  // namespace kvroute::cuda
