// Finite-difference gradient check for differentiable functions: compares the tape's gradients
// of L = sum(f(inputs) * w) (w random) with central differences of L computed in double.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "autograd/variable.h"

namespace kvroute::autograd {

struct GradcheckOptions {
  float eps = 1e-2f;           // perturbation (inputs are f32: smaller steps drown in rounding)
  double atol = 2e-3;          // |analytic - numeric| <= atol + rtol * |numeric| ...
  double rtol = 2e-2;
  int64_t max_elements = 64;   // per input; evenly spaced indices beyond that
  uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  double max_abs_error = 0.0;
  std::string message;  // first failing element: input, index, analytic, numeric
};

using DifferentiableFn = std::function<Variable(const std::vector<Variable>&)>;

GradcheckResult gradcheck(const DifferentiableFn& fn, const std::vector<Variable>& inputs,
                          const GradcheckOptions& options = {});

}  // namespace kvroute::autograd
