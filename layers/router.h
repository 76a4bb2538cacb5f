// KV routing plans (R-CLA, docs/method.md): src[l] is the layer whose keys/values layer l attends
// to, src[l] <= l, src[0] = 0. KVRouter draws training plans (none, stochastic, CLA@k, RD-CLA@k)
// from Philox keyed by (seed, step, micro_step, rank); inference plans come from a keep-set S
// (groups, retention, explicit list): each layer reads the nearest kept layer at or below it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvroute::layers {

using RoutingPlan = std::vector<int>;

std::string format_plan(const RoutingPlan& plan);  // "0,0,2,2"
// Parses and validates "0,0,2,2" for a model of num_layers layers.
RoutingPlan parse_plan(const std::string& text, int num_layers);
// Throws a one-line error unless plan has num_layers entries, plan[0] = 0, 0 <= plan[l] <= l.
void validate_plan(const RoutingPlan& plan, int num_layers);
RoutingPlan self_plan(int num_layers);  // 0, 1, ..., L-1
// kv_needed[l]: some layer reads layer l's K/V, so layer l must compute them.
std::vector<bool> kv_needed(const RoutingPlan& plan);
// Layers whose K/V are read (the KV-cache keep-set of an inference plan).
std::vector<int> kv_layers(const RoutingPlan& plan);

// Keep-sets for inference. All contain layer 0, sorted, unique.
std::vector<int> keep_every(int num_layers, int group);          // 0, g, 2g, ...
// ceil((r - 0.005) L) layers spread evenly: the fewest whose share rounds to at least r (0.67 of 6 is 4).
std::vector<int> keep_retention(int num_layers, double retention);
std::vector<int> keep_list(int num_layers, const std::vector<int>& layers);  // validated
RoutingPlan plan_from_keep_set(int num_layers, const std::vector<int>& keep);

struct RouterConfig {
  enum class Policy { None, Stochastic, FixedGroups, RandomFixedGroups };
  enum class Source { Uniform, Previous };
  Policy policy = Policy::None;
  double share_prob = 0.0;       // stochastic: probability that a layer borrows
  Source source = Source::Uniform;
  int group_size = 2;            // fixed_groups / random_fixed_groups: k
  double group_share_prob = 0.5; // random_fixed_groups: probability a non-leader uses its leader
  uint64_t seed = 0;
};

const char* policy_name(RouterConfig::Policy policy);
const char* source_name(RouterConfig::Source source);

class KVRouter {
 public:
  KVRouter(const RouterConfig& config, int num_layers);

  // The plan of one forward pass. The same arguments give the same plan on any machine.
  RoutingPlan training_plan(uint64_t step, uint32_t micro_step, uint32_t rank) const;
  // Which layers own K/V projection weights: all, except the non-leaders of CLA@k.
  std::vector<bool> layers_with_kv_weights() const;
  const RouterConfig& config() const { return config_; }
  int num_layers() const { return num_layers_; }

 private:
  RouterConfig config_;
  int num_layers_;
};

}  // namespace kvroute::layers
