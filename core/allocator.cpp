#include "core/allocator.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdlib>
#include <new>

#include "core/error.h"

namespace kvroute {

size_t allocation_size_class(size_t nbytes) {
  if (nbytes <= 64) return 64;
  // Large blocks (flat weights, gradients and optimizer state; a whole-vocabulary logits tensor)
  // in 2 MiB steps: a quarter of a 32 GB buffer is 8 GB of device memory (an 8B model's four flat
  // buffers lost 9 GB to the classes below).
  constexpr size_t kLarge = size_t{256} << 20, kLargeStep = size_t{2} << 20;
  if (nbytes > kLarge) return (nbytes + kLargeStep - 1) / kLargeStep * kLargeStep;
  // Four classes per power of two (2^k, 1.25, 1.5, 1.75 x 2^k), each a multiple of 64 bytes.
  size_t step = std::max<size_t>(std::bit_floor(nbytes) / 4, 64);
  return (nbytes + step - 1) / step * step;
}

void* PooledAllocator::allocate(size_t nbytes) {
  size_t size = allocation_size_class(nbytes);
  std::lock_guard<std::mutex> lock(mutex_);
  if (limit_ > 0 && stats_.current_bytes + size > limit_) {
    throw MemoryBudgetExceeded(fmt::format("{} allocator: {} bytes in use + {} exceed the memory budget of {} bytes",
                                           name(), stats_.current_bytes, size, limit_));
  }
  void* ptr = nullptr;
  auto it = free_lists_.find(size);
  if (it != free_lists_.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    stats_.cached_bytes -= size;
    ++stats_.cache_hits;
  } else {
    ptr = system_allocate(size);
    if (ptr == nullptr) {
      // Out of memory: give back everything cached, then try once more.
      for (auto& [block_size, blocks] : free_lists_) {
        for (void* block : blocks) system_free(block);
        blocks.clear();
      }
      stats_.cached_bytes = 0;
      ptr = system_allocate(size);
    }
    KV_CHECK(ptr != nullptr, "{} allocator: out of memory allocating {} bytes ({} bytes in use, peak {})",
             name(), size, stats_.current_bytes, stats_.peak_bytes);
  }
  stats_.current_bytes += size;
  if (stats_.current_bytes > stats_.peak_bytes) stats_.peak_bytes = stats_.current_bytes;
  return ptr;
}

void PooledAllocator::deallocate(void* ptr, size_t nbytes) {
  if (ptr == nullptr) return;
  size_t size = allocation_size_class(nbytes);
  std::lock_guard<std::mutex> lock(mutex_);
  free_lists_[size].push_back(ptr);
  stats_.current_bytes -= size;
  stats_.cached_bytes += size;
}

AllocatorStats PooledAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void PooledAllocator::set_limit(size_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  limit_ = bytes;
}

void PooledAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mutex_);
  stats_.peak_bytes = stats_.current_bytes;
}

void PooledAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [size, blocks] : free_lists_) {
    for (void* block : blocks) system_free(block);
  }
  free_lists_.clear();
  stats_.cached_bytes = 0;
}

namespace {

class CpuAllocator final : public PooledAllocator {
 public:
  ~CpuAllocator() override = default;

 protected:
  void* system_allocate(size_t nbytes) override {
    // Size classes are multiples of 64 bytes, as aligned_alloc requires.
    return std::aligned_alloc(64, nbytes);
  }
  void system_free(void* ptr) override { std::free(ptr); }
  const char* name() const override { return "cpu"; }
};

}  // namespace

double process_memory_limit() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  double have = pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0;
  for (int resource : {RLIMIT_AS, RLIMIT_DATA}) {
    struct rlimit lim {};
    if (::getrlimit(resource, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY)
      have = have > 0 ? std::min(have, static_cast<double>(lim.rlim_cur)) : static_cast<double>(lim.rlim_cur);
  }
  return have;
}

Allocator& cpu_allocator() {
  // Never destroyed: tensors held in static objects may be freed during exit.
  static CpuAllocator* allocator = new CpuAllocator();
  return *allocator;
}

Allocator& allocator_for(Device device) {
  return device.is_cpu() ? cpu_allocator() : cuda_allocator(device.index);
}

}  // namespace kvroute
