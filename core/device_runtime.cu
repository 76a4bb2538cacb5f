// CUDA half of core: the caching device allocator, host/device copies, strided copy with dtype
// conversion, and fill. Kernels that do math live in kernels/cuda/.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <memory>
#include <mutex>
#include <string>

#include "core/allocator.h"
#include "core/cuda_check.h"
#include "core/device_runtime.h"

namespace kvroute {

namespace {

// Caching allocator: size-class free lists per device (PooledAllocator). Blocks are freed on the
// default stream's order; a stream-aware variant (record_stream) comes with the full backend.
class CudaAllocator final : public PooledAllocator {
 public:
  explicit CudaAllocator(int device) : device_(device) {}
  ~CudaAllocator() override = default;

 protected:
  void* system_allocate(size_t nbytes) override {
    KV_CUDA_CHECK(cudaSetDevice(device_));
    void* ptr = nullptr;
    if (cudaMalloc(&ptr, nbytes) != cudaSuccess) {
      (void)cudaGetLastError();  // clear the sticky out-of-memory status; PooledAllocator retries
      return nullptr;
    }
    return ptr;
  }
  void system_free(void* ptr) override {
    KV_CUDA_CHECK(cudaSetDevice(device_));
    KV_CUDA_CHECK(cudaFree(ptr));
  }
  const char* name() const override { return "cuda"; }

 private:
  int device_;
};

}  // namespace

Allocator& cuda_allocator(int index) {
  static std::mutex mutex;
  static std::array<CudaAllocator*, 64> allocators{};
  int count = device_runtime::cuda_device_count();
  if (index < 0 || index >= count) {
    std::string message = "cuda:" + std::to_string(index) + ": no such CUDA device (" + std::to_string(count) +
                          " visible)";
    throw_message(message.c_str());
  }
  std::lock_guard<std::mutex> lock(mutex);
  if (allocators[index] == nullptr) allocators[index] = new CudaAllocator(index);  // lives until exit
  return *allocators[index];
}

namespace device_runtime {

int cuda_device_count() {
  static const int count = [] {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
      (void)cudaGetLastError();
      return 0;
    }
    return n;
  }();
  return count;
}

bool cuda_built() { return true; }

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cuda()) KV_CUDA_CHECK(cudaSetDevice(dst_device.index));
  else if (src_device.is_cuda()) KV_CUDA_CHECK(cudaSetDevice(src_device.index));
  KV_CUDA_CHECK(cudaMemcpy(dst, src, nbytes, cudaMemcpyDefault));
}

namespace {

__device__ double load_element(const void* p, int64_t i, DType dtype) {
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::I32: return static_cast<const int32_t*>(p)[i];
    case DType::U16: return static_cast<const uint16_t*>(p)[i];
    case DType::U32: return static_cast<const uint32_t*>(p)[i];
  }
  return 0.0;
}

__device__ void store_element(void* p, int64_t i, DType dtype, double v) {
  switch (dtype) {
    case DType::F32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case DType::BF16: static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(static_cast<float>(v)); break;
    case DType::I32: static_cast<int32_t*>(p)[i] = static_cast<int32_t>(v); break;
    case DType::U16: static_cast<uint16_t*>(p)[i] = static_cast<uint16_t>(v); break;
    case DType::U32: static_cast<uint32_t*>(p)[i] = static_cast<uint32_t>(v); break;
  }
}

__global__ void strided_copy_kernel(void* dst, DType dst_dtype, const void* src, DType src_dtype,
                                    StridedLayout layout, int64_t n) {
  for (int64_t linear = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; linear < n;
       linear += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = linear, dst_off = 0, src_off = 0;
    for (int d = layout.dims - 1; d >= 0; --d) {
      int64_t idx = rem % layout.shape[d];
      rem /= layout.shape[d];
      dst_off += idx * layout.dst_strides[d];
      src_off += idx * layout.src_strides[d];
    }
    store_element(dst, dst_off, dst_dtype, load_element(src, src_off, src_dtype));
  }
}

__global__ void fill_kernel(void* dst, DType dtype, int64_t n, double value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    store_element(dst, i, dtype, value);
  }
}

unsigned grid_for(int64_t n) {
  int64_t blocks = (n + 255) / 256;
  return static_cast<unsigned>(blocks < 65535 ? (blocks > 0 ? blocks : 1) : 65535);
}

}  // namespace

void cuda_strided_copy(void* dst, DType dst_dtype, const void* src, DType src_dtype,
                       const StridedLayout& layout, int device) {
  int64_t n = 1;
  for (int d = 0; d < layout.dims; ++d) n *= layout.shape[d];
  if (n == 0) return;
  KV_CUDA_CHECK(cudaSetDevice(device));
  strided_copy_kernel<<<grid_for(n), 256>>>(dst, dst_dtype, src, src_dtype, layout, n);
  KV_CUDA_CHECK(cudaGetLastError());
}

void cuda_fill(void* dst, DType dtype, int64_t n, double value, int device) {
  if (n == 0) return;
  KV_CUDA_CHECK(cudaSetDevice(device));
  fill_kernel<<<grid_for(n), 256>>>(dst, dtype, n, value);
  KV_CUDA_CHECK(cudaGetLastError());
}

}  // namespace device_runtime
}  // namespace kvroute
