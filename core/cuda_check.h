// KV_CUDA_CHECK for .cu files: turns a failing CUDA runtime call into a kvroute::Error naming the
// call. Free of fmt, whose compile-time format checks nvcc cannot evaluate.
#pragma once

#include <cuda_runtime.h>

namespace kvroute {
// Throws kvroute::Error("<library> error in <call>: <detail> (<code>)").
[[noreturn]] void throw_library_error(const char* library, const char* call, const char* detail, long code);
// Throws kvroute::Error(message).
[[noreturn]] void throw_message(const char* message);
}  // namespace kvroute

#define KV_CUDA_CHECK(call)                                                                 \
  do {                                                                                      \
    cudaError_t kv_cuda_status_ = (call);                                                   \
    if (kv_cuda_status_ != cudaSuccess) {                                                   \
      ::kvroute::throw_library_error("CUDA", #call, cudaGetErrorString(kv_cuda_status_),    \
                                     static_cast<long>(kv_cuda_status_));                   \
    }                                                                                       \
  } while (0)
