#include "core/rng.h"

#include <cmath>

namespace kvroute {

namespace {
inline uint32_t word_at(uint64_t seed, uint64_t stream, uint64_t index) {
  PhiloxBlock block = philox4x32_10(index / 4, stream, seed);
  return block.v[index % 4];
}

inline void box_muller(uint32_t a, uint32_t b, double& z0, double& z1) {
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  double u1 = (static_cast<double>(a) + 1.0) * (1.0 / 4294967296.0);  // (0, 1]: log is finite
  double u2 = static_cast<double>(b) * (1.0 / 4294967296.0);
  double r = std::sqrt(-2.0 * std::log(u1));
  z0 = r * std::cos(kTwoPi * u2);
  z1 = r * std::sin(kTwoPi * u2);
}
}  // namespace

uint32_t Philox::next_u32() { return word_at(seed_, stream_, position_++); }

uint64_t Philox::next_u64() {
  uint64_t lo = next_u32();
  uint64_t hi = next_u32();
  return lo | (hi << 32);
}

float Philox::uniform() { return uint_to_unit_float(next_u32()); }

double Philox::uniform_double() { return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

int64_t Philox::uniform_int(int64_t n) {
  KV_CHECK(n > 0, "Philox::uniform_int: n must be positive, got {}", n);
  uint64_t range = static_cast<uint64_t>(n);
  uint64_t limit = UINT64_MAX - UINT64_MAX % range;  // reject the incomplete top bucket
  uint64_t x;
  do {
    x = next_u64();
  } while (x >= limit);
  return static_cast<int64_t>(x % range);
}

float Philox::normal() {
  uint32_t a = next_u32();
  uint32_t b = next_u32();
  double z0, z1;
  box_muller(a, b, z0, z1);
  return static_cast<float>(z0);
}

void fill_uniform(Tensor& t, uint64_t seed, uint64_t stream, float low, float high) {
  KV_CHECK(t.dtype() == DType::F32, "fill_uniform: expected an f32 tensor, got {}", t.str());
  // In place where possible (as fill_normal): no temporary.
  const bool direct = t.device().is_cpu() && t.is_contiguous();
  Tensor host = direct ? t : Tensor::empty(t.shape(), DType::F32);
  float* p = host.data<float>();
  const int64_t n = host.numel();
  const float span = high - low;
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) p[i] = low + span * uint_to_unit_float(word_at(seed, stream, static_cast<uint64_t>(i)));
  if (!direct) t.copy_(host);
}

void fill_normal(Tensor& t, uint64_t seed, uint64_t stream, float mean, float std) {
  KV_CHECK(t.dtype() == DType::F32, "fill_normal: expected an f32 tensor, got {}", t.str());
  // In place where possible: a temporary would touch a block of the CPU pool per parameter (the
  // model's construction peaked at 12 instead of 8 bytes per parameter through it).
  const bool direct = t.device().is_cpu() && t.is_contiguous();
  Tensor host = direct ? t : Tensor::empty(t.shape(), DType::F32);
  float* p = host.data<float>();
  const int64_t n = host.numel();
#pragma omp parallel for schedule(static) if (n > (1 << 15))
  for (int64_t pair = 0; pair < (n + 1) / 2; ++pair) {
    uint64_t w = 2 * static_cast<uint64_t>(pair);
    double z0, z1;
    box_muller(word_at(seed, stream, w), word_at(seed, stream, w + 1), z0, z1);
    p[2 * pair] = mean + std * static_cast<float>(z0);
    if (2 * pair + 1 < n) p[2 * pair + 1] = mean + std * static_cast<float>(z1);
  }
  if (!direct) t.copy_(host);
}

}  // namespace kvroute
