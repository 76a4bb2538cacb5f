// The out-of-line part of common.cuh: device buffers owned by the caching allocator for the
// lifetime of one op (host data uploaded through the pinned staging path, and scratch).
#include "core/allocator.h"
#include "core/device_runtime.h"
#include "kernels/cuda/common.cuh"

namespace kvroute::cuda {

DeviceUpload::DeviceUpload(const void* host, size_t nbytes, int device) : nbytes_(nbytes), device_(device) {
  ptr_ = cuda_allocator(device).allocate(nbytes > 0 ? nbytes : 1);
  device_runtime::copy_bytes(ptr_, Device::cuda(device), host, Device::cpu(), nbytes);
}
DeviceUpload::~DeviceUpload() { cuda_allocator(device_).deallocate(ptr_, nbytes_ > 0 ? nbytes_ : 1); }

Scratch::Scratch(size_t nbytes, int device) : nbytes_(nbytes), device_(device) {
  ptr_ = cuda_allocator(device).allocate(nbytes > 0 ? nbytes : 1);
}
Scratch::~Scratch() { cuda_allocator(device_).deallocate(ptr_, nbytes_ > 0 ? nbytes_ : 1); }

}  // namespace kvroute::cuda
