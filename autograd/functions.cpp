#include "autograd/functions.h"

#include "kernels/ops.h"
#include "kernels/profile.h"

namespace kvroute::autograd {

namespace {

// Activation gradients take the activation's dtype (bf16 in mixed precision); parameter gradients
// are f32 (they accumulate into the f32 flat gradient buffer).
Tensor empty_like(const Tensor& t) { return Tensor::empty(t.shape(), t.dtype(), t.device()); }

struct AddNode final : Node {
  const char* name() const override { return "add"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {g, g}; }
};

struct MulNode final : Node {
  Tensor a, b;
  const char* name() const override { return "mul"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {ops::mul(g, b), ops::mul(g, a)}; }
  void release_saved() override { a = b = Tensor(); }
};

struct ScaleNode final : Node {
  float s = 1.0f;
  const char* name() const override { return "scale"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {ops::scale(g, s)}; }
};

struct MatmulNode final : Node {
  Tensor a, b;
  bool trans_a = false, trans_b = false;
  ops::Execution ex;
  const char* name() const override { return "matmul"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    // C = op(a) op(b):  dA = g op(b)^T (transposed back when trans_a), dB = op(a)^T g likewise.
    Tensor da = trans_a ? ops::matmul(b, g, trans_b, true, ex) : ops::matmul(g, b, false, !trans_b, ex);
    Tensor db;
    if (b.dim() == 2 && a.dim() > 2) {
      // b is shared across the batch: fold the batch into rows (trans_a is false here).
      Tensor a2 = a.reshape({-1, a.size(-1)});
      Tensor g2 = g.reshape({-1, g.size(-1)});
      db = trans_b ? ops::matmul(g2, a2, true, false, ex) : ops::matmul(a2, g2, true, false, ex);
    } else {
      db = trans_b ? ops::matmul(g, a, true, trans_a, ex) : ops::matmul(a, g, !trans_a, false, ex);
    }
    return {da, db};
  }
  void release_saved() override { a = b = Tensor(); }
};

bool rounds_operands_once(const Tensor& t, const ops::Execution& ex) {
  return ex.cpu_bf16_gemm && !t.device().is_cuda() && t.dtype() == DType::F32;
}

struct LinearNode final : Node {
  Tensor x, weight;  // x [N, in]: bf16 where the forward rounded it (CPU, bf16 GEMMs)
  Shape input_shape;
  ops::Execution ex;
  const char* name() const override { return "linear"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor g2 = g.reshape({-1, g.size(-1)});
    if (rounds_operands_once(g2, ex)) g2 = ops::cast(g2.contiguous(), DType::BF16);  // once for both GEMMs
    Tensor dx = ops::matmul(g2, weight, false, false, ex).view(input_shape);  // [N, out] @ [out, in]
    Tensor dw = ops::matmul(g2, x, true, false, DType::F32, ex);  // [out, N] @ [N, in], f32 accumulation
    return {dx, dw};
  }
  void release_saved() override { x = weight = Tensor(); }
};

struct ReshapeNode final : Node {
  Shape input_shape;
  const char* name() const override { return "reshape"; }
  std::vector<Tensor> backward(const Tensor& g) override { return {g.reshape(input_shape)}; }
};

struct SumNode final : Node {
  Shape input_shape;
  DType input_dtype = DType::F32;
  Device device;
  double factor = 1.0;  // 1 for sum, 1/n for mean
  const char* name() const override { return "sum"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    return {Tensor::full(input_shape, g.item() * factor, input_dtype, device)};
  }
};

struct EmbeddingNode final : Node {
  Tensor tokens;
  Shape weight_shape;
  const char* name() const override { return "embedding"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dweight = Tensor::zeros(weight_shape, DType::F32, g.device());
    ops::embedding_backward(g, tokens, dweight);
    return {dweight};
  }
  void release_saved() override { tokens = Tensor(); }
};

struct RmsNormNode final : Node {
  Tensor x, weight, rstd;
  const char* name() const override { return "rms_norm"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dx = empty_like(x);
    Tensor dweight = Tensor::zeros(weight.shape(), DType::F32, weight.device());
    ops::rms_norm_backward(g, x, weight, rstd, dx, dweight);
    return {dx, dweight};
  }
  void release_saved() override { x = weight = rstd = Tensor(); }
};

struct RopeNode final : Node {
  ops::RopeConfig rope;
  int64_t position_offset = 0;
  Tensor positions;  // packed rows, else undefined
  const char* name() const override { return "rope"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dx = empty_like(g);
    ops::rope_backward(g, rope, position_offset, dx, positions);
    return {dx};
  }
  void release_saved() override { positions = Tensor(); }
};

struct SwigluNode final : Node {
  Tensor gate, up;
  DType grad_dtype = DType::F32;  // bf16: the gradients feed only bf16 GEMMs (swiglu's out_dtype)
  const char* name() const override { return "swiglu"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const bool bf16 = grad_dtype == DType::BF16 && !gate.device().is_cuda();
    Tensor dgate = bf16 ? Tensor::empty(gate.shape(), DType::BF16, gate.device()) : empty_like(gate);
    Tensor dup = bf16 ? Tensor::empty(up.shape(), DType::BF16, up.device()) : empty_like(up);
    ops::swiglu_backward(g, gate, up, dgate, dup);
    return {dgate, dup};
  }
  void release_saved() override { gate = up = Tensor(); }
};

struct AttentionNode final : Node {
  Tensor q, k, v, out, lse, key_begin;
  float softmax_scale = 1.0f;
  ops::Execution ex;
  const char* name() const override { return "causal_attention"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    Tensor dq = empty_like(q), dk = empty_like(k), dv = empty_like(v);
    ops::attention_backward(g, q, k, v, out, lse, softmax_scale, dq, dk, dv, ex, key_begin);
    return {dq, dk, dv};
  }
  void release_saved() override { q = k = v = out = lse = key_begin = Tensor(); }
};

struct CrossEntropyNode final : Node {
  Tensor dlogits;  // d(mean loss)/d(logits), computed in the forward pass
  const char* name() const override { return "cross_entropy"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const double upstream = g.item();
    if (upstream == 1.0) return {dlogits};
    return {ops::scale(dlogits, static_cast<float>(upstream))};
  }
  void release_saved() override { dlogits = Tensor(); }
};

struct LinearCrossEntropyNode final : Node {
  Tensor dh, dweight;  // gradients of the mean loss, computed in the forward pass
  const char* name() const override { return "linear_cross_entropy"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    const double upstream = g.item();
    if (upstream == 1.0) return {dh, dweight};
    return {ops::scale(dh, static_cast<float>(upstream)), ops::scale(dweight, static_cast<float>(upstream))};
  }
  void release_saved() override { dh = dweight = Tensor(); }
};

struct CheckpointNode final : Node {
  std::function<Variable(const std::vector<Variable>&)> fn;
  std::vector<Tensor> inputs;
  std::vector<bool> needs_grad;
  const char* name() const override { return "checkpoint"; }
  std::vector<Tensor> backward(const Tensor& g) override {
    EnableGradGuard recording;
    std::vector<Variable> leaves;
    for (size_t i = 0; i < inputs.size(); ++i) {
      Variable leaf(inputs[i]);
      leaf.impl()->requires_grad = needs_grad[i];  // may be bf16: an activation, not a parameter
      leaves.push_back(std::move(leaf));
    }
    Variable out;
    {
      ops::profile::PhaseScope phase(ops::profile::Phase::Recompute);  // the forward again, not the backward
      out = fn(leaves);
    }
    KV_CHECK(out.shape() == output_shape && out.requires_grad(),
             "checkpoint: the recomputation gave {} (requires grad: {}), not the {} of the forward pass", out.shape(),
             out.requires_grad(), output_shape);
    out.backward(g);
    std::vector<Tensor> grads;
    for (const Variable& leaf : leaves) grads.push_back(leaf.requires_grad() ? leaf.grad() : Tensor());
    return grads;
  }
  void release_saved() override {
    inputs.clear();
    fn = nullptr;
  }
};

}  // namespace

Variable checkpoint(const std::function<Variable(const std::vector<Variable>&)>& fn,
                    const std::vector<Variable>& inputs) {
  if (!grad_enabled()) return fn(inputs);
  Variable out;
  {
    NoGradGuard not_recorded;
    out = fn(inputs);
  }
  auto node = std::make_shared<CheckpointNode>();
  node->fn = fn;
  std::vector<std::shared_ptr<Node>> edges;
  for (const Variable& v : inputs) {
    node->inputs.push_back(v.data());
    node->needs_grad.push_back(v.requires_grad());
    edges.push_back(v.gradient_edge());
  }
  return make_result(out.data(), node, edges);
}

Variable add(const Variable& a, const Variable& b) {
  return make_result(ops::add(a.data(), b.data()), std::make_shared<AddNode>(),
                     {a.gradient_edge(), b.gradient_edge()});
}

Variable mul(const Variable& a, const Variable& b) {
  auto node = std::make_shared<MulNode>();
  Tensor out = ops::mul(a.data(), b.data());
  if (grad_enabled()) {
    node->a = a.data();
    node->b = b.data();
  }
  return make_result(out, node, {a.gradient_edge(), b.gradient_edge()});
}

Variable scale(const Variable& a, float s) {
  auto node = std::make_shared<ScaleNode>();
  node->s = s;
  return make_result(ops::scale(a.data(), s), node, {a.gradient_edge()});
}

Variable matmul(const Variable& a, const Variable& b, bool trans_a, bool trans_b, const ops::Execution& ex) {
  KV_CHECK(!(b.data().dim() == 2 && a.data().dim() > 2 && trans_a),
           "matmul: a batched A{} transposed against a shared 2-D B{} is not differentiable; reshape A first",
           a.shape(), b.shape());
  auto node = std::make_shared<MatmulNode>();
  Tensor out = ops::matmul(a.data(), b.data(), trans_a, trans_b, ex);
  if (grad_enabled()) {
    node->a = a.data();
    node->b = b.data();
    node->trans_a = trans_a;
    node->trans_b = trans_b;
    node->ex = ex;
  }
  return make_result(out, node, {a.gradient_edge(), b.gradient_edge()});
}

Variable linear(const Variable& x, const Variable& weight, const ops::Execution& ex) {
  KV_CHECK(weight.data().dim() == 2 && x.data().dim() >= 1 && x.data().size(-1) == weight.data().size(1),
           "linear: input {} does not match weight {} ([out, in])", x.shape(), weight.shape());
  Tensor x2 = x.data().reshape({-1, x.data().size(-1)});
  // Rounded once for the forward GEMM and the weight gradient's (bf16 GEMMs on the CPU).
  if (rounds_operands_once(x2, ex) && grad_enabled() && weight.requires_grad()) {
    x2 = ops::cast(x2.contiguous(), DType::BF16);
  }
  Shape out_shape = x.shape();
  out_shape.back() = weight.data().size(0);
  Tensor out = ops::matmul(x2, weight.data(), false, true, ex).view(out_shape);
  auto node = std::make_shared<LinearNode>();
  if (grad_enabled()) {
    node->x = x2;
    node->input_shape = x.shape();
    node->weight = weight.data();
    node->ex = ex;
  }
  return make_result(out, node, {x.gradient_edge(), weight.gradient_edge()});
}

DType gemm_input_dtype(const Tensor& x, const ops::Execution& ex) {
  return rounds_operands_once(x, ex) ? DType::BF16 : x.dtype();
}

Variable reshape(const Variable& x, const Shape& shape) {
  auto node = std::make_shared<ReshapeNode>();
  node->input_shape = x.shape();
  return make_result(x.data().reshape(shape), node, {x.gradient_edge()});
}

Variable sum(const Variable& x) {
  auto node = std::make_shared<SumNode>();
  node->input_shape = x.shape();
  node->input_dtype = x.data().dtype();
  node->device = x.data().device();
  return make_result(ops::sum(x.data()), node, {x.gradient_edge()});
}

Variable mean(const Variable& x) {
  auto node = std::make_shared<SumNode>();
  node->input_shape = x.shape();
  node->input_dtype = x.data().dtype();
  node->device = x.data().device();
  node->factor = 1.0 / static_cast<double>(x.data().numel());
  return make_result(ops::mean(x.data()), node, {x.gradient_edge()});
}

Variable embedding(const Variable& weight, const Tensor& tokens) {
  auto node = std::make_shared<EmbeddingNode>();
  Tensor out = ops::embedding_forward(weight.data(), tokens);
  if (grad_enabled()) {
    node->tokens = tokens;
    node->weight_shape = weight.shape();
  }
  return make_result(out, node, {weight.gradient_edge()});
}

Variable rms_norm(const Variable& x, const Variable& weight, float eps) {
  return rms_norm(x, weight, eps, x.data().dtype());
}

Variable rms_norm(const Variable& x, const Variable& weight, float eps, DType out_dtype) {
  const Tensor& xd = x.data();
  Tensor out = Tensor::empty(xd.shape(), out_dtype, xd.device());
  Tensor rstd = Tensor::empty({xd.numel() / std::max<int64_t>(xd.size(-1), 1)}, DType::F32, xd.device());
  ops::rms_norm_forward(xd, weight.data(), eps, out, rstd);
  auto node = std::make_shared<RmsNormNode>();
  if (grad_enabled()) {
    node->x = xd;
    node->weight = weight.data();
    node->rstd = rstd;
  }
  return make_result(out, node, {x.gradient_edge(), weight.gradient_edge()});
}

Variable rope(const Variable& x, const ops::RopeConfig& config, int64_t position_offset, const Tensor& positions) {
  Tensor out = empty_like(x.data());
  ops::rope_forward(x.data(), config, position_offset, out, positions);
  auto node = std::make_shared<RopeNode>();
  node->rope = config;
  node->position_offset = position_offset;
  node->positions = positions;
  return make_result(out, node, {x.gradient_edge()});
}

Variable swiglu(const Variable& gate, const Variable& up) { return swiglu(gate, up, gate.data().dtype()); }

Variable swiglu(const Variable& gate, const Variable& up, DType out_dtype) {
  Tensor out = Tensor::empty(gate.data().shape(), out_dtype, gate.data().device());
  ops::swiglu_forward(gate.data(), up.data(), out);
  auto node = std::make_shared<SwigluNode>();
  node->grad_dtype = out_dtype;
  if (grad_enabled()) {
    node->gate = gate.data();
    node->up = up.data();
  }
  return make_result(out, node, {gate.gradient_edge(), up.gradient_edge()});
}

Variable causal_attention(const Variable& q, const Variable& k, const Variable& v, float softmax_scale,
                          const ops::Execution& ex, const Tensor& key_begin) {
  const Tensor& qd = q.data();
  KV_CHECK(qd.dim() == 4, "causal_attention: q must be [B, T, H, D], got {}", qd.shape());
  Tensor out = empty_like(qd);
  Tensor lse = Tensor::empty({qd.size(0), qd.size(2), qd.size(1)}, DType::F32, qd.device());
  ops::attention_forward(qd, k.data(), v.data(), softmax_scale, out, lse, ex, key_begin);
  auto node = std::make_shared<AttentionNode>();
  if (grad_enabled()) {
    node->key_begin = key_begin;
    node->q = qd;
    node->k = k.data();
    node->v = v.data();
    node->out = out;
    node->lse = lse;
    node->softmax_scale = softmax_scale;
    node->ex = ex;
  }
  return make_result(out, node, {q.gradient_edge(), k.gradient_edge(), v.gradient_edge()});
}

Variable cross_entropy(const Variable& logits, const Tensor& targets, int64_t ignore_index, bool overwrite_logits) {
  auto node = std::make_shared<CrossEntropyNode>();
  const bool want_grad = grad_enabled() && logits.requires_grad();
  Tensor loss;
  if (want_grad) {
    node->dlogits = overwrite_logits && logits.data().is_contiguous() ? logits.data() : empty_like(logits.data());
    loss = ops::cross_entropy(logits.data(), targets, ignore_index, &node->dlogits);
  } else {
    loss = ops::cross_entropy(logits.data(), targets, ignore_index);
  }
  return make_result(loss, node, {logits.gradient_edge()});
}

Variable linear_cross_entropy(const Variable& h, const Variable& weight, const Tensor& targets, int64_t ignore_index,
                              const ops::Execution& ex) {
  auto node = std::make_shared<LinearCrossEntropyNode>();
  const bool want_grad = grad_enabled() && (h.requires_grad() || weight.requires_grad());
  Tensor loss;
  if (want_grad) {
    node->dh = empty_like(h.data());
    node->dweight = Tensor::empty(weight.shape(), DType::F32, weight.data().device());
    loss = ops::linear_cross_entropy(h.data(), weight.data(), targets, ignore_index, ex, &node->dh, &node->dweight);
  } else {
    loss = ops::linear_cross_entropy(h.data(), weight.data(), targets, ignore_index, ex);
  }
  return make_result(loss, node, {h.gradient_edge(), weight.gradient_edge()});
}

}  // namespace kvroute::autograd
