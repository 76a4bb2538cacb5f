#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/device_runtime.h"
#include "core/dtype.h"
#include "core/threading.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

using testing::cancel_scaled_error;
using testing::expect_error;
using testing::random_tensor;
using testing::scaled_max_error;
using testing::to_double;

TEST(Elementwise, AddMulScaleAxpy) {
  for (int64_t n : {1, 7, 1000, 100003}) {
    Tensor a = random_tensor({n}, 1), b = random_tensor({n}, 2);
    std::vector<double> ad = to_double(a), bd = to_double(b), sum(ad.size()), prod(ad.size()), sc(ad.size()),
                        ax(ad.size());
    double ax_terms = 0;
    for (size_t i = 0; i < ad.size(); ++i) {
      sum[i] = ad[i] + bd[i];
      prod[i] = ad[i] * bd[i];
      sc[i] = ad[i] * static_cast<double>(0.3f);  // the factor the op gets: 0.3 rounded to f32
      ax[i] = bd[i] + 2.5 * ad[i];
      ax_terms = std::max(ax_terms, std::abs(bd[i]) + 2.5 * std::abs(ad[i]));
    }
    // One IEEE operation each: the error is the result's own rounding on any CPU.
    EXPECT_LT(scaled_max_error(ops::add(a, b), sum), 1e-7);
    EXPECT_LT(scaled_max_error(ops::mul(a, b), prod), 1e-7);
    EXPECT_LT(scaled_max_error(ops::scale(a, 0.3f), sc), 1e-7);
    // y + 2.5 a: one rounding with FMA, two without, relative to the terms (n = 1 can cancel).
    Tensor y = b.clone();
    ops::axpy_(2.5f, a, y);
    EXPECT_LT(cancel_scaled_error(y, ax, ax_terms), 1e-6);
  }
  expect_error([] { (void)ops::add(Tensor::zeros({2, 3}), Tensor::zeros({3, 2})); }, {"add", "[2, 3]", "[3, 2]"});
}

TEST(Elementwise, AddIntoMayAliasAnInput) {
  Tensor a = random_tensor({50}, 3), b = random_tensor({50}, 4);
  Tensor expected = ops::add(a, b);
  ops::add_into(a, b, a);
  EXPECT_EQ(a.to_vector<float>(), expected.to_vector<float>());
}

TEST(Reductions, SumMeanSquaredNormInDouble) {
  Tensor a = random_tensor({3, 33335}, 5);
  std::vector<double> ad = to_double(a);
  double s = 0, ss = 0;
  for (double x : ad) {
    s += x;
    ss += x * x;
  }
  EXPECT_NEAR(ops::sum(a).item(), s, 1e-3);
  EXPECT_NEAR(ops::mean(a).item(), s / static_cast<double>(ad.size()), 1e-7);
  EXPECT_NEAR(ops::squared_norm(a).item(), ss, 1e-6 * ss);
  // Deterministic for any thread count.
  int threads = num_threads();
  set_num_threads(1);
  double one = ops::sum(a).item();
  set_num_threads(2);
  double two = ops::sum(a).item();
  set_num_threads(threads);
  EXPECT_EQ(one, two);
  Tensor rows = ops::sum_last_dim(a.slice(1, 0, 100));
  std::vector<double> expected(3, 0.0);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 100; ++c) expected[r] += ad[r * 33335 + c];
  EXPECT_LT(scaled_max_error(rows, expected), 1e-6);
}

TEST(Embedding, ForwardGathersRowsAndBackwardScatterAdds) {
  const int64_t V = 50, C = 37;
  Tensor w = random_tensor({V, C}, 6);
  std::vector<int32_t> ids = {3, 49, 3, 0, 17, 3, 49};
  Tensor tokens = Tensor::from_vector(ids, {7});
  Tensor out = ops::embedding_forward(w, tokens.view({1, 7}));
  EXPECT_EQ(out.shape(), (Shape{1, 7, C}));
  std::vector<float> wv = w.to_vector<float>(), ov = out.to_vector<float>();
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t c = 0; c < C; ++c) EXPECT_EQ(ov[i * C + c], wv[ids[i] * C + c]);

  Tensor g = random_tensor({7, C}, 7);
  Tensor dw = Tensor::zeros({V, C});
  ops::embedding_backward(g, tokens, dw);
  std::vector<double> expected(V * C, 0.0), gd = to_double(g);
  for (size_t i = 0; i < ids.size(); ++i)
    for (int64_t c = 0; c < C; ++c) expected[ids[i] * C + c] += gd[i * C + c];
  EXPECT_LT(scaled_max_error(dw, expected), 1e-6);
  // u16 and u32 ids give the same result.
  Tensor out16 = ops::embedding_forward(w, tokens.to(DType::U16));
  EXPECT_EQ(out16.to_vector<float>(), ov);
  expect_error([&] { (void)ops::embedding_forward(w, Tensor::from_vector<int32_t>({1, 50}, {2})); },
               {"embedding_forward", "token id 50", "index 1", "[0, 50)"});
}

TEST(Embedding, BackwardIsBitIdenticalForAnyThreadCount) {
  const int64_t V = 64, C = 96, N = 4096;
  std::vector<int32_t> ids(N);
  Philox rng(9);
  for (auto& id : ids) id = static_cast<int32_t>(rng.uniform_int(V));
  Tensor tokens = Tensor::from_vector(ids, {N});
  Tensor g = random_tensor({N, C}, 8);
  int threads = num_threads();
  std::vector<std::vector<float>> results;
  for (int t : {1, 2, 3}) {
    set_num_threads(t);
    Tensor dw = Tensor::zeros({V, C});
    ops::embedding_backward(g, tokens, dw);
    results.push_back(dw.to_vector<float>());
  }
  set_num_threads(threads);
  EXPECT_EQ(results[0], results[1]);
  EXPECT_EQ(results[0], results[2]);
}

TEST(Swiglu, ForwardAndBackwardMatchReference) {
  Tensor gate = random_tensor({4, 129}, 9, -6.0f, 6.0f), up = random_tensor({4, 129}, 10);
  Tensor dout = random_tensor({4, 129}, 11);
  Tensor out = Tensor::empty({4, 129}), dgate = Tensor::empty({4, 129}), dup = Tensor::empty({4, 129});
  ops::swiglu_forward(gate, up, out);
  ops::swiglu_backward(dout, gate, up, dgate, dup);
  std::vector<double> g = to_double(gate), u = to_double(up), d = to_double(dout);
  std::vector<double> eo(g.size()), edg(g.size()), edu(g.size());
  for (size_t i = 0; i < g.size(); ++i) {
    double sig = 1.0 / (1.0 + std::exp(-g[i]));
    eo[i] = g[i] * sig * u[i];
    edu[i] = d[i] * g[i] * sig;
    edg[i] = d[i] * u[i] * (sig + g[i] * sig * (1.0 - sig));
  }
  EXPECT_LT(scaled_max_error(out, eo), 1e-6);
  EXPECT_LT(scaled_max_error(dgate, edg), 1e-6);
  EXPECT_LT(scaled_max_error(dup, edu), 1e-6);
}

TEST(Cast, F32Bf16RoundTrip) {
  Tensor a = random_tensor({1000}, 12, -100.0f, 100.0f);
  Tensor b = ops::cast(a, DType::BF16);
  EXPECT_EQ(b.dtype(), DType::BF16);
  std::vector<float> back = ops::cast(b, DType::F32).to_vector<float>(), av = a.to_vector<float>();
  for (size_t i = 0; i < av.size(); ++i) {
    EXPECT_LE(std::abs(back[i] - av[i]), std::abs(av[i]) * (1.0f / 256));  // half an ulp of 8 bits
    EXPECT_EQ(back[i], bf16_to_float(float_to_bf16(av[i])));
  }
}

// bf16 bits of a tensor, for bit-exact comparisons.
std::vector<uint16_t> bits(const Tensor& t) {
  const auto* p = static_cast<const uint16_t*>(t.contiguous().raw_data());
  return std::vector<uint16_t>(p, p + t.numel());
}

TEST(Cast, ToBf16IsBitIdenticalToTheScalarRoundingOnSpecialValues) {
  // The parallel CPU cast (the GEMM operands' rounding) against core/dtype.h's float_to_bf16.
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, INFINITY, -INFINITY, std::nanf(""), -std::nanf(""),
                          std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                          std::numeric_limits<float>::denorm_min(), -1e-40f, 1.00390625f, 1.01171875f,
                          3.3895314e38f, 1.0000001f};
  Tensor r = random_tensor({3, 333}, 13, -1e6f, 1e6f);
  for (float x : r.to_vector<float>()) v.push_back(x);
  Tensor a = Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
  std::vector<uint16_t> got = bits(ops::cast(a, DType::BF16));
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(got[i], float_to_bf16(v[i]).bits) << "value " << v[i];
}

TEST(Swiglu, Bf16OutputsAreTheF32OnesRounded) {
  // On the CPU the MLP writes SwiGLU's output (the down projection's GEMM input) and, backward, the
  // gate and up gradients (their projections' GEMM inputs) in bf16 directly: bit-identical to
  // rounding the f32 results.
  const Shape shape{5, 1031};
  Tensor gate = random_tensor(shape, 21, -8.0f, 8.0f), up = random_tensor(shape, 22), dout = random_tensor(shape, 23);
  Tensor out = Tensor::empty(shape), dgate = Tensor::empty(shape), dup = Tensor::empty(shape);
  ops::swiglu_forward(gate, up, out);
  ops::swiglu_backward(dout, gate, up, dgate, dup);
  Tensor out16 = Tensor::empty(shape, DType::BF16), dgate16 = Tensor::empty(shape, DType::BF16),
         dup16 = Tensor::empty(shape, DType::BF16);
  ops::swiglu_forward(gate, up, out16);
  ops::swiglu_backward(dout, gate, up, dgate16, dup16);
  EXPECT_EQ(bits(out16), bits(ops::cast(out, DType::BF16)));
  EXPECT_EQ(bits(dgate16), bits(ops::cast(dgate, DType::BF16)));
  EXPECT_EQ(bits(dup16), bits(ops::cast(dup, DType::BF16)));
  // Mixed output dtypes are an error, not a silent mix.
  expect_error([&] { ops::swiglu_backward(dout, gate, up, dgate16, dup); }, {"swiglu_backward", "output must be bf16"});
}

// Without the CUDA backend, kernels/cuda/stub.cpp stands in for the CUDA kernels: the op layer
// dispatches the same way, and a CUDA call is an error naming the op and the device.
TEST(CudaStub, EachFunctionFailsNamingTheOp) {
  if (device_runtime::cuda_built()) GTEST_SKIP() << "built with CUDA: the real kernels are linked";
  float x = 0.0f;
  expect_error([&] { cuda::add(1, DType::F32, &x, &x, &x, 1); }, {"add: cuda:1", "CUDA backend"});
  expect_error([&] { (void)cuda::sum(0, DType::F32, &x, 1, true); }, {"squared_norm: cuda:0", "CUDA backend"});
  expect_error([&] { cuda::rope(0, DType::BF16, &x, &x, 1, 1, 1, 2, ops::RopeConfig{1e4}, 0, -1); }, {"rope_backward: cuda:0"});
  const ops::AdamWConfig config;
  const ops::DecaySegment segment{0, 1, true};
  expect_error([&] { cuda::adamw(2, &x, &x, &x, &x, 1, config, 1, &segment, 1, nullptr, DType::F32); },
               {"adamw_step: cuda:2", "CUDA backend"});
}

}  // namespace
}  // namespace kvroute
