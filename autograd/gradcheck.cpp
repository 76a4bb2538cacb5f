#include "autograd/gradcheck.h"

#include <cmath>

#include "core/rng.h"

namespace kvroute::autograd {

namespace {
double weighted_sum(const Tensor& out, const std::vector<float>& weights) {
  std::vector<float> values = out.to_vector<float>();
  double total = 0.0;
  for (size_t i = 0; i < values.size(); ++i) total += static_cast<double>(values[i]) * weights[i];
  return total;
}
}  // namespace

GradcheckResult gradcheck(const DifferentiableFn& fn, const std::vector<Variable>& inputs,
                          const GradcheckOptions& options) {
  GradcheckResult result;
  for (const Variable& input : inputs) {
    if (input.requires_grad()) KV_CHECK(input.is_leaf(), "gradcheck: input '{}' must be a leaf", input.name());
  }
  // Analytic gradients.
  for (Variable input : inputs) input.set_grad(Tensor());
  Variable out = fn(inputs);
  Tensor weights_tensor = Tensor::empty(out.shape());
  fill_uniform(weights_tensor, options.seed, 0, -1.0f, 1.0f);
  std::vector<float> weights = weights_tensor.to_vector<float>();
  out.backward(weights_tensor.to(out.data().device()));

  NoGradGuard no_grad;
  for (size_t which = 0; which < inputs.size(); ++which) {
    Variable input = inputs[which];
    if (!input.requires_grad()) continue;
    // An input that received no gradient has a zero gradient; the numeric check verifies that.
    std::vector<float> analytic = input.grad().defined() ? input.grad().to_vector<float>()
                                                         : std::vector<float>(static_cast<size_t>(input.data().numel()), 0.0f);
    Tensor& data = input.data();
    KV_CHECK(data.device().is_cpu() && data.is_contiguous(), "gradcheck: input {} must be a contiguous CPU tensor",
             which);
    float* values = data.data<float>();
    const int64_t n = data.numel();
    const int64_t count = std::min(n, options.max_elements);
    for (int64_t s = 0; s < count; ++s) {
      const int64_t i = count == n ? s : s * n / count;
      const float original = values[i];
      values[i] = original + options.eps;
      const double plus = weighted_sum(fn(inputs).data(), weights);
      values[i] = original - options.eps;
      const double minus = weighted_sum(fn(inputs).data(), weights);
      values[i] = original;
      const double numeric = (plus - minus) / (2.0 * static_cast<double>(options.eps));
      const double error = std::abs(analytic[i] - numeric);
      result.max_abs_error = std::max(result.max_abs_error, error);
      if (result.ok && error > options.atol + options.rtol * std::abs(numeric)) {
        result.ok = false;
        result.message = fmt::format("input {} ('{}') element {}: analytic {} vs numeric {}", which, input.name(), i,
                                     analytic[i], numeric);
      }
    }
  }
  return result;
}

}  // namespace kvroute::autograd
