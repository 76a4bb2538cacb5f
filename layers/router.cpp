#include "layers/router.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/rng.h"

namespace kvroute::layers {

std::string format_plan(const RoutingPlan& plan) { return fmt::format("{}", fmt::join(plan, ",")); }

RoutingPlan parse_plan(const std::string& text, int num_layers) {
  RoutingPlan plan;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    size_t used = 0;
    int value = 0;
    try {
      value = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    KV_CHECK(!item.empty() && used == item.size(), "routing plan '{}': '{}' is not a layer index", text, item);
    plan.push_back(value);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  validate_plan(plan, num_layers);
  return plan;
}

void validate_plan(const RoutingPlan& plan, int num_layers) {
  KV_CHECK(static_cast<int>(plan.size()) == num_layers, "routing plan {}: {} entries for a model of {} layers",
           format_plan(plan), plan.size(), num_layers);
  for (int l = 0; l < num_layers; ++l) {
    KV_CHECK(plan[l] >= 0 && plan[l] <= l,
             "routing plan {}: layer {} reads layer {}, but a layer can only read itself or an earlier layer",
             format_plan(plan), l, plan[l]);
  }
}

RoutingPlan self_plan(int num_layers) {
  RoutingPlan plan(static_cast<size_t>(num_layers));
  for (int l = 0; l < num_layers; ++l) plan[l] = l;
  return plan;
}

std::vector<bool> kv_needed(const RoutingPlan& plan) {
  std::vector<bool> needed(plan.size(), false);
  for (int src : plan) needed[static_cast<size_t>(src)] = true;
  return needed;
}

std::vector<int> kv_layers(const RoutingPlan& plan) {
  std::vector<bool> needed = kv_needed(plan);
  std::vector<int> out;
  for (size_t l = 0; l < needed.size(); ++l)
    if (needed[l]) out.push_back(static_cast<int>(l));
  return out;
}

std::vector<int> keep_every(int num_layers, int group) {
  KV_CHECK(group >= 1, "groups: must be >= 1, got {}", group);
  std::vector<int> keep;
  for (int l = 0; l < num_layers; l += group) keep.push_back(l);
  return keep;
}

std::vector<int> keep_retention(int num_layers, double retention) {
  KV_CHECK(retention > 0.0 && retention <= 1.0, "retention: must be in (0, 1], got {}", retention);
  // The fewest layers whose share is at least the retention, read to two decimals: a level written
  // as a rounded percentage means the fraction it rounds (0.67 of 6 layers is 4, 0.33 of 8 is 3, 0.25
  // of 28 is 7), so the half-point tolerance; 1e-9 absorbs floating-point noise.
  int kept = static_cast<int>(std::ceil((retention - 0.005) * num_layers - 1e-9));
  kept = std::clamp(kept, 1, num_layers);
  std::vector<int> keep;
  for (int i = 0; i < kept; ++i) keep.push_back(static_cast<int>(static_cast<int64_t>(i) * num_layers / kept));
  return keep;
}

std::vector<int> keep_list(int num_layers, const std::vector<int>& layers) {
  std::vector<int> keep = layers;
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  KV_CHECK(!keep.empty() && keep.front() == 0, "keep list {}: must contain layer 0", layers);
  KV_CHECK(keep.back() < num_layers, "keep list {}: layer {} does not exist in a model of {} layers", layers,
           keep.back(), num_layers);
  return keep;
}

RoutingPlan plan_from_keep_set(int num_layers, const std::vector<int>& keep) {
  std::vector<int> kept = keep_list(num_layers, keep);
  RoutingPlan plan(static_cast<size_t>(num_layers));
  size_t next = 0;
  int current = 0;
  for (int l = 0; l < num_layers; ++l) {
    if (next < kept.size() && kept[next] == l) {
      current = l;
      ++next;
    }
    plan[l] = current;
  }
  return plan;
}

const char* source_name(RouterConfig::Source source) {
  return source == RouterConfig::Source::Uniform ? "uniform" : "previous";
}

const char* policy_name(RouterConfig::Policy policy) {
  switch (policy) {
    case RouterConfig::Policy::None: return "none";
    case RouterConfig::Policy::Stochastic: return "stochastic";
    case RouterConfig::Policy::FixedGroups: return "fixed_groups";
    case RouterConfig::Policy::RandomFixedGroups: return "random_fixed_groups";
  }
  return "?";
}

KVRouter::KVRouter(const RouterConfig& config, int num_layers) : config_(config), num_layers_(num_layers) {
  KV_CHECK(num_layers >= 1, "router: num_layers must be >= 1, got {}", num_layers);
  KV_CHECK(config.share_prob >= 0.0 && config.share_prob <= 1.0, "router.share_prob: must be in [0, 1], got {}",
           config.share_prob);
  KV_CHECK(config.group_share_prob >= 0.0 && config.group_share_prob <= 1.0,
           "router.group_share_prob: must be in [0, 1], got {}", config.group_share_prob);
  KV_CHECK(config.group_size >= 1, "router.group_size: must be >= 1, got {}", config.group_size);
}

RoutingPlan KVRouter::training_plan(uint64_t step, uint32_t micro_step, uint32_t rank) const {
  RoutingPlan plan = self_plan(num_layers_);
  const int k = config_.group_size;
  switch (config_.policy) {
    case RouterConfig::Policy::None: return plan;
    case RouterConfig::Policy::FixedGroups:
      for (int l = 0; l < num_layers_; ++l) plan[l] = l / k * k;
      return plan;
    default: break;
  }
  // One Philox stream per forward pass: the key is the seed, the stream id packs step (40 bits),
  // micro-step (12 bits) and rank (12 bits) - distinct for any realistic run.
  KV_CHECK(micro_step < 4096 && rank < 4096 && step < (uint64_t{1} << 40),
           "router: step {} / micro_step {} / rank {} outside the plan stream's range", step, micro_step, rank);
  Philox rng(config_.seed, (step << 24) | (static_cast<uint64_t>(micro_step) << 12) | rank);
  for (int l = 1; l < num_layers_; ++l) {
    // Two draws per layer always, so that plans of different share_prob use the same coins.
    const double coin = rng.uniform_double();
    const double pick = rng.uniform_double();
    if (config_.policy == RouterConfig::Policy::Stochastic) {
      if (coin < config_.share_prob) {
        plan[l] = config_.source == RouterConfig::Source::Uniform ? static_cast<int>(pick * l) : l - 1;
      }
    } else {  // RandomFixedGroups
      const int leader = l / k * k;
      if (leader != l && coin < config_.group_share_prob) plan[l] = leader;
    }
  }
  return plan;
}

std::vector<bool> KVRouter::layers_with_kv_weights() const {
  std::vector<bool> owns(static_cast<size_t>(num_layers_), true);
  if (config_.policy == RouterConfig::Policy::FixedGroups) {
    for (int l = 0; l < num_layers_; ++l) owns[l] = l % config_.group_size == 0;
  }
  return owns;
}

}  // namespace kvroute::layers
