// Allocators: a pooled, 64-byte aligned CPU allocator and (when built with CUDA) a caching device
// allocator. Both keep freed blocks in size-class free lists and report current and peak bytes,
// which the benchmarks and the memory targets read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "core/dtype.h"

namespace kvroute {

struct AllocatorStats {
  size_t current_bytes = 0;  // bytes handed out and not yet returned (rounded to the size class)
  size_t peak_bytes = 0;     // maximum of current_bytes since the last reset_peak()
  size_t cached_bytes = 0;   // bytes held in free lists, ready for reuse
  uint64_t cache_hits = 0;   // allocate() calls served from a free list
};

class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* ptr, size_t nbytes) = 0;
  virtual AllocatorStats stats() const = 0;
  virtual void reset_peak() = 0;
  virtual void empty_cache() = 0;  // return cached blocks to the system
  // A budget on current_bytes (0: none): an allocation that would exceed it throws
  // MemoryBudgetExceeded (core/error.h), so "does it fit in N bytes" is answered by running it (bench generate
  // --memory-budget), not by arithmetic.
  virtual void set_limit(size_t bytes) = 0;
};


// Size classes 2^k, 1.25, 1.5 and 1.75 x 2^k (at most 25% waste), multiples of 64 bytes; above
// 256 MiB, multiples of 2 MiB (under 1% waste).
size_t allocation_size_class(size_t nbytes);

// The shared bookkeeping of both pooled allocators: size-class free lists and statistics.
// Subclasses supply the raw system allocation.
class PooledAllocator : public Allocator {
 public:
  void* allocate(size_t nbytes) override;
  void deallocate(void* ptr, size_t nbytes) override;
  AllocatorStats stats() const override;
  void reset_peak() override;
  void empty_cache() override;
  void set_limit(size_t bytes) override;

 protected:
  ~PooledAllocator() override = default;
  virtual void* system_allocate(size_t nbytes) = 0;  // nullptr on failure
  virtual void system_free(void* ptr) = 0;
  virtual const char* name() const = 0;

 private:
  mutable std::mutex mutex_;
  std::map<size_t, std::vector<void*>> free_lists_;
  AllocatorStats stats_;
  size_t limit_ = 0;
};

Allocator& cpu_allocator();
// The memory this process may use: the machine's, or less under ulimit -v / -d; 0 when unknown.
double process_memory_limit();
// The caching allocator of CUDA device `index`; throws when built without CUDA.
Allocator& cuda_allocator(int index);
Allocator& allocator_for(Device device);

}  // namespace kvroute
