// The one way a deployed model's KV cache is planned: a requested keep-set S (from a retention
// fraction, a group size or an explicit list) becomes the layers that actually keep a cache and
// the routing plan every layer follows. Used by the in-training evaluation, `kvroute eval`,
// `sweep`, `generate` and `bench generate`, so all of them report the same plan under one label.
#pragma once

#include <vector>

#include "layers/router.h"
#include "layers/transformer.h"

namespace kvroute::layers {

struct InferencePlan {
  std::vector<int> kept;  // layers holding a KV cache (sorted, contains 0)
  RoutingPlan plan;       // plan[l]: the kept layer whose K/V layer l reads (the nearest at or below l)
};

// `keep` is validated (layer 0 present, indices in range). In a CLA@k model only group leaders own
// K/V weights, so each requested layer first snaps down to its leader; the plan is then drawn
// from the snapped set, so a kept layer always reads its own cache.
InferencePlan inference_plan(const ModelConfig& config, const std::vector<int>& keep);

}  // namespace kvroute::layers
