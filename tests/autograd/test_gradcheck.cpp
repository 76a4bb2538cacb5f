// Finite-difference checks of every differentiable function, alone and composed into a small
// decoder block whose attention reads another layer's K/V.
#include <gtest/gtest.h>

#include <cmath>

#include "autograd/functions.h"
#include "autograd/gradcheck.h"
#include "kernels/ops.h"
#include "tests/test_util.h"

namespace kvroute::autograd {
namespace {

using testing::random_tensor;

Variable param(const Shape& shape, uint64_t seed, float low = -1.0f, float high = 1.0f) {
  return Variable(random_tensor(shape, seed, low, high), true, fmt::format("p{}", seed));
}

void expect_gradcheck(const DifferentiableFn& fn, const std::vector<Variable>& inputs, GradcheckOptions opts = {}) {
  GradcheckResult r = gradcheck(fn, inputs, opts);
  EXPECT_TRUE(r.ok) << r.message;
}

TEST(Gradcheck, CatchesAWrongGradient) {
  // A deliberately wrong backward must fail: the check is not vacuous.
  struct WrongSquare final : Node {
    Tensor x;
    const char* name() const override { return "wrong_square"; }
    std::vector<Tensor> backward(const Tensor& g) override { return {ops::mul(g, x)}; }  // should be 2 g x
  };
  DifferentiableFn fn = [](const std::vector<Variable>& in) {
    auto node = std::make_shared<WrongSquare>();
    node->x = in[0].data();
    return make_result(ops::mul(in[0].data(), in[0].data()), node, {in[0].gradient_edge()});
  };
  GradcheckResult r = gradcheck(fn, {param({5}, 1)});
  EXPECT_FALSE(r.ok);
  EXPECT_NE(r.message.find("analytic"), std::string::npos);
}

TEST(Gradcheck, ElementwiseAndReductions) {
  expect_gradcheck([](const std::vector<Variable>& in) { return add(in[0], in[1]); }, {param({3, 4}, 1), param({3, 4}, 2)});
  expect_gradcheck([](const std::vector<Variable>& in) { return mul(in[0], in[1]); }, {param({3, 4}, 3), param({3, 4}, 4)});
  expect_gradcheck([](const std::vector<Variable>& in) { return scale(in[0], -1.5f); }, {param({7}, 5)});
  expect_gradcheck([](const std::vector<Variable>& in) { return sum(in[0]); }, {param({2, 3}, 6)});
  expect_gradcheck([](const std::vector<Variable>& in) { return mean(in[0]); }, {param({2, 3}, 7)});
  expect_gradcheck([](const std::vector<Variable>& in) { return reshape(mul(in[0], in[0]), {6, 2}); }, {param({3, 4}, 8)});
}

TEST(Gradcheck, MatmulAllTransposesBatchedAndShared) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      Shape sa = ta ? Shape{2, 5, 3} : Shape{2, 3, 5};
      Shape sb = tb ? Shape{2, 4, 5} : Shape{2, 5, 4};
      expect_gradcheck([ta, tb](const std::vector<Variable>& in) { return matmul(in[0], in[1], ta, tb); },
                       {param(sa, 10), param(sb, 11)});
    }
  for (bool tb : {false, true}) {
    Shape sb = tb ? Shape{4, 5} : Shape{5, 4};
    expect_gradcheck([tb](const std::vector<Variable>& in) { return matmul(in[0], in[1], false, tb); },
                     {param({2, 3, 5}, 12), param(sb, 13)});
  }
  expect_gradcheck([](const std::vector<Variable>& in) { return linear(in[0], in[1]); }, {param({2, 3, 6}, 14), param({5, 6}, 15)});
}

TEST(Gradcheck, Embedding) {
  Tensor tokens = Tensor::from_vector<int32_t>({1, 4, 1, 0, 3, 4}, {2, 3});
  expect_gradcheck([tokens](const std::vector<Variable>& in) { return mul(embedding(in[0], tokens), embedding(in[0], tokens)); },
                   {param({5, 4}, 16)});
}

TEST(Gradcheck, RmsNorm) {
  for (int64_t C : {1, 8, 33}) {
    expect_gradcheck([](const std::vector<Variable>& in) { return rms_norm(in[0], in[1], 1e-6f); },
                     {param({3, 2, C}, 17, -2, 2), param({C}, 18, 0.5f, 1.5f)});
  }
}

TEST(Gradcheck, Rope) {
  for (int64_t D : {8, 16}) {
    expect_gradcheck([](const std::vector<Variable>& in) { return mul(rope(in[0], {10000.0}, 3), in[1]); },
                     {param({2, 5, 2, D}, 19), param({2, 5, 2, D}, 20)});
  }
}

TEST(Gradcheck, Swiglu) {
  expect_gradcheck([](const std::vector<Variable>& in) { return swiglu(in[0], in[1]); },
                   {param({4, 9}, 21, -3, 3), param({4, 9}, 22)});
}

TEST(Gradcheck, CausalAttentionGqaAndForeignKv) {
  struct Case {
    int64_t T, Hq, Hkv, D;
  };
  for (Case c : {Case{1, 2, 2, 8}, Case{6, 2, 2, 8}, Case{7, 4, 2, 8}, Case{5, 4, 1, 16}}) {
    GradcheckOptions opts;
    opts.max_elements = 40;
    expect_gradcheck(
        [c](const std::vector<Variable>& in) {
          return causal_attention(in[0], in[1], in[2], 1.0f / std::sqrt(static_cast<float>(c.D)));
        },
        {param({2, c.T, c.Hq, c.D}, 23, -2, 2), param({2, c.T, c.Hkv, c.D}, 24, -2, 2), param({2, c.T, c.Hkv, c.D}, 25)},
        opts);
  }
}

TEST(Gradcheck, CrossEntropy) {
  Tensor targets = Tensor::from_vector<int32_t>({2, -100, 0, 6}, {4});
  expect_gradcheck([targets](const std::vector<Variable>& in) { return cross_entropy(in[0], targets, -100); },
                   {param({4, 7}, 26, -3, 3)});
  // Upstream gradient other than 1.
  expect_gradcheck([targets](const std::vector<Variable>& in) { return scale(cross_entropy(in[0], targets, -100), 3.0f); },
                   {param({4, 7}, 27, -3, 3)});
}

TEST(Gradcheck, LinearCrossEntropy) {
  Tensor targets = Tensor::from_vector<int32_t>({2, -100, 0, 6, 6}, {5});
  expect_gradcheck(
      [targets](const std::vector<Variable>& in) { return linear_cross_entropy(in[0], in[1], targets, -100); },
      {param({5, 3}, 28, -2, 2), param({7, 3}, 29, -2, 2)});
  expect_gradcheck(
      [targets](const std::vector<Variable>& in) {
        return scale(linear_cross_entropy(in[0], in[1], targets, -100), 3.0f);
      },
      {param({5, 3}, 30, -2, 2), param({7, 3}, 31, -2, 2)});
}

TEST(Gradcheck, TwoLayerBlockWithBorrowedKv) {
  // Layer 1 attends with its own queries to layer 0's keys/values: gradients must reach layer 0's
  // K/V weights through both layers. Inputs: embedding, per-layer q/k/v/o weights, norms, MLP.
  const int64_t B = 2, T = 5, C = 8, H = 2, Hkv = 1, D = 4, V = 11, F = 12;
  Tensor tokens = Tensor::from_vector<int32_t>({1, 5, 9, 2, 2, 0, 10, 3, 7, 4}, {B, T});
  Tensor targets = Tensor::from_vector<int32_t>({5, 9, 2, 2, 0, 10, 3, 7, 4, 1}, {B * T});
  DifferentiableFn model = [&](const std::vector<Variable>& p) {
    Variable x = embedding(p[0], tokens);
    Variable k0, v0;
    for (int layer = 0; layer < 2; ++layer) {
      const size_t base = 1 + static_cast<size_t>(layer) * 8;
      Variable h = rms_norm(x, p[base + 0], 1e-6f);
      Variable q = rope(rms_norm(reshape(linear(h, p[base + 1]), {B, T, H, D}), p[base + 7], 1e-6f), {1e4});
      Variable k = rope(reshape(linear(h, p[base + 2]), {B, T, Hkv, D}), {1e4});
      Variable v = reshape(linear(h, p[base + 3]), {B, T, Hkv, D});
      if (layer == 0) {
        k0 = k;
        v0 = v;
      }
      Variable attn = causal_attention(q, k0, v0, 0.5f);  // layer 1 borrows layer 0's K/V
      x = add(x, linear(reshape(attn, {B, T, H * D}), p[base + 4]));
      Variable m = rms_norm(x, p[base + 0], 1e-6f);
      x = add(x, linear(swiglu(linear(m, p[base + 5]), linear(m, p[base + 6])), p[17]));
    }
    return cross_entropy(reshape(linear(x, p[0]), {B * T, V}), targets);
  };
  std::vector<Variable> params = {param({V, C}, 30)};
  for (int layer = 0; layer < 2; ++layer) {
    uint64_t s = 40 + static_cast<uint64_t>(layer) * 10;
    params.push_back(param({C}, s + 0, 0.5f, 1.5f));   // norm
    params.push_back(param({H * D, C}, s + 1));        // q
    params.push_back(param({Hkv * D, C}, s + 2));      // k
    params.push_back(param({Hkv * D, C}, s + 3));      // v
    params.push_back(param({C, H * D}, s + 4));        // o
    params.push_back(param({F, C}, s + 5));            // gate
    params.push_back(param({F, C}, s + 6));            // up
    params.push_back(param({D}, s + 7, 0.5f, 1.5f));   // q_norm
  }
  params.push_back(param({C, F}, 60));  // down (shared by both layers to keep the list short)
  GradcheckOptions opts;
  opts.max_elements = 24;
  GradcheckResult r = gradcheck(model, params, opts);
  EXPECT_TRUE(r.ok) << r.message;
  // Layer 1 owns K/V weights but borrowed layer 0's K/V: its own k/v projections get no gradient.
  EXPECT_FALSE(params[11].grad().defined());
  EXPECT_FALSE(params[12].grad().defined());
  EXPECT_TRUE(params[3].grad().defined());
}

}  // namespace
}  // namespace kvroute::autograd
