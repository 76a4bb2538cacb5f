#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ops.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

using testing::expect_error;
using testing::random_tensor;
using testing::scaled_max_error;
using testing::to_double;

TEST(CrossEntropy, LossAndGradientMatchReference) {
  const int64_t N = 37, V = 1001, ignore = -100;
  Tensor logits = random_tensor({N, V}, 1, -8.0f, 8.0f);
  std::vector<int32_t> t(N);
  Philox rng(2);
  for (auto& x : t) x = static_cast<int32_t>(rng.uniform_int(V));
  t[3] = t[20] = ignore;
  Tensor targets = Tensor::from_vector(t, {N});
  Tensor dlogits = Tensor::empty({N, V});
  double loss = ops::cross_entropy(logits, targets, ignore, &dlogits, 0.5f).item();

  std::vector<double> x = to_double(logits), grad(x.size(), 0.0);
  double total = 0;
  int valid = 0;
  for (int64_t r = 0; r < N; ++r) valid += t[r] != ignore;
  for (int64_t r = 0; r < N; ++r) {
    if (t[r] == ignore) continue;
    double m = -1e300, z = 0;
    for (int64_t c = 0; c < V; ++c) m = std::max(m, x[r * V + c]);
    for (int64_t c = 0; c < V; ++c) z += std::exp(x[r * V + c] - m);
    total += m + std::log(z) - x[r * V + t[r]];
    for (int64_t c = 0; c < V; ++c) grad[r * V + c] = 0.5 * (std::exp(x[r * V + c] - m) / z - (c == t[r])) / valid;
  }
  EXPECT_NEAR(loss, total / valid, 1e-5);
  EXPECT_LT(scaled_max_error(dlogits, grad), 1e-6);
  // Loss alone, and the in-place gradient, agree. The loss-only pass is another loop, which the
  // compiler may vectorise differently (lanes, FMA): equal up to f32 rounding of the row sums.
  EXPECT_NEAR(ops::cross_entropy(logits, targets, ignore).item(), loss, 1e-6 * std::abs(loss));
  // In place runs the same loop on the same values: bit-identical.
  Tensor inplace = logits.clone();
  ops::cross_entropy(inplace, targets, ignore, &inplace, 0.5f);
  EXPECT_EQ(inplace.to_vector<float>(), dlogits.to_vector<float>());
}

TEST(CrossEntropy, AllIgnoredIsZeroAndBadTargetsAreErrors) {
  Tensor logits = random_tensor({2, 5}, 3);
  Tensor dl = Tensor::empty({2, 5});
  EXPECT_EQ(ops::cross_entropy(logits, Tensor::from_vector<int32_t>({-1, -1}, {2}), -1, &dl).item(), 0.0);
  EXPECT_EQ(dl.to_vector<float>(), std::vector<float>(10, 0.0f));
  expect_error([&] { (void)ops::cross_entropy(logits, Tensor::from_vector<int32_t>({0, 5}, {2}), -1); },
               {"cross_entropy", "token id 5", "[0, 5)"});
  expect_error([&] { (void)ops::cross_entropy(logits, Tensor::from_vector<int32_t>({0, 1, 2}, {3}), -1); },
               {"cross_entropy", "[3]", "[2, 5]"});
}

TEST(AdamW, MatchesReferenceWithDecayMask) {
  const int64_t n = 50;
  Tensor p = random_tensor({n}, 4), m = Tensor::zeros({n}), v = Tensor::zeros({n});
  std::vector<double> pd = to_double(p), md(n, 0), vd(n, 0);
  ops::AdamWConfig cfg{1e-2f, 0.9f, 0.99f, 1e-8f, 0.1f};
  // The reference uses the f32 values the kernel gets: 1 - 0.99f is 0.01 (1 - 9.5e-7), which alone
  // would use up nearly all of the 1e-6 tolerance on v and leave none for rounding.
  const double lr = cfg.lr, b1 = cfg.beta1, b2 = cfg.beta2, eps = cfg.eps, wd = cfg.weight_decay;
  std::vector<ops::DecaySegment> segments = {{0, 30, true}, {30, 20, false}};
  for (int64_t step = 1; step <= 5; ++step) {
    Tensor g = random_tensor({n}, 10 + static_cast<uint64_t>(step));
    std::vector<double> gd = to_double(g);
    ops::adamw_step(p, g, m, v, cfg, step, segments);
    double bc1 = 1 - std::pow(b1, step), bc2 = 1 - std::pow(b2, step);
    for (int64_t i = 0; i < n; ++i) {
      if (i < 30) pd[i] *= 1 - lr * wd;
      md[i] = b1 * md[i] + (1 - b1) * gd[i];
      vd[i] = b2 * vd[i] + (1 - b2) * gd[i] * gd[i];
      pd[i] -= lr * (md[i] / bc1) / (std::sqrt(vd[i] / bc2) + eps);
    }
  }
  EXPECT_LT(scaled_max_error(p, pd), 1e-6);
  EXPECT_LT(scaled_max_error(m, md), 1e-6);
  EXPECT_LT(scaled_max_error(v, vd), 1e-6);
  Tensor g = Tensor::zeros({n});
  expect_error([&] { ops::adamw_step(p, g, m, v, cfg, 1, {{0, 30, true}}); }, {"adamw_step", "30 of 50"});
  expect_error([&] { ops::adamw_step(p, g, m, v, cfg, 0, segments); }, {"adamw_step", "step"});
}

}  // namespace
}  // namespace kvroute
