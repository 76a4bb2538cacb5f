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

// The classifier fused with the loss against the double reference of logits = h W^T: several
// blocks of rows (vocab 16384 makes a block 128 rows), ignored rows scattered and in a run (they
// are dropped before the GEMMs; their dh is 0), a gradient scale, and enough rows that the gather
// and scatter run threaded.
TEST(LinearCrossEntropy, MatchesTheReferenceAndTheUnfusedOps) {
  const int64_t N = 520, H = 128, V = 16384, ignore = -100;
  Tensor h = random_tensor({N, H}, 31), w = random_tensor({V, H}, 32, -0.2f, 0.2f);
  std::vector<int32_t> t(N);
  Philox rng(33);
  for (auto& x : t) x = rng.uniform() < 0.2 ? ignore : static_cast<int32_t>(rng.uniform_int(V));
  for (int64_t r = 130; r < 270; ++r) t[r] = ignore;
  Tensor targets = Tensor::from_vector(t, {N});
  Tensor dh = Tensor::empty({N, H}), dw = Tensor::empty({V, H});
  const double loss = ops::linear_cross_entropy(h, w, targets, ignore, {}, &dh, &dw, 0.5f).item();

  const std::vector<double> hd = to_double(h), wd = to_double(w);
  std::vector<double> dh_ref(N * H, 0.0), dw_ref(V * H, 0.0), z(V);
  int valid = 0;
  for (int64_t r = 0; r < N; ++r) valid += t[r] != ignore;
  double total = 0;
  for (int64_t r = 0; r < N; ++r) {
    if (t[r] == ignore) continue;
    double m = -1e300, sum = 0;
    for (int64_t c = 0; c < V; ++c) {
      double dot = 0;
      for (int64_t k = 0; k < H; ++k) dot += hd[r * H + k] * wd[c * H + k];
      z[c] = dot;
      m = std::max(m, dot);
    }
    for (int64_t c = 0; c < V; ++c) sum += std::exp(z[c] - m);
    total += m + std::log(sum) - z[t[r]];
    for (int64_t c = 0; c < V; ++c) {
      const double g = 0.5 * (std::exp(z[c] - m) / sum - (c == t[r])) / valid;
      for (int64_t k = 0; k < H; ++k) {
        dh_ref[r * H + k] += g * wd[c * H + k];
        dw_ref[c * H + k] += g * hd[r * H + k];
      }
    }
  }
  EXPECT_NEAR(loss, total / valid, 1e-5 * std::abs(total / valid));
  EXPECT_LT(scaled_max_error(dh, dh_ref), 1e-5);
  EXPECT_LT(scaled_max_error(dw, dw_ref), 1e-5);
  for (int64_t r = 130; r < 270; ++r) EXPECT_EQ(dh.data<float>()[r * H + 7], 0.0f) << "row " << r;
  // The loss alone (evaluation) is the same loss.
  EXPECT_NEAR(ops::linear_cross_entropy(h, w, targets, ignore).item(), loss, 1e-6 * std::abs(loss));

  // bf16 GEMMs: the same roundings as the unfused ops (logits GEMM, cross_entropy, dh and dW GEMMs
  // on the bf16-rounded gradient), up to f32 summation order (dW summed over blocks).
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  const ops::Execution bf16{.cpu_bf16_gemm = true};
  Tensor logits = ops::matmul(h, w, false, true, bf16);
  const double loss_unfused = ops::cross_entropy(logits, targets, ignore, &logits, 0.5f).item();
  Tensor dh_unfused = ops::matmul(logits, w, false, false, bf16), dw_unfused = ops::matmul(logits, h, true, false, bf16);
  Tensor dh16 = Tensor::empty({N, H}), dw16 = Tensor::empty({V, H});
  const double loss16 = ops::linear_cross_entropy(h, w, targets, ignore, bf16, &dh16, &dw16, 0.5f).item();
  EXPECT_NEAR(loss16, loss_unfused, 1e-6 * std::abs(loss_unfused));
  EXPECT_LT(scaled_max_error(dh16, to_double(dh_unfused)), 1e-5);
  EXPECT_LT(scaled_max_error(dw16, to_double(dw_unfused)), 1e-5);
  // and within bf16 rounding of the f32 result.
  EXPECT_LT(scaled_max_error(dh16, dh_ref), 2e-2);
  EXPECT_LT(scaled_max_error(dw16, dw_ref), 2e-2);
}

TEST(LinearCrossEntropy, AllIgnoredIsZeroAndBadArgumentsAreErrors) {
  Tensor h = random_tensor({3, 4}, 34), w = random_tensor({6, 4}, 35);
  Tensor dh = random_tensor({3, 4}, 36), dw = random_tensor({6, 4}, 37);
  Tensor ignored = Tensor::from_vector<int32_t>({-1, -1, -1}, {3});
  EXPECT_EQ(ops::linear_cross_entropy(h, w, ignored, -1, {}, &dh, &dw).item(), 0.0);
  EXPECT_EQ(dh.to_vector<float>(), std::vector<float>(12, 0.0f));
  EXPECT_EQ(dw.to_vector<float>(), std::vector<float>(24, 0.0f));
  expect_error([&] { (void)ops::linear_cross_entropy(h, w, Tensor::from_vector<int32_t>({0, 6, 1}, {3}), -1); },
               {"linear_cross_entropy", "token id 6", "[0, 6)"});
  expect_error([&] { (void)ops::linear_cross_entropy(h, random_tensor({6, 5}, 38), ignored, -1); },
               {"linear_cross_entropy", "[3, 4]", "[6, 5]"});
  expect_error([&] { (void)ops::linear_cross_entropy(h, w, Tensor::from_vector<int32_t>({0, 1}, {2}), -1); },
               {"linear_cross_entropy", "[2]", "[3, 4]"});
  Tensor wrong = Tensor::empty({6, 5});
  expect_error([&] { (void)ops::linear_cross_entropy(h, w, ignored, -1, {}, &dh, &wrong); },
               {"linear_cross_entropy", "[6, 5]", "[6, 4]"});
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
