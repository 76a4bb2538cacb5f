// Module: a node of the model tree that owns named parameters and child modules, in registration
// order, so that named_parameters() yields Hugging Face names in Hugging Face order.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "autograd/variable.h"

namespace kvroute::layers {

using autograd::Variable;
using NamedParameters = std::vector<std::pair<std::string, Variable>>;

class Module {
 public:
  virtual ~Module() = default;
  Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  // Qualified names ("self_attn.q_proj.weight") in registration order, children depth first.
  NamedParameters named_parameters(const std::string& prefix = "") const;
  int64_t parameter_count() const;

 protected:
  // A new leaf requiring grad, uninitialised (the owner of the tree initialises).
  Variable register_parameter(const std::string& name, const Shape& shape);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    entries_.emplace_back(name, std::static_pointer_cast<Module>(module));
    return module;
  }

 private:
  std::vector<std::pair<std::string, std::variant<Variable, std::shared_ptr<Module>>>> entries_;
};

// A module that only groups children under names ("model", "layers.0", ...).
class Container final : public Module {
 public:
  template <class M>
  std::shared_ptr<M> add(const std::string& name, std::shared_ptr<M> module) {
    return register_module(name, std::move(module));
  }
};

}  // namespace kvroute::layers
