// Built when kvroute has no CUDA backend: host-to-host copies work, anything on a CUDA device is
// a clear error.
#include <cstring>

#include "core/allocator.h"
#include "core/device_runtime.h"
#include "core/error.h"

namespace kvroute {

Allocator& cuda_allocator(int index) {
  KV_FAIL("cuda:{}: this build of kvroute has no CUDA backend (configure with -DKVROUTE_CUDA=ON)", index);
}

namespace device_runtime {

int cuda_device_count() { return 0; }
bool cuda_built() { return false; }

void* cuda_stream(int device) { KV_FAIL("cuda:{}: this build of kvroute has no CUDA backend", device); }
void cuda_synchronize(int device) { KV_FAIL("cuda:{}: this build of kvroute has no CUDA backend", device); }

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  KV_CHECK(dst_device.is_cpu() && src_device.is_cpu(),
           "copy {} -> {}: this build of kvroute has no CUDA backend", src_device, dst_device);
  std::memcpy(dst, src, nbytes);
}

void cuda_strided_copy(void*, DType, const void*, DType, const StridedLayout&, int device) {
  KV_FAIL("cuda:{}: this build of kvroute has no CUDA backend", device);
}

void cuda_fill(void*, DType, int64_t, double, int device) {
  KV_FAIL("cuda:{}: this build of kvroute has no CUDA backend", device);
}

}  // namespace device_runtime
}  // namespace kvroute
