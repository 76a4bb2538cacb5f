#include <gtest/gtest.h>

#include <cmath>

#include "core/rng.h"
#include "core/threading.h"

namespace kvroute {
namespace {

// Known-answer vectors of the Random123 reference implementation (kat_vectors, philox4x32_10).
TEST(Philox, MatchesRandom123KnownAnswers) {
  PhiloxBlock zero = philox4x32_10(0, 0, 0);
  EXPECT_EQ(zero.v[0], 0x6627e8d5u);
  EXPECT_EQ(zero.v[1], 0xe169c58du);
  EXPECT_EQ(zero.v[2], 0xbc57ac4cu);
  EXPECT_EQ(zero.v[3], 0x9b00dbd8u);
  PhiloxBlock ones = philox4x32_10(~0ull, ~0ull, ~0ull);
  EXPECT_EQ(ones.v[0], 0x408f276du);
  EXPECT_EQ(ones.v[1], 0x41c83b0eu);
  EXPECT_EQ(ones.v[2], 0xa20bc7c6u);
  EXPECT_EQ(ones.v[3], 0x6d5451fdu);
  // counter = {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, key = {0xa4093822, 0x299f31d0}
  PhiloxBlock pi = philox4x32_10(0x85a308d3243f6a88ull, 0x0370734413198a2eull, 0x299f31d0a4093822ull);
  EXPECT_EQ(pi.v[0], 0xd16cfe09u);
  EXPECT_EQ(pi.v[1], 0x94fdccebu);
  EXPECT_EQ(pi.v[2], 0x5001e420u);
  EXPECT_EQ(pi.v[3], 0x24126ea1u);
}

TEST(Philox, StreamIsReproducibleAndResumable) {
  Philox a(42, 7), b(42, 7), other_stream(42, 8), other_seed(43, 7);
  std::vector<uint32_t> first;
  for (int i = 0; i < 10; ++i) first.push_back(a.next_u32());
  int differ_stream = 0, differ_seed = 0;
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(b.next_u32(), first[i]);
    differ_stream += other_stream.next_u32() != first[i];
    differ_seed += other_seed.next_u32() != first[i];
  }
  EXPECT_GE(differ_stream, 9);
  EXPECT_GE(differ_seed, 9);
  // Resume from a saved position.
  Philox c(42, 7, 6);
  EXPECT_EQ(c.next_u32(), first[6]);
  EXPECT_EQ(a.position(), 10u);
}

TEST(Philox, UniformAndNormalMoments) {
  Philox rng(1, 0);
  const int n = 200000;
  double sum = 0, sum_sq = 0, nsum = 0, nsum_sq = 0;
  for (int i = 0; i < n; ++i) {
    double u = rng.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    sum_sq += u * u;
    double z = rng.normal();
    nsum += z;
    nsum_sq += z * z;
  }
  EXPECT_NEAR(sum / n, 0.5, 0.005);
  EXPECT_NEAR(sum_sq / n - 0.25, 1.0 / 12, 0.005);
  EXPECT_NEAR(nsum / n, 0.0, 0.01);
  EXPECT_NEAR(nsum_sq / n, 1.0, 0.02);
  std::vector<int> counts(5, 0);
  for (int i = 0; i < 50000; ++i) ++counts[rng.uniform_int(5)];
  for (int c : counts) EXPECT_NEAR(c, 10000, 400);  // ~4.5 sigma
}

TEST(Philox, TensorFillIndependentOfThreadCount) {
  Tensor a = Tensor::empty({300001}), b = Tensor::empty({300001});
  int threads = num_threads();
  set_num_threads(1);
  fill_normal(a, 5, 3, 0.0f, 0.02f);
  set_num_threads(2);
  fill_normal(b, 5, 3, 0.0f, 0.02f);
  set_num_threads(threads);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
  // Element i of a uniform fill is word i of the stream.
  Tensor u = Tensor::empty({9});
  fill_uniform(u, 11, 2);
  Philox stream(11, 2);
  for (float x : u.to_vector<float>()) EXPECT_EQ(x, uint_to_unit_float(stream.next_u32()));
  // Normal fill: pair (2k, 2k+1) is one Box-Muller draw from words 2k, 2k+1.
  Tensor z = Tensor::empty({4});
  fill_normal(z, 11, 2);
  Philox again(11, 2);
  EXPECT_FLOAT_EQ(z.to_vector<float>()[0], again.normal());
  double mean = 0, var = 0;
  std::vector<float> av = a.to_vector<float>();
  for (float x : av) mean += x;
  mean /= static_cast<double>(av.size());
  for (float x : av) var += (x - mean) * (x - mean);
  var /= static_cast<double>(av.size());
  EXPECT_NEAR(mean, 0.0, 2e-4);
  EXPECT_NEAR(std::sqrt(var), 0.02, 2e-4);
}

}  // namespace
}  // namespace kvroute
