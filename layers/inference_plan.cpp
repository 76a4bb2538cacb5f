#include "layers/inference_plan.h"

#include <algorithm>

namespace kvroute::layers {

InferencePlan inference_plan(const ModelConfig& config, const std::vector<int>& keep) {
  const int L = static_cast<int>(config.num_layers);
  InferencePlan p;
  for (int l : keep_list(L, keep)) {
    while (l > 0 && !config.layer_has_kv_weights(l)) --l;
    p.kept.push_back(l);
  }
  std::sort(p.kept.begin(), p.kept.end());
  p.kept.erase(std::unique(p.kept.begin(), p.kept.end()), p.kept.end());
  p.plan = plan_from_keep_set(L, p.kept);
  return p;
}

}  // namespace kvroute::layers
