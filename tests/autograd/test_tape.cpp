#include <gtest/gtest.h>

#include "autograd/functions.h"
#include "tests/test_util.h"

namespace kvroute::autograd {
namespace {

using testing::expect_error;
using testing::random_tensor;

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
