#include "autograd/variable.h"

#include <algorithm>
#include <unordered_map>

#include "kernels/ops.h"
#include "kernels/profile.h"

namespace kvroute::autograd {

namespace {
thread_local bool g_grad_enabled = true;
thread_local uint64_t g_next_sequence = 1;

// The sum of the gradients a node received, in the order their producers were recorded.
Tensor sum_in_recording_order(std::vector<std::pair<uint64_t, Tensor>>& parts) {
  if (parts.size() == 1) return std::move(parts.front().second);
  std::stable_sort(parts.begin(), parts.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  // Out of place first: a gradient tensor may be shared between several edges.
  Tensor sum = ops::add(parts[0].second, parts[1].second);
  for (size_t i = 2; i < parts.size(); ++i) ops::add_into(sum, parts[i].second, sum);
  return sum;
}
}  // namespace

bool grad_enabled() { return g_grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = false; }
NoGradGuard::~NoGradGuard() { g_grad_enabled = previous_; }
EnableGradGuard::EnableGradGuard() : previous_(g_grad_enabled) { g_grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { g_grad_enabled = previous_; }

Variable::Variable(Tensor data, bool requires_grad, std::string name) : impl_(std::make_shared<VariableImpl>()) {
  KV_CHECK(data.defined(), "Variable: undefined tensor for '{}'", name);
  KV_CHECK(!requires_grad || data.dtype() == DType::F32, "Variable '{}': only f32 tensors can require grad, got {}",
           name, data.str());
  impl_->data = std::move(data);
  impl_->requires_grad = requires_grad;
  impl_->name = std::move(name);
}

void Variable::set_grad(Tensor grad) {
  KV_CHECK(!grad.defined() || grad.shape() == shape(), "Variable::set_grad: gradient {} for '{}' of shape {}",
           grad.shape(), name(), shape());
  impl_->grad = std::move(grad);
}

void Variable::zero_grad() {
  if (impl_->grad.defined()) impl_->grad.zero_();
}

std::shared_ptr<Node> Variable::gradient_edge() const {
  if (!requires_grad()) return nullptr;
  if (impl_->grad_fn) return impl_->grad_fn;
  std::shared_ptr<Node> acc = impl_->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(impl_);
    acc->output_shape = impl_->data.shape();
    impl_->grad_accumulator = acc;
  }
  return acc;
}

std::vector<Tensor> AccumulateGrad::backward(const Tensor& grad_output) {
  Tensor& grad = variable_->grad;
  if (!grad.defined()) {
    grad = grad_output.clone();  // never alias: the incoming gradient may be shared
  } else {
    ops::axpy_(1.0f, grad_output, grad);
  }
  if (variable_->on_grad_accumulated) variable_->on_grad_accumulated();
  return {};
}

Variable make_result(Tensor data, std::shared_ptr<Node> node, std::vector<std::shared_ptr<Node>> inputs) {
  bool needs_grad = false;
  for (const auto& edge : inputs) needs_grad = needs_grad || edge != nullptr;
  if (!grad_enabled() || !needs_grad) return Variable(std::move(data));
  Variable out(std::move(data));
  node->sequence = g_next_sequence++;
  node->next = std::move(inputs);
  node->output_shape = out.shape();
  out.impl_->requires_grad = true;
  out.impl_->grad_fn = std::move(node);
  return out;
}

void Variable::backward() const {
  KV_CHECK(defined() && data().numel() == 1,
           "backward: called without a gradient on a variable of shape {} (only one-element outputs are implicit)",
           defined() ? shape() : Shape{});
  backward(Tensor::full(shape(), 1.0, DType::F32, data().device()));
}

void Variable::backward(const Tensor& grad_output) const {
  ops::profile::PhaseScope phase(ops::profile::Phase::Backward);  // the ops below count as backward
  KV_CHECK(defined(), "backward: undefined variable");
  KV_CHECK(grad_output.shape() == shape(), "backward: gradient {} does not match the output {}",
           grad_output.shape(), shape());
  std::shared_ptr<Node> root = gradient_edge();
  KV_CHECK(root != nullptr, "backward: '{}' does not require grad (no input requires grad, or grad mode was off)",
           name());

  // Count, for every node reachable from the root, how many edges point at it. `owners` keeps
  // every node alive while the tape unwinds (each node drops its edges once it has run).
  std::unordered_map<Node*, int> pending;
  std::unordered_map<Node*, std::shared_ptr<Node>> owners{{root.get(), root}};
  std::vector<Node*> stack{root.get()};
  pending[root.get()] = 0;
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    KV_CHECK(!node->released,
             "backward: node {} was already run and its saved tensors freed (backward through a graph twice?)",
             node->name());
    for (const auto& next : node->next) {
      if (!next) continue;
      auto [it, inserted] = pending.try_emplace(next.get(), 0);
      ++it->second;
      if (inserted) {
        stack.push_back(next.get());
        owners.emplace(next.get(), next);
      }
    }
  }

  // Kahn's algorithm: a node runs once every consumer has delivered its gradient.
  // Each node's incoming gradients, summed once it is ready (sum_in_recording_order).
  std::unordered_map<Node*, std::vector<std::pair<uint64_t, Tensor>>> grads;
  grads[root.get()].emplace_back(0, grad_output);
  std::vector<Node*> ready{root.get()};
  while (!ready.empty()) {
    Node* node = ready.back();
    ready.pop_back();
    Tensor grad = sum_in_recording_order(grads[node]);
    grads.erase(node);
    KV_CHECK(grad.shape() == node->output_shape, "backward: {} received a gradient {} for an output of shape {}",
             node->name(), grad.shape(), node->output_shape);
    std::vector<Tensor> input_grads = node->backward(grad);
    node->release_saved();
    node->released = true;
    for (size_t i = 0; i < node->next.size(); ++i) {
      Node* next = node->next[i].get();
      if (next == nullptr) continue;
      if (i < input_grads.size() && input_grads[i].defined()) grads[next].emplace_back(node->sequence, input_grads[i]);
      if (--pending[next] == 0) {
        if (grads.count(next)) {
          ready.push_back(next);
        } else {
          // No gradient arrived on any edge: nothing to propagate below this node.
          next->release_saved();
        }
      }
    }
    // The tape unwinds: drop this node's references to its inputs' nodes.
    node->next.clear();
    owners.erase(node);
  }
}

}  // namespace kvroute::autograd
