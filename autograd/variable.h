// The autograd tape. A Variable is a tensor plus its gradient and the Node that produced it; each
// Node knows the Nodes of its inputs, so the recorded graph is the tape. backward() walks it in
// reverse topological order, accumulates into leaf gradients (across micro-batches, in place, so
// a leaf's grad may be a view into one flat gradient buffer) and releases every Node's saved
// tensors as soon as its backward has run.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace kvroute::autograd {

class Node;

struct VariableImpl {
  Tensor data;
  Tensor grad;
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;          // producer; null for leaves
  std::weak_ptr<Node> grad_accumulator;   // leaves: the AccumulateGrad node, created on demand
  std::string name;
  // Leaves: called after a backward pass has accumulated this variable's gradient (once per
  // pass: every contribution is summed first). Data-parallel training starts the reduction of a
  // gradient bucket from here, while the rest of the backward pass runs.
  std::function<void()> on_grad_accumulated;
};

class Variable {
 public:
  Variable() = default;
  explicit Variable(Tensor data, bool requires_grad = false, std::string name = {});

  bool defined() const { return impl_ != nullptr; }
  const Tensor& data() const { return impl_->data; }
  Tensor& data() { return impl_->data; }
  const Shape& shape() const { return impl_->data.shape(); }
  const std::string& name() const { return impl_->name; }
  bool requires_grad() const { return impl_ && impl_->requires_grad; }
  bool is_leaf() const { return impl_ && impl_->grad_fn == nullptr; }

  // Leaf gradients. set_grad installs a buffer (e.g. a view into a flat gradient buffer) that
  // later backward passes accumulate into.
  const Tensor& grad() const { return impl_->grad; }
  void set_grad(Tensor grad);
  void zero_grad();  // fills the gradient buffer with zeros, keeping it

  // Backpropagates from this variable: a one-element variable is seeded with 1.
  void backward() const;
  void backward(const Tensor& grad_output) const;

  // The node that receives this variable's gradient: its grad_fn, its AccumulateGrad for a leaf
  // requiring grad, or null.
  std::shared_ptr<Node> gradient_edge() const;
  const std::shared_ptr<Node>& grad_fn() const { return impl_->grad_fn; }
  const std::shared_ptr<VariableImpl>& impl() const { return impl_; }

 private:
  std::shared_ptr<VariableImpl> impl_;
  friend Variable make_result(Tensor, std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>);
};

class Node {
 public:
  virtual ~Node() = default;
  virtual const char* name() const = 0;
  // Given d(loss)/d(output), returns d(loss)/d(input i) for each input (undefined = no gradient).
  virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;
  // Drops the tensors saved for backward; called as soon as backward() has run.
  virtual void release_saved() {}

  std::vector<std::shared_ptr<Node>> next;  // gradient edge of each input (null: no gradient)
  Shape output_shape;                       // checked against the incoming gradient
  bool released = false;
  // Recording order (make_result). A variable read by several nodes receives the sum of their
  // gradients in this order, whatever order the tape unwinds in: so a recomputed layer
  // (autograd::checkpoint) sums the same terms in the same order as the stored graph, bit for bit.
  uint64_t sequence = 0;
};

// Leaf sink: accumulates into the variable's grad.
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<VariableImpl> variable) : variable_(std::move(variable)) {}
  const char* name() const override { return "AccumulateGrad"; }
  std::vector<Tensor> backward(const Tensor& grad_output) override;

 private:
  std::shared_ptr<VariableImpl> variable_;
};

// Grad mode: while false, functions compute forward values only and record nothing.
bool grad_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Turns grad mode on within a scope (a recomputation during backward: autograd::checkpoint).
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

// For differentiable functions: wraps `data` as the output of `node` when grad mode is on and some
// input requires grad (`inputs` are the inputs' gradient edges); otherwise a plain variable.
Variable make_result(Tensor data, std::shared_ptr<Node> node, std::vector<std::shared_ptr<Node>> inputs);

}  // namespace kvroute::autograd
