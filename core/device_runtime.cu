// CUDA half of core: the caching device allocator, host/device copies, strided copy with dtype
// conversion, and fill. Kernels that do math live in kernels/cuda/.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <array>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "core/allocator.h"
#include "core/cuda_check.h"
#include "core/device_runtime.h"

namespace kvroute {

namespace {

// Caching allocator: size-class free lists per device (PooledAllocator). Every user of a block is
// ordered on the device's compute stream (cuda_stream), so a block freed while a queued kernel
// still reads it is only handed to work queued after that kernel: the stream orders the reuse.
// Buffers touched by another stream (the gradient all-reduce) live for the whole run.
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

namespace {

constexpr int kMaxDevices = 64;

void check_device_index(int device) {
  if (device < 0 || device >= cuda_device_count() || device >= kMaxDevices) {
    std::string message = "cuda:" + std::to_string(device) + ": no such CUDA device (" +
                          std::to_string(cuda_device_count()) + " visible)";
    throw_message(message.c_str());
  }
}

// Pinned staging buffers for host-to-device copies: the host data is copied into one, the DMA runs
// from it asynchronously, and an event says when the slot may be overwritten. Slots grow on demand.
class Staging {
 public:
  static constexpr int kSlots = 4;
  static constexpr size_t kChunk = 64u << 20;  // larger copies go through in pieces

  void upload(void* dst, const void* src, size_t nbytes, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mutex_);
    const char* from = static_cast<const char*>(src);
    char* to = static_cast<char*>(dst);
    while (nbytes > 0) {
      const size_t piece = nbytes < kChunk ? nbytes : kChunk;
      Slot& slot = slots_[next_];
      next_ = (next_ + 1) % kSlots;
      if (slot.event == nullptr) KV_CUDA_CHECK(cudaEventCreateWithFlags(&slot.event, cudaEventDisableTiming));
      KV_CUDA_CHECK(cudaEventSynchronize(slot.event));  // its previous copy has left the buffer
      if (slot.bytes < piece) {
        if (slot.host != nullptr) KV_CUDA_CHECK(cudaFreeHost(slot.host));
        slot.host = nullptr;
        slot.bytes = 0;
        KV_CUDA_CHECK(cudaMallocHost(&slot.host, piece));
        slot.bytes = piece;
      }
      std::memcpy(slot.host, from, piece);
      KV_CUDA_CHECK(cudaMemcpyAsync(to, slot.host, piece, cudaMemcpyHostToDevice, stream));
      KV_CUDA_CHECK(cudaEventRecord(slot.event, stream));
      from += piece;
      to += piece;
      nbytes -= piece;
    }
  }

 private:
  struct Slot {
    void* host = nullptr;
    size_t bytes = 0;
    cudaEvent_t event = nullptr;
  };
  std::mutex mutex_;
  std::array<Slot, kSlots> slots_{};
  int next_ = 0;
};

Staging& staging(int device) {
  static std::mutex mutex;
  static std::array<Staging*, kMaxDevices> all{};
  std::lock_guard<std::mutex> lock(mutex);
  if (all[device] == nullptr) all[device] = new Staging();  // lives until exit
  return *all[device];
}

}  // namespace

void* cuda_stream(int device) {
  static std::mutex mutex;
  static std::array<cudaStream_t, kMaxDevices> streams{};
  check_device_index(device);
  std::lock_guard<std::mutex> lock(mutex);
  if (streams[device] == nullptr) {
    KV_CUDA_CHECK(cudaSetDevice(device));
    // Non-blocking: it does not serialise with the legacy default stream, which kvroute never uses.
    KV_CUDA_CHECK(cudaStreamCreateWithFlags(&streams[device], cudaStreamNonBlocking));
  }
  return streams[device];
}

void cuda_synchronize(int device) {
  KV_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(cuda_stream(device))));
}

void copy_bytes(void* dst, Device dst_device, const void* src, Device src_device, size_t nbytes) {
  if (nbytes == 0) return;
  if (dst_device.is_cpu() && src_device.is_cpu()) {
    std::memcpy(dst, src, nbytes);
    return;
  }
  const int device = dst_device.is_cuda() ? dst_device.index : src_device.index;
  KV_CUDA_CHECK(cudaSetDevice(device));
  cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream(device));
  if (src_device.is_cpu()) {
    staging(device).upload(dst, src, nbytes, stream);
  } else if (dst_device.is_cpu()) {
    KV_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream));
    KV_CUDA_CHECK(cudaStreamSynchronize(stream));
  } else {
    if (src_device.index != dst_device.index) {
      // Another device's stream may still be writing the source.
      KV_CUDA_CHECK(cudaStreamSynchronize(static_cast<cudaStream_t>(cuda_stream(src_device.index))));
    }
    KV_CUDA_CHECK(cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDefault, stream));
  }
}

namespace {

__device__ double load_element(const void* p, int64_t i, DType dtype) {
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(p)[i];
    case DType::BF16: return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::I32: return static_cast<const int32_t*>(p)[i];
    case DType::U16: return static_cast<const uint16_t*>(p)[i];
    case DType::U32: return static_cast<const uint32_t*>(p)[i];
    case DType::F16: return __half2float(static_cast<const __half*>(p)[i]);
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
    case DType::F16: static_cast<__half*>(p)[i] = __float2half_rn(static_cast<float>(v)); break;
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
  strided_copy_kernel<<<grid_for(n), 256, 0, static_cast<cudaStream_t>(cuda_stream(device))>>>(dst, dst_dtype, src, src_dtype, layout, n);
  KV_CUDA_CHECK(cudaGetLastError());
}

void cuda_fill(void* dst, DType dtype, int64_t n, double value, int device) {
  if (n == 0) return;
  KV_CUDA_CHECK(cudaSetDevice(device));
  fill_kernel<<<grid_for(n), 256, 0, static_cast<cudaStream_t>(cuda_stream(device))>>>(dst, dtype, n, value);
  KV_CUDA_CHECK(cudaGetLastError());
}

}  // namespace device_runtime
}  // namespace kvroute
