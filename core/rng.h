// Philox4x32-10 (Salmon et al., SC'11): a counter-based generator. The value at (seed, counter) is
// a pure function, so the CPU and CUDA backends, any thread count and any machine give the same
// numbers, and a run resumes its random streams from a saved counter.
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "core/tensor.h"

#if defined(__CUDACC__)
#define KV_HOST_DEVICE __host__ __device__
#else
#define KV_HOST_DEVICE
#endif

namespace kvroute {

struct PhiloxBlock {
  uint32_t v[4];
};

// One Philox4x32-10 evaluation: 128 bits of counter and 64 bits of key to 128 random bits.
KV_HOST_DEVICE inline PhiloxBlock philox4x32_10(uint64_t counter_lo, uint64_t counter_hi, uint64_t key) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(counter_lo), c1 = static_cast<uint32_t>(counter_lo >> 32);
  uint32_t c2 = static_cast<uint32_t>(counter_hi), c3 = static_cast<uint32_t>(counter_hi >> 32);
  uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += kW0;
    k1 += kW1;
  }
  return PhiloxBlock{{c0, c1, c2, c3}};
}

// 24 random bits to a float in [0, 1).
KV_HOST_DEVICE inline float uint_to_unit_float(uint32_t x) {
  return static_cast<float>(x >> 8) * (1.0f / 16777216.0f);
}

// A sequential stream over Philox blocks: block i of stream `stream` is
// philox(counter_lo = i, counter_hi = stream, key = seed). Saving (seed, stream, position) is
// enough to resume it exactly.
class Philox {
 public:
  Philox(uint64_t seed, uint64_t stream = 0, uint64_t position = 0)
      : seed_(seed), stream_(stream), position_(position) {}

  uint32_t next_u32();
  uint64_t next_u64();
  float uniform();                    // [0, 1), 24-bit resolution
  double uniform_double();            // [0, 1), 53-bit resolution
  int64_t uniform_int(int64_t n);     // uniform in [0, n) without modulo bias
  float normal();                     // standard normal (Box-Muller in double)
  uint64_t position() const { return position_; }  // in 32-bit words

 private:
  uint64_t seed_, stream_, position_;
};

// 0..n-1 in the order of a Fisher-Yates shuffle drawn from `rng` (the project's one permutation:
// the data split, each epoch's window order). The same draws on every machine.
template <typename Index>
std::vector<Index> shuffled_indices(int64_t n, Philox& rng) {
  std::vector<Index> order(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) order[static_cast<size_t>(i)] = static_cast<Index>(i);
  for (int64_t i = n - 1; i > 0; --i) std::swap(order[static_cast<size_t>(i)], order[static_cast<size_t>(rng.uniform_int(i + 1))]);
  return order;
}

// Fill a tensor with random values. Element i takes word (counter + i) of stream `stream` for
// uniform; normal uses the Box-Muller pair of words 2*(counter + i/2), 2*(counter + i/2) + 1.
// Results do not depend on the device or the thread count.
void fill_uniform(Tensor& t, uint64_t seed, uint64_t stream, float low = 0.0f, float high = 1.0f);
void fill_normal(Tensor& t, uint64_t seed, uint64_t stream, float mean = 0.0f, float std = 1.0f);

}  // namespace kvroute
