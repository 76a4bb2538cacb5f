#include <gtest/gtest.h>

#include "core/allocator.h"
#include "core/tensor.h"

namespace kvroute {
namespace {

TEST(Allocator, SizeClassesWasteAtMostAQuarter) {
  EXPECT_EQ(allocation_size_class(1), 64u);
  EXPECT_EQ(allocation_size_class(64), 64u);
  EXPECT_EQ(allocation_size_class(65), 128u);
  EXPECT_EQ(allocation_size_class(4000), 4096u);
  EXPECT_EQ(allocation_size_class(4097), 5120u);
  for (size_t n = 64; n < (1u << 24); n = n * 9 / 7 + 1) {
    size_t c = allocation_size_class(n);
    EXPECT_GE(c, n);
    EXPECT_LE(static_cast<double>(c), 1.25 * static_cast<double>(n) + 64) << n;
    EXPECT_EQ(c % 64, 0u);
  }
  // Large blocks: 2 MiB steps, under 1% waste (an 8B model's 32.1 GB flat buffer is not 34.4 GB).
  const size_t mib = size_t{1} << 20;
  EXPECT_EQ(allocation_size_class(256 * mib), 256 * mib);
  EXPECT_EQ(allocation_size_class(256 * mib + 1), 258 * mib);
  for (size_t n = 300 * mib; n < (size_t{40} << 30); n = n * 3 / 2 + 12345) {
    const size_t c = allocation_size_class(n);
    EXPECT_GE(c, n);
    EXPECT_LT(c - n, 2 * mib) << n;
  }
}

TEST(Allocator, TracksCurrentAndPeakAndReusesBlocks) {
  Allocator& alloc = cpu_allocator();
  alloc.reset_peak();
  const AllocatorStats before = alloc.stats();
  {
    Tensor a = Tensor::empty({1000});  // 4000 bytes -> class 4096
    Tensor b = Tensor::empty({1000});
    AllocatorStats mid = alloc.stats();
    EXPECT_EQ(mid.current_bytes, before.current_bytes + 2 * 4096);
    EXPECT_GE(mid.peak_bytes, mid.current_bytes);
  }
  AllocatorStats after = alloc.stats();
  EXPECT_EQ(after.current_bytes, before.current_bytes);
  EXPECT_GE(after.peak_bytes, before.current_bytes + 2 * 4096);
  EXPECT_GE(after.cached_bytes, 2u * 4096);
  // The next allocation of the same class comes from the free list.
  uint64_t hits = after.cache_hits;
  Tensor c = Tensor::empty({1000});
  EXPECT_EQ(alloc.stats().cache_hits, hits + 1);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(c.raw_data()) % 64, 0u);
}

TEST(Allocator, ABudgetRefusesAllocationsBeyondItAndNothingLeaks) {
  Allocator& alloc = cpu_allocator();
  const size_t base = alloc.stats().current_bytes;
  alloc.set_limit(base + (1 << 20));
  {
    Tensor fits = Tensor::empty({100000});  // 400 KB
    EXPECT_THROW(Tensor::empty({200000}), MemoryBudgetExceeded);  // + 800 KB > 1 MiB
  }
  EXPECT_EQ(alloc.stats().current_bytes, base);
  alloc.set_limit(0);
  Tensor big = Tensor::empty({1 << 20});  // no budget: fine
  EXPECT_EQ(big.numel(), 1 << 20);
}

TEST(Allocator, EmptyCacheReleasesFreeBlocks) {
  { Tensor a = Tensor::empty({1 << 16}); }
  cpu_allocator().empty_cache();
  EXPECT_EQ(cpu_allocator().stats().cached_bytes, 0u);
}

}  // namespace
}  // namespace kvroute
