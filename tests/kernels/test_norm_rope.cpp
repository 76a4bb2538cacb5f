#include <gtest/gtest.h>

#include <cmath>

#include "core/threading.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

using testing::cancel_scaled_error;
using testing::expect_error;
using testing::random_tensor;
using testing::scaled_max_error;
using testing::to_double;

TEST(RmsNorm, ForwardAndBackwardMatchReference) {
  // C = 1 is left out: there dx = w g eps / (x^2 + eps)^1.5 cancels catastrophically in f32
  // (PyTorch's formula too), which says nothing about the kernel.
  for (int64_t C : {2, 3, 8, 37, 256}) {
    const int64_t rows = 67;
    const float eps = 1e-6f;
    Tensor x = random_tensor({rows, C}, 1, -2.0f, 2.0f), w = random_tensor({C}, 2, 0.5f, 1.5f);
    Tensor g = random_tensor({rows, C}, 3);
    Tensor out = Tensor::empty({rows, C}), rstd = Tensor::empty({rows});
    ops::rms_norm_forward(x, w, eps, out, rstd);
    Tensor dx = Tensor::empty({rows, C}), dw = Tensor::full({C}, 0.25);  // dw accumulates
    ops::rms_norm_backward(g, x, w, rstd, dx, dw);

    std::vector<double> xd = to_double(x), wd = to_double(w), gd = to_double(g);
    std::vector<double> eo(xd.size()), edx(xd.size()), edw(static_cast<size_t>(C), 0.25), ers(rows);
    // dx is a difference and dw a sum over rows, both of terms that can cancel (see the C = 1 note):
    // their rounding is relative to the terms' size, in whatever order the kernel sums.
    std::vector<double> dw_abs(static_cast<size_t>(C), 0.25);
    double dx_terms = 0, dw_terms = 0;
    for (int64_t r = 0; r < rows; ++r) {
      double ss = 0;
      for (int64_t c = 0; c < C; ++c) ss += xd[r * C + c] * xd[r * C + c];
      double s = 1.0 / std::sqrt(ss / static_cast<double>(C) + eps);
      ers[r] = s;
      double dot = 0, dot_abs = 0;
      for (int64_t c = 0; c < C; ++c) {
        dot += wd[c] * gd[r * C + c] * xd[r * C + c];
        dot_abs += std::abs(wd[c] * gd[r * C + c] * xd[r * C + c]);
      }
      for (int64_t c = 0; c < C; ++c) {
        size_t i = static_cast<size_t>(r * C + c);
        eo[i] = xd[i] * s * wd[c];
        edx[i] = s * wd[c] * gd[i] - xd[i] * s * s * s * dot / static_cast<double>(C);
        dx_terms = std::max(dx_terms, s * std::abs(wd[c] * gd[i]) +
                                          std::abs(xd[i]) * s * s * s * dot_abs / static_cast<double>(C));
        edw[c] += gd[i] * xd[i] * s;
        dw_abs[c] += std::abs(gd[i] * xd[i]) * s;
      }
    }
    for (double t : dw_abs) dw_terms = std::max(dw_terms, t);
    EXPECT_LT(scaled_max_error(out, eo), 2e-6) << "C=" << C;
    EXPECT_LT(scaled_max_error(rstd, ers), 2e-6) << "C=" << C;
    EXPECT_LT(cancel_scaled_error(dx, edx, dx_terms), 2e-6) << "C=" << C;
    EXPECT_LT(cancel_scaled_error(dw, edw, dw_terms), 2e-6) << "C=" << C;
  }
  Tensor out = Tensor::empty({2, 4}), rstd = Tensor::empty({2});
  expect_error([&] { ops::rms_norm_forward(Tensor::zeros({2, 4}), Tensor::zeros({5}), 1e-6f, out, rstd); },
               {"rms_norm_forward", "[5]", "[2, 4]"});
}

TEST(RmsNorm, Bf16OutputIsTheF32OutputRounded) {
  // The decoder layer's norms write their output (the projections' GEMM input) in bf16 on the CPU
  // with bf16 GEMMs: bit-identical to rounding the f32 output, with the same rstd.
  Tensor x = random_tensor({7, 3, 96}, 31, -3.0f, 3.0f), w = random_tensor({96}, 32, 0.5f, 1.5f);
  Tensor out = Tensor::empty(x.shape()), rstd = Tensor::empty({21});
  Tensor out16 = Tensor::empty(x.shape(), DType::BF16), rstd16 = Tensor::empty({21});
  ops::rms_norm_forward(x, w, 1e-6f, out, rstd);
  ops::rms_norm_forward(x, w, 1e-6f, out16, rstd16);
  Tensor rounded = ops::cast(out, DType::BF16);
  const auto* a = static_cast<const uint16_t*>(out16.raw_data());
  const auto* b = static_cast<const uint16_t*>(rounded.raw_data());
  EXPECT_EQ(std::vector<uint16_t>(a, a + out16.numel()), std::vector<uint16_t>(b, b + rounded.numel()));
  EXPECT_EQ(rstd16.to_vector<float>(), rstd.to_vector<float>());
}

TEST(RmsNorm, WeightGradientIndependentOfThreadCount) {
  Tensor x = random_tensor({1000, 64}, 4), w = random_tensor({64}, 5), g = random_tensor({1000, 64}, 6);
  Tensor out = Tensor::empty({1000, 64}), rstd = Tensor::empty({1000}), dx = Tensor::empty({1000, 64});
  ops::rms_norm_forward(x, w, 1e-5f, out, rstd);
  int threads = num_threads();
  std::vector<std::vector<float>> results;
  for (int t : {1, 2, 3}) {
    set_num_threads(t);
    Tensor dw = Tensor::zeros({64});
    ops::rms_norm_backward(g, x, w, rstd, dx, dw);
    results.push_back(dw.to_vector<float>());
  }
  set_num_threads(threads);
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

std::vector<double> reference_rope(const Tensor& x, const std::vector<double>& inv_freq, int64_t offset, int sign) {
  std::vector<double> xd = to_double(x), out(xd.size());
  const int64_t B = x.size(0), T = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < half; ++i) {
          double angle = static_cast<double>(offset + t) * inv_freq[static_cast<size_t>(i)];
          double c = std::cos(angle), s = sign * std::sin(angle);
          size_t base = static_cast<size_t>(((b * T + t) * H + h) * D);
          double x1 = xd[base + i], x2 = xd[base + i + half];
          out[base + i] = x1 * c - x2 * s;
          out[base + i + half] = x2 * c + x1 * s;
        }
  return out;
}

std::vector<double> reference_rope(const Tensor& x, double theta, int64_t offset, int sign) {
  std::vector<double> inv_freq;
  for (int64_t i = 0; i < x.size(3) / 2; ++i) inv_freq.push_back(std::pow(theta, -2.0 * i / static_cast<double>(x.size(3))));
  return reference_rope(x, inv_freq, offset, sign);
}

TEST(Rope, MatchesReferenceAndItsBackwardIsTheInverse) {
  for (int64_t D : {8, 32, 64, 128}) {
    Tensor x = random_tensor({2, 19, 3, D}, static_cast<uint64_t>(D));
    Tensor out = Tensor::empty(x.shape()), back = Tensor::empty(x.shape());
    ops::rope_forward(x, {10000.0}, 5, out);
    EXPECT_LT(scaled_max_error(out, reference_rope(x, 10000.0, 5, +1)), 1e-6) << "D=" << D;
    // The rotation is orthogonal: its backward (transpose) undoes it.
    ops::rope_backward(out, {10000.0}, 5, back);
    EXPECT_LT(scaled_max_error(back, to_double(x)), 1e-6);
    ops::rope_backward(x, {1e6}, 3, back);
    EXPECT_LT(scaled_max_error(back, reference_rope(x, 1e6, 3, -1)), 1e-6);
  }
}

// Packed rows: with per-token positions, each sequence of a row is rotated exactly as if it were
// alone at position 0 (the same table values: bit-identical), forward and backward.
TEST(Rope, PackedPositionsRotateEachSequenceFromZero) {
  const std::vector<int64_t> lengths = {5, 1, 13};
  Tensor x = random_tensor({1, 19, 2, 16}, 61);
  Tensor positions = Tensor::empty({1, 19}, DType::I32);
  int64_t start = 0;
  for (int64_t len : lengths) {
    for (int64_t t = 0; t < len; ++t) positions.data<int32_t>()[start + t] = static_cast<int32_t>(t);
    start += len;
  }
  for (int sign : {+1, -1}) {
    Tensor out = Tensor::empty(x.shape());
    if (sign > 0) ops::rope_forward(x, {10000.0}, 0, out, positions);
    else ops::rope_backward(x, {10000.0}, 0, out, positions);
    start = 0;
    for (int64_t len : lengths) {
      Tensor part = x.slice(1, start, start + len).contiguous(), alone = Tensor::empty(part.shape());
      if (sign > 0) ops::rope_forward(part, {10000.0}, 0, alone);
      else ops::rope_backward(part, {10000.0}, 0, alone);
      EXPECT_EQ(out.slice(1, start, start + len).contiguous().to_vector<float>(), alone.to_vector<float>())
          << "sequence at " << start << " sign " << sign;
      start += len;
    }
  }
  Tensor out = Tensor::empty(x.shape());
  positions.data<int32_t>()[3] = -1;
  expect_error([&] { ops::rope_forward(x, {10000.0}, 0, out, positions); }, {"rope_forward", "positions[0, 3] = -1"});
  positions.data<int32_t>()[3] = 3;
  expect_error([&] { ops::rope_forward(x, {10000.0}, 2, out, positions); },
               {"rope_forward", "position_offset must be 0"});
}

// Llama 3.1's frequency rescaling, written from its definition in frequencies rather than
// wavelengths: f = theta^(-2i/D); f < 2*pi*low/orig: f/factor; f > 2*pi*high/orig: f; else blended
// with s = (orig*f/(2*pi) - low)/(high - low).
TEST(Rope, Llama3ScalingMatchesItsDefinitionInAllThreeBands) {
  const double pi = 3.14159265358979323846;
  for (const auto& [rope, D] : {std::pair<ops::RopeConfig, int64_t>{{500000.0, 8.0, 1.0, 4.0, 8192.0}, 128},
                                {{10000.0, 4.0, 1.0, 4.0, 32.0}, 16}}) {
    std::vector<double> inv_freq;
    int low = 0, high = 0, mid = 0;
    for (int64_t i = 0; i < D / 2; ++i) {
      const double f = std::pow(rope.theta, -2.0 * i / static_cast<double>(D));
      if (f < 2 * pi * rope.low_freq_factor / rope.original_max_position) {
        inv_freq.push_back(f / rope.llama3_factor);
        ++low;
      } else if (f > 2 * pi * rope.high_freq_factor / rope.original_max_position) {
        inv_freq.push_back(f);
        ++high;
      } else {
        const double s = (rope.original_max_position * f / (2 * pi) - rope.low_freq_factor) /
                         (rope.high_freq_factor - rope.low_freq_factor);
        inv_freq.push_back((1 - s) * f / rope.llama3_factor + s * f);
        ++mid;
      }
      EXPECT_NEAR(ops::rope_inv_freq(rope, i, D), inv_freq.back(), 1e-12 * f) << "i=" << i << " D=" << D;
    }
    EXPECT_GT(low, 0);
    EXPECT_GT(high, 0);
    EXPECT_GT(mid, 0);
    Tensor x = random_tensor({1, 24, 2, D}, 11);
    Tensor out = Tensor::empty(x.shape());
    ops::rope_forward(x, rope, 4000, out);
    EXPECT_LT(scaled_max_error(out, reference_rope(x, inv_freq, 4000, +1)), 1e-5) << "D=" << D;
    ops::rope_backward(x, rope, 4000, out);
    EXPECT_LT(scaled_max_error(out, reference_rope(x, inv_freq, 4000, -1)), 1e-5) << "D=" << D;
  }
  Tensor out = Tensor::empty({1, 2, 2, 8});
  expect_error([&] { ops::rope_forward(Tensor::zeros({1, 2, 2, 8}), {1e4, 8.0, 4.0, 1.0, 8192.0}, 0, out); },
               {"rope_forward", "llama3", "high_freq_factor 1"});
}

TEST(Rope, PositionOffsetMatchesTheSameTokensInALongerSequence) {
  // Decoding: rotating token t alone at offset t equals row t of the full-sequence rotation.
  Tensor x = random_tensor({1, 40, 2, 16}, 7);
  Tensor full = Tensor::empty(x.shape());
  ops::rope_forward(x, {500000.0}, 0, full);
  Tensor last = x.slice(1, 33, 40).contiguous();
  Tensor part = Tensor::empty(last.shape());
  ops::rope_forward(last, {500000.0}, 33, part);
  EXPECT_EQ(part.to_vector<float>(), full.slice(1, 33, 40).contiguous().to_vector<float>());
  Tensor out = Tensor::empty({1, 2, 2, 7});
  expect_error([&] { ops::rope_forward(Tensor::zeros({1, 2, 2, 7}), {1e4}, 0, out); }, {"rope_forward", "even", "7"});
}

}  // namespace
}  // namespace kvroute
