#include "layers/module.h"

namespace kvroute::layers {

NamedParameters Module::named_parameters(const std::string& prefix) const {
  NamedParameters out;
  for (const auto& [name, entry] : entries_) {
    if (const Variable* p = std::get_if<Variable>(&entry)) {
      out.emplace_back(prefix + name, *p);
    } else {
      NamedParameters child = std::get<std::shared_ptr<Module>>(entry)->named_parameters(prefix + name + ".");
      out.insert(out.end(), child.begin(), child.end());
    }
  }
  return out;
}

int64_t Module::parameter_count() const {
  int64_t n = 0;
  for (const auto& [name, p] : named_parameters()) n += p.data().numel();
  return n;
}

Variable Module::register_parameter(const std::string& name, const Shape& shape) {
  Variable p(Tensor::empty(shape), true, name);
  entries_.emplace_back(name, p);
  return p;
}

}  // namespace kvroute::layers
