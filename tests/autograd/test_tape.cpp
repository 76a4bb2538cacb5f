#include <gtest/gtest.h>

#include <map>
#include <string>

#include "autograd/functions.h"
#include "kernels/ops.h"
#include "kernels/profile.h"
#include "tests/test_util.h"

namespace kvroute::autograd {
namespace {

using testing::expect_error;
using testing::random_tensor;

TEST(Linear, Bf16GemmsRoundEachOperandOnceWithTheSameResults) {
  // With bf16 GEMMs on the CPU, linear rounds its input once for the forward and the weight
  // gradient's GEMMs, and the incoming gradient once for both backward GEMMs: the same bits as the
  // plain GEMMs (each rounding its f32 operands), whether x comes in f32 or already in bf16.
  if (!ops::cpu_bf16_supported()) GTEST_SKIP() << ops::cpu_bf16_fallback_notice();
  const ops::Execution bf16{.cpu_bf16_gemm = true};
  Tensor xd = random_tensor({3, 17, 48}, 41), wd = random_tensor({40, 48}, 42), gd = random_tensor({3, 17, 40}, 43);
  Tensor x2 = xd.reshape({-1, 48}), g2 = gd.reshape({-1, 40});
  const std::vector<float> want_y = ops::matmul(x2, wd, false, true, bf16).to_vector<float>();
  const std::vector<float> want_dx = ops::matmul(g2, wd, false, false, bf16).to_vector<float>();
  const std::vector<float> want_dw = ops::matmul(g2, x2, true, false, DType::F32, bf16).to_vector<float>();
  for (DType in : {DType::F32, DType::BF16}) {
    // A bf16 input stands for a norm's output (a leaf must be f32 to require grad).
    const bool f32 = in == DType::F32;
    Variable x(f32 ? xd.clone() : ops::cast(xd, DType::BF16), f32);
    Variable w(wd.clone(), true);
    Variable y = linear(x, w, bf16);
    EXPECT_EQ(y.data().to_vector<float>(), want_y);
    y.backward(gd);
    if (f32) {
      EXPECT_EQ(x.grad().dtype(), DType::F32);
      EXPECT_EQ(x.grad().shape(), xd.shape());
      EXPECT_EQ(x.grad().to_vector<float>(), want_dx);
    }
    EXPECT_EQ(w.grad().to_vector<float>(), want_dw);
  }
  EXPECT_EQ(gemm_input_dtype(xd, bf16), DType::BF16);
  EXPECT_EQ(gemm_input_dtype(xd, {}), DType::F32);
}

TEST(Checkpoint, RecomputesInTheBackwardWithTheSameGradients) {
  // f(x, w) = (x w^T) * (x w^T) + x w^T summed, x read twice inside and once outside.
  Tensor xd = random_tensor({5, 6}, 51), wd = random_tensor({4, 6}, 52);
  auto f = [](const std::vector<Variable>& in) {
    Variable y = linear(in[0], in[1]);
    return add(mul(y, y), y);
  };
  // The per-op profile counts the recomputation as its own phase: the forward and backward phases
  // count the same ops with and without it.
  auto profiled = [] {
    std::map<std::string, int64_t> calls;
    for (const auto& e : ops::profile::take()) calls[std::string(ops::profile::phase_name(e.phase)) + "/" + e.op] += e.calls;
    return calls;
  };
  struct ProfileOff {  // whatever happens below, later tests run without the profile
    ~ProfileOff() { ops::profile::enable(false); }
  } profile_off;
  ops::profile::enable(true);
  (void)ops::profile::take();
  {
    NoGradGuard off;
    Variable x(xd.clone()), w(wd.clone());
    (void)f({x, w});
  }
  std::map<std::string, int64_t> recomputed;
  for (const auto& [key, n] : profiled()) recomputed["recompute/" + key.substr(key.find('/') + 1)] = n;
  std::map<std::string, int64_t> phases[2];
  std::vector<float> gx[2], gw[2];
  for (int recompute = 0; recompute < 2; ++recompute) {
    Variable x(xd.clone(), true), w(wd.clone(), true);
    int calls = 0;
    auto counted = [&](const std::vector<Variable>& in) {
      ++calls;
      return f(in);
    };
    Variable inner = recompute ? checkpoint(counted, {x, w}) : counted({x, w});
    Variable loss = sum(add(inner, linear(x, w)));
    EXPECT_EQ(calls, 1);
    loss.backward();
    EXPECT_EQ(calls, recompute ? 2 : 1);  // run again in the backward pass
    gx[recompute] = x.grad().to_vector<float>();
    gw[recompute] = w.grad().to_vector<float>();
    phases[recompute] = profiled();
  }
  ops::profile::enable(false);
  ASSERT_FALSE(recomputed.empty());
  for (const auto& [key, n] : recomputed) EXPECT_EQ(phases[1][key], n) << key;
  for (const auto& [key, n] : phases[1]) {
    if (key.rfind("recompute/", 0) == 0) EXPECT_EQ(recomputed[key], n) << key;
    else EXPECT_EQ(phases[0][key], n) << key;
  }
  EXPECT_EQ(phases[0].size() + recomputed.size(), phases[1].size());
  EXPECT_EQ(gx[0], gx[1]);
  EXPECT_EQ(gw[0], gw[1]);
  // Without grad mode it is the function, recording nothing.
  NoGradGuard off;
  Variable x(xd.clone(), true), w(wd.clone(), true);
  EXPECT_FALSE(checkpoint(f, {x, w}).requires_grad());
}

TEST(Tape, LeafGradientsAccumulateAcrossBackwardPasses) {
  Variable w(random_tensor({4, 3}, 1), true, "w");
  Tensor x = random_tensor({5, 3}, 2);
  auto loss_of = [&] { return sum(linear(Variable(x), w)); };
  loss_of().backward();
  std::vector<float> once = w.grad().to_vector<float>();
  loss_of().backward();  // a second micro-batch
  std::vector<float> twice = w.grad().to_vector<float>();
  for (size_t i = 0; i < once.size(); ++i) EXPECT_FLOAT_EQ(twice[i], 2 * once[i]);
  w.zero_grad();
  EXPECT_EQ(w.grad().to_vector<float>(), std::vector<float>(12, 0.0f));
}

TEST(Tape, GradientsLandInAFlatBufferView) {
  // Parameters and gradients as views into one flat buffer each (the optimizer's layout).
  Tensor flat_params = random_tensor({20}, 3), flat_grads = Tensor::zeros({20});
  Variable a(flat_params.slice(0, 0, 12).view({4, 3}), true, "a");
  Variable b(flat_params.slice(0, 12, 20).view({8}), true, "b");
  a.set_grad(flat_grads.slice(0, 0, 12).view({4, 3}));
  b.set_grad(flat_grads.slice(0, 12, 20).view({8}));
  Variable loss = add(sum(mul(a, a)), sum(b));
  loss.backward();
  std::vector<float> g = flat_grads.to_vector<float>(), p = flat_params.to_vector<float>();
  for (int i = 0; i < 12; ++i) EXPECT_FLOAT_EQ(g[i], 2 * p[i]);
  for (int i = 12; i < 20; ++i) EXPECT_FLOAT_EQ(g[i], 1.0f);
  EXPECT_TRUE(a.grad().shares_storage(flat_grads));
}

TEST(Tape, SharedInputReceivesTheSumOfItsGradients) {
  // One K/V source read by two consumers (cross-layer attention): gradients add up.
  Variable x(random_tensor({6}, 4), true, "x");
  Variable y = add(scale(x, 2.0f), scale(x, 3.0f));
  sum(y).backward();
  EXPECT_EQ(x.grad().to_vector<float>(), std::vector<float>(6, 5.0f));
}

TEST(Tape, NoGradGuardRecordsNothing) {
  Variable w(random_tensor({3, 3}, 5), true, "w");
  Variable out;
  {
    NoGradGuard guard;
    out = linear(Variable(random_tensor({2, 3}, 6)), w);
  }
  EXPECT_FALSE(out.requires_grad());
  EXPECT_EQ(out.grad_fn(), nullptr);
  expect_error([&] { sum(out).backward(); }, {"backward", "does not require grad"});
  EXPECT_TRUE(grad_enabled());
}

TEST(Tape, SavedTensorsAreReleasedAsTheTapeUnwinds) {
  Variable x(random_tensor({2, 8, 2, 8}, 7), true, "x");
  Variable h = causal_attention(x, x, x, 0.3f);
  Variable loss = sum(h);
  std::shared_ptr<Node> attention = h.grad_fn();
  const Allocator& alloc = cpu_allocator();
  (void)alloc;
  loss.backward();
  EXPECT_TRUE(attention->released);
  EXPECT_TRUE(attention->next.empty());
  expect_error([&] { loss.backward(); }, {"backward", "already run"});
}

TEST(Tape, BackwardChecksShapes) {
  Variable x(random_tensor({3}, 8), true, "x");
  Variable y = scale(x, 2.0f);
  expect_error([&] { y.backward(); }, {"backward", "[3]"});
  expect_error([&] { y.backward(Tensor::zeros({4})); }, {"backward", "[4]", "[3]"});
  expect_error([&] { (void)linear(x, Variable(Tensor::zeros({2, 5}))); }, {"linear", "[3]", "[2, 5]"});
}

}  // namespace
}  // namespace kvroute::autograd
