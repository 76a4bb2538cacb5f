// Built instead of the .cu files when kvroute has no CUDA backend (as core/device_runtime_stub.cpp
// is for the runtime): every function of cuda_ops.h exists, so kernels/ops.cpp dispatches the same
// way in every build, and each one fails with an error naming the op. In practice the runtime stub
// refuses to allocate CUDA tensors first; this is the backstop.
#include "core/error.h"
#include "kernels/cuda/cuda_ops.h"

namespace kvroute::cuda {

namespace {

[[noreturn]] void no_backend(const char* op, int device) {
  KV_FAIL("{}: cuda:{} tensors need the CUDA backend, which this build of kvroute does not have (configure with "
          "-DKVROUTE_CUDA=ON)",
          op, device);
}

}  // namespace

const char* load_cublaslt() { no_backend("cuBLASLt", 0); }

void gemm_batched(int device, DType, DType, bool, bool, int64_t, int64_t, int64_t, float, const void*, int64_t,
                  int64_t, const void*, int64_t, int64_t, float, void*, int64_t, int64_t, int64_t) {
  no_backend("matmul", device);
}

void add(int device, DType, const void*, const void*, void*, int64_t) { no_backend("add", device); }
void mul(int device, DType, const void*, const void*, void*, int64_t) { no_backend("mul", device); }
void scale(int device, DType, void*, float, int64_t) { no_backend("scale", device); }
void axpy(int device, float, DType, const void*, DType, void*, int64_t) { no_backend("axpy", device); }
void swiglu_forward(int device, DType, const void*, const void*, void*, int64_t) {
  no_backend("swiglu_forward", device);
}
void swiglu_backward(int device, DType, const void*, const void*, const void*, void*, void*, int64_t) {
  no_backend("swiglu_backward", device);
}

double sum(int device, DType, const void*, int64_t, bool squares) {
  no_backend(squares ? "squared_norm" : "sum", device);
}
void sum_last_dim(int device, DType, const void*, float*, int64_t, int64_t) { no_backend("sum_last_dim", device); }

void embedding_forward(int device, DType, const void*, const int32_t*, void*, int64_t, int64_t) {
  no_backend("embedding_forward", device);
}
void embedding_backward(int device, DType, const void*, const int32_t*, float*, int64_t, int64_t, int64_t) {
  no_backend("embedding_backward", device);
}

void rms_norm_forward(int device, DType, const void*, const void*, float, void*, float*, int64_t, int64_t) {
  no_backend("rms_norm_forward", device);
}
void rms_norm_backward(int device, DType, const void*, const void*, const void*, const float*, void*, float*, int64_t,
                       int64_t) {
  no_backend("rms_norm_backward", device);
}

void rope(int device, DType, const void*, void*, int64_t, int64_t, int64_t, int64_t, const ops::RopeConfig&, int64_t, int sign,
          const int32_t*) {
  no_backend(sign > 0 ? "rope_forward" : "rope_backward", device);
}

// Asked only for CUDA tensors, before any kernel runs; it has no device to name.
bool attention_supports_head_dim(int64_t) {
  KV_FAIL("attention: CUDA tensors need the CUDA backend, which this build of kvroute does not have (configure with "
          "-DKVROUTE_CUDA=ON)");
}
void attention_forward(int device, DType, const ops::AttentionShape&, ops::AttentionKernel, const void*, const void*,
                       const void*, float, void*, float*) {
  no_backend("attention_forward", device);
}
void attention_backward(int device, DType, const ops::AttentionShape&, ops::AttentionKernel, const void*,
                        const void*, const void*, const void*, const void*, const float*, float, void*, void*,
                        void*) {
  no_backend("attention_backward", device);
}

double cross_entropy(int device, DType, const void*, const int32_t*, int64_t, int64_t, int64_t, void*, float,
                     int64_t) {
  no_backend("cross_entropy", device);
}

void adamw(int device, float*, const float*, float*, float*, int64_t, const ops::AdamWConfig&, int64_t,
           const ops::DecaySegment*, int64_t, void*, DType) {
  no_backend("adamw_step", device);
}

}  // namespace kvroute::cuda
