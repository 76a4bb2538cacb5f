#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <cstdlib>

#include "core/dtype.h"
#include "core/threading.h"

#include "kernels/ops.h"
#include "kernels/profile.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

using testing::cancel_scaled_error;
using testing::expect_error;
using testing::random_tensor;

struct GemmReference {
  std::vector<double> out;
  // The largest |alpha| sum_p |a_ip b_pj| + |beta c_ij|. Any summation order (the sgemm kernel
  // OpenBLAS picks for the CPU), with or without FMA, errs by at most k 2^-24 of it (+ rounding
  // of the result): the 1e-5 below holds for every k up to about 160.
  double terms = 0;
};

// Double-precision reference: out[b] = alpha * op(a[b]) op(b[b]) + beta * c[b], on contiguous data
// given logically (a_rows x a_cols before the op).
GemmReference reference_gemm(const Tensor& a_t, const Tensor& b_t, bool ta, bool tb, float alpha, float beta,
                             const Tensor& c_t) {
  std::vector<double> a = testing::to_double(a_t.contiguous()), b = testing::to_double(b_t.contiguous());
  std::vector<double> c = testing::to_double(c_t);
  const int64_t m = ta ? a_t.size(-1) : a_t.size(-2), k = ta ? a_t.size(-2) : a_t.size(-1);
  const int64_t n = tb ? b_t.size(-2) : b_t.size(-1);
  const int64_t batch = a_t.numel() / (m * k);
  const bool shared_b = b_t.dim() == 2;
  GemmReference r;
  r.out.assign(static_cast<size_t>(batch * m * n), 0.0);
  for (int64_t bi = 0; bi < batch; ++bi) {
    const double* ap = a.data() + bi * m * k;
    const double* bp = b.data() + (shared_b ? 0 : bi * k * n);
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = 0, s_abs = 0;
        for (int64_t p = 0; p < k; ++p) {
          double av = ta ? ap[p * m + i] : ap[i * k + p];
          double bv = tb ? bp[j * k + p] : bp[p * n + j];
          s += av * bv;
          s_abs += std::abs(av * bv);
        }
        size_t idx = static_cast<size_t>((bi * m + i) * n + j);
        r.out[idx] = alpha * s + beta * c[idx];
        r.terms = std::max(r.terms, std::abs(alpha) * s_abs + std::abs(beta * c[idx]));
      }
    }
  }
  return r;
}

double gemm_error(const Tensor& out, const GemmReference& r) { return cancel_scaled_error(out, r.out, r.terms); }

struct GemmCase {
  Shape a, b;
  bool ta, tb;
};

TEST(Matmul, MatchesDoubleReferenceOnOddShapes) {
  const std::vector<GemmCase> cases = {
      {{1, 1}, {1, 1}, false, false},       {{3, 5}, {5, 7}, false, false},     {{5, 3}, {5, 7}, true, false},
      {{3, 5}, {7, 5}, false, true},        {{5, 3}, {7, 5}, true, true},       {{2, 3, 17, 9}, {2, 3, 9, 4}, false, false},
      {{4, 9, 17}, {4, 33, 9}, true, true}, {{2, 8, 64}, {64, 96}, false, false}, {{6, 1, 31}, {31, 1}, false, false},
      {{3, 7, 13}, {11, 13}, false, true},  {{129, 65}, {65, 130}, false, false},
  };
  uint64_t seed = 1;
  for (const GemmCase& gc : cases) {
    Tensor a = random_tensor(gc.a, seed++), b = random_tensor(gc.b, seed++);
    Tensor out = ops::matmul(a, b, gc.ta, gc.tb);
    Tensor zero = Tensor::zeros(out.shape());
    EXPECT_LT(gemm_error(out, reference_gemm(a, b, gc.ta, gc.tb, 1.0f, 0.0f, zero)), 1e-5)
        << "A" << fmt::format("{}", gc.a) << " B" << fmt::format("{}", gc.b) << " ta=" << gc.ta << " tb=" << gc.tb;
  }
}

TEST(Matmul, AlphaBetaAccumulate) {
  Tensor a = random_tensor({3, 20, 10}, 1), b = random_tensor({3, 10, 6}, 2);
  Tensor c = random_tensor({3, 20, 6}, 3);
  Tensor c0 = c.clone();
  ops::matmul_into(a, b, c, false, false, 0.5f, 2.0f);
  EXPECT_LT(gemm_error(c, reference_gemm(a, b, false, false, 0.5f, 2.0f, c0)), 1e-5);
}

TEST(Matmul, TransposedViewsAreReadInPlace) {
  // a^T as a strided view equals passing trans_a on the contiguous tensor.
  Tensor a = random_tensor({2, 12, 7}, 4), b = random_tensor({2, 12, 5}, 5);
  Tensor via_view = ops::matmul(a.transpose(1, 2), b);
  Tensor via_flag = ops::matmul(a, b, true, false);
  EXPECT_EQ(via_view.to_vector<float>(), via_flag.to_vector<float>());
  // A non-BLAS layout (slice with step) falls back to a copy and stays correct.
  Tensor big = random_tensor({8, 10}, 6);
  Tensor strided = big.slice(1, 0, 10, 2);  // [8, 5], stride 2
  Tensor w = random_tensor({5, 3}, 7);
  Tensor zero = Tensor::zeros({8, 3});
  EXPECT_LT(gemm_error(ops::matmul(strided, w), reference_gemm(strided, w, false, false, 1, 0, zero)), 1e-5);
}

TEST(Matmul, ShapeErrorsNameTheOpAndShapes) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5});
  expect_error([&] { (void)ops::matmul(a, b); }, {"matmul", "inner dimensions", "[2, 3]", "[4, 5]"});
  expect_error([&] { (void)ops::matmul(Tensor::zeros({2, 2, 3}), Tensor::zeros({3, 3, 4})); },
               {"matmul", "batch dimensions", "[2, 2, 3]", "[3, 3, 4]"});
  Tensor out = Tensor::zeros({2, 4});
  expect_error([&] { ops::matmul_into(a, Tensor::zeros({3, 5}), out); }, {"matmul", "output shape", "[2, 4]", "[2, 5]"});
  expect_error([&] { (void)ops::matmul(Tensor::zeros({3}, DType::I32), b); }, {"matmul", "f32", "i32[3]"});
}

// ---- bf16 GEMMs on the CPU (oneDNN) ------------------------------------------------------------

// The tensor with every element rounded to bf16 (round to nearest even), as the bf16 GEMM rounds
// its operands.
Tensor round_to_bf16(const Tensor& t) {
  std::vector<float> v = t.contiguous().to_vector<float>();
  for (float& x : v) x = bf16_to_float(float_to_bf16(x));
  return Tensor::from_vector(v, t.shape());
}

// bf16 GEMMs are asked for per call (ops::Execution), not as a process-wide mode.
const ops::Execution kBf16{.cpu_bf16_gemm = true};

const std::vector<GemmCase>& bf16_cases() {
  static const std::vector<GemmCase> cases = {
      {{1, 1}, {1, 1}, false, false},       {{3, 5}, {5, 7}, false, false},     {{5, 3}, {5, 7}, true, false},
      {{3, 5}, {7, 5}, false, true},        {{5, 3}, {7, 5}, true, true},       {{2, 3, 17, 9}, {2, 3, 9, 4}, false, false},
      {{4, 9, 17}, {4, 33, 9}, true, true}, {{2, 8, 64}, {64, 96}, false, false}, {{6, 1, 31}, {31, 1}, false, false},
      {{3, 7, 13}, {11, 13}, false, true},  {{129, 65}, {65, 130}, false, false}, {{300, 128}, {384, 128}, false, true},
      {{256, 96}, {256, 200}, true, false},
  };
  return cases;
}

TEST(MatmulBf16, EqualsTheF32ProductOfBf16RoundedOperands) {
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  EXPECT_NE(ops::cpu_matmul_description(kBf16).find("oneDNN"), std::string::npos) << ops::cpu_matmul_description(kBf16);
  uint64_t seed = 100;
  for (const GemmCase& gc : bf16_cases()) {
    Tensor a = random_tensor(gc.a, seed++), b = random_tensor(gc.b, seed++);
    Tensor out = ops::matmul(a, b, gc.ta, gc.tb, kBf16);
    Tensor zero = Tensor::zeros(out.shape());
    // Exact up to f32 accumulation once the operands are rounded (products of bf16 values are exact
    // in f32), and within bf16's rounding (each product off by < 2^-8 of its size) of the f32 GEMM.
    const std::string what = fmt::format("A{} B{} ta={} tb={}", gc.a, gc.b, gc.ta, gc.tb);
    EXPECT_LT(gemm_error(out, reference_gemm(round_to_bf16(a), round_to_bf16(b), gc.ta, gc.tb, 1, 0, zero)), 1e-5)
        << what;
    const double vs_f32 = gemm_error(out, reference_gemm(a, b, gc.ta, gc.tb, 1, 0, zero));
    EXPECT_LT(vs_f32, 1.0 / 128) << what;
    if (a.numel() * b.numel() > 1000) {
      EXPECT_GT(vs_f32, 1e-6) << what << ": the operands were not rounded";
    }
  }
}

TEST(MatmulBf16, Bf16OperandsAreReadInPlaceAsTheF32OnesWouldBeRounded) {
  // A norm's output or a gradient rounded once and read by several GEMMs: an operand already in bf16
  // gives the bits of the same operand in f32 (rounded inside the GEMM), in any orientation; the
  // result is f32.
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  uint64_t seed = 300;
  for (const GemmCase& gc : bf16_cases()) {
    Tensor a = random_tensor(gc.a, seed++), b = random_tensor(gc.b, seed++);
    Tensor a16 = ops::cast(a, DType::BF16), b16 = ops::cast(b, DType::BF16);
    const std::vector<float> want = ops::matmul(a, b, gc.ta, gc.tb, kBf16).to_vector<float>();
    const std::string what = fmt::format("A{} B{} ta={} tb={}", gc.a, gc.b, gc.ta, gc.tb);
    for (const auto& [x, y] : {std::pair{a16, b}, std::pair{a, b16}, std::pair{a16, b16}}) {
      Tensor out = ops::matmul(x, y, gc.ta, gc.tb, kBf16);
      EXPECT_EQ(out.dtype(), DType::F32) << what;
      EXPECT_EQ(out.to_vector<float>(), want) << what << " A " << x.str() << " B " << y.str();
    }
  }
  // A transposed bf16 view is read in place too.
  Tensor a = random_tensor({40, 24}, 1), b = random_tensor({24, 16}, 2);
  Tensor at16 = ops::cast(a.transpose(0, 1).contiguous(), DType::BF16).transpose(0, 1);
  EXPECT_EQ(ops::matmul(at16, b, false, false, kBf16).to_vector<float>(),
            ops::matmul(a, b, false, false, kBf16).to_vector<float>());
  // bf16 operands without bf16 GEMMs: an error naming why, never a silent reinterpretation.
  expect_error([&] { (void)ops::matmul(ops::cast(a, DType::BF16), b); }, {"matmul", "need bf16 GEMMs"});
}

TEST(MatmulBf16, AlphaBetaAccumulateAndTransposedViews) {
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  Tensor a = random_tensor({3, 20, 10}, 1), b = random_tensor({3, 10, 6}, 2);
  Tensor c = random_tensor({3, 20, 6}, 3);
  Tensor c0 = c.clone();
  ops::matmul_into(a, b, c, false, false, 0.5f, 2.0f, kBf16);  // how parameter gradients accumulate
  EXPECT_LT(gemm_error(c, reference_gemm(round_to_bf16(a), round_to_bf16(b), false, false, 0.5f, 2.0f, c0)), 1e-5);
  // The same shape twice with other alpha/beta: cached primitives are keyed by them.
  Tensor c1 = c0.clone();
  ops::matmul_into(a, b, c1, false, false, 1.0f, 1.0f, kBf16);
  EXPECT_LT(gemm_error(c1, reference_gemm(round_to_bf16(a), round_to_bf16(b), false, false, 1.0f, 1.0f, c0)), 1e-5);
  Tensor via_view = ops::matmul(a.transpose(1, 2).contiguous().transpose(1, 2), b, false, false, kBf16);
  Tensor via_plain = ops::matmul(a, b, false, false, kBf16);
  EXPECT_EQ(via_view.to_vector<float>(), via_plain.to_vector<float>());
  // Non-finite operands propagate (the trainer's non-finite checks rely on it).
  Tensor bad = a.clone();
  bad.data<float>()[0] = std::nanf("");
  std::vector<float> out = ops::matmul(bad, b, false, false, kBf16).to_vector<float>();
  EXPECT_TRUE(std::isnan(out[0]));
  bad.data<float>()[0] = INFINITY;
  out = ops::matmul(bad, b, false, false, kBf16).to_vector<float>();
  // The default execution is f32: the same call without kBf16 is not rounded.
  EXPECT_NE(ops::matmul(a, b).to_vector<float>(), via_plain.to_vector<float>());
  EXPECT_FALSE(std::isfinite(out[0]));
}

TEST(MatmulBf16, ResultsDoNotDependOnTheThreadCount) {
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  Tensor a = random_tensor({512, 256}, 11), b = random_tensor({768, 256}, 12);
  std::vector<std::vector<float>> results;
  const int before = num_threads();
  for (int t : {1, 2, 3}) {
    set_num_threads(t);
    results.push_back(ops::matmul(a, b, false, true, kBf16).to_vector<float>());
  }
  set_num_threads(before);
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

// Runs on every machine through the ctest entry cpu_bf16_fallback, which caps oneDNN at AVX-512
// without bf16 (DNNL_MAX_CPU_ISA); in the plain run it applies only to a CPU without bf16.
TEST(MatmulBf16Fallback, WithoutBf16InstructionsTheGemmsStayF32) {
  if (std::getenv("DNNL_MAX_CPU_ISA") == nullptr && ops::cpu_bf16_supported()) {
    GTEST_SKIP() << "this CPU has bf16 instructions; ctest -R cpu_bf16_fallback forces the fallback";
  }
  EXPECT_FALSE(ops::cpu_bf16_supported());
  EXPECT_NE(ops::cpu_bf16_fallback_notice().find("no bf16 instructions"), std::string::npos);
  EXPECT_NE(ops::cpu_matmul_description({}).find("f32 GEMMs via"), std::string::npos);
  Tensor a = random_tensor({40, 30}, 21), b = random_tensor({30, 20}, 22);
  Tensor zero = Tensor::zeros({40, 20});
  EXPECT_LT(gemm_error(ops::matmul(a, b), reference_gemm(a, b, false, false, 1, 0, zero)), 1e-5);
  // A bf16 GEMM asked for anyway is an error naming why, not a silent f32 one.
  expect_error([&] { (void)ops::matmul(a, b, false, false, kBf16); }, {"matmul", "no bf16 instructions"});
}

// The f32 path (oneDNN with AVX-512, OpenBLAS below) gives the same bits at any thread count, as
// the rest of the step does (resumes and reruns stay bit-identical).
TEST(Matmul, F32ResultsDoNotDependOnTheThreadCount) {
  Tensor a = random_tensor({512, 256}, 31), b = random_tensor({768, 256}, 32), g = random_tensor({512, 768}, 33);
  std::vector<std::vector<float>> results;
  const int before = num_threads();
  for (int t : {1, 2, 3}) {
    set_num_threads(t);
    std::vector<float> r = ops::matmul(a, b, false, true).to_vector<float>();
    const std::vector<float> dw = ops::matmul(g, a, true, false).to_vector<float>();  // a weight gradient's shape
    r.insert(r.end(), dw.begin(), dw.end());
    results.push_back(r);
  }
  set_num_threads(before);
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

// The per-op profile (kernels/profile.h): off, nothing is recorded; on, each op call counts once
// under its family (matmul() calling matmul_into() is one matmul) in the phase of its caller.
TEST(OpProfile, CountsOuterOpsPerPhase) {
  Tensor a = random_tensor({8, 4}, 1), b = random_tensor({4, 3}, 2);
  (void)ops::matmul(a, b);
  EXPECT_TRUE(ops::profile::take().empty());
  ops::profile::enable(true);
  (void)ops::matmul(a, b);
  (void)ops::matmul(a, b);
  {
    ops::profile::PhaseScope backward(ops::profile::Phase::Backward);
    (void)ops::add(a, a);
  }
  (void)ops::scale(a, 2.0f);
  ops::profile::enable(false);
  std::map<std::string, int64_t> calls;
  for (const auto& e : ops::profile::take()) {
    calls[std::string(ops::profile::phase_name(e.phase)) + "/" + e.op] = e.calls;
    EXPECT_GE(e.seconds, 0.0);
  }
  EXPECT_EQ(calls, (std::map<std::string, int64_t>{{"forward/matmul", 2}, {"backward/add", 1}, {"forward/scale", 1}}));
  EXPECT_TRUE(ops::profile::take().empty());  // take() resets
}

}  // namespace
}  // namespace kvroute
