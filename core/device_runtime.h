// The device-side half of core: CUDA memory copies, strided copy with dtype conversion, fill.
// Built from device_runtime.cu with CUDA, else from device_runtime_stub.cpp, whose functions say
// that this build has no CUDA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace kvroute::device_runtime {

int cuda_device_count();  // 0 without CUDA or without a device
bool cuda_built();

// The GPU of a rank: cuda:<local_rank> (one GPU per rank on each host). A one-line error, prefixed
// with `what` (the config key or flag that asked for CUDA), when the build has no CUDA, no GPU is
// visible, or the host has fewer GPUs than ranks.
Device select_cuda_device(int local_rank, const std::string& what);

// The one compute stream of CUDA device `device` (a cudaStream_t, opaque here so this header needs
// no CUDA). Every kernel, copy and allocation of kvroute is ordered on it; a block freed by the
// caching allocator is reused by later work on the same stream, so no event is needed.
void* cuda_stream(int device);
// Waits for all work queued on the compute stream of `device`.
void cuda_synchronize(int device);

// Raw copy of nbytes between any two devices. Host-to-device copies go through pinned staging
// buffers and return as soon as the data is staged (the copy runs on the compute stream);
// device-to-host copies wait for the stream, so the host sees the finished data.
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
