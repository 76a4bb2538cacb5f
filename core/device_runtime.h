// The device-side half of core: CUDA memory copies, strided copy with dtype conversion, fill.
// Built from device_runtime.cu with CUDA, else from device_runtime_stub.cpp, whose functions say
// that this build has no CUDA.
#pragma once

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace kvroute::device_runtime {

int cuda_device_count();  // 0 without CUDA or without a device
bool cuda_built();

// Raw copy of nbytes between any two devices (blocking).
void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes);

// dst[i] = convert(src[i]) over an n-dimensional strided layout, both on the same CUDA device.
struct StridedLayout {
  static constexpr int kMaxDims = 8;
  int dims = 0;
  int64_t shape[kMaxDims] = {};
  int64_t dst_strides[kMaxDims] = {};
  int64_t src_strides[kMaxDims] = {};
};
void cuda_strided_copy(void* dst, DType dst_dtype, const void* src, DType src_dtype,
                       const StridedLayout& layout, int device);
void cuda_fill(void* dst, DType dtype, int64_t n, double value, int device);

}  // namespace kvroute::device_runtime
