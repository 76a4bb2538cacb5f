// model.init_from: a fresh run that starts from a Hugging Face model directory or a kvroute
// checkpoint. Config parsing only notes that the source must be read (RunConfig::init_from_pending);
// resolve_init_from reads its model section, and load_initial_weights its weights.
#pragma once

#include <string>
#include <vector>

#include "layers/transformer.h"
#include "train/config.h"

namespace kvroute::train {

// The model section of `init_from` (a Hugging Face directory or a kvroute checkpoint) and where it
// came from ("DIR/config.json" or "DIR/config.yaml").
layers::ModelConfig source_model_config(const std::string& init_from, std::string* origin = nullptr);

// Fresh start from config.init_from: copies its weights into `model`, checking every shape. When
// the run's router leaves layers without K/V weights (CLA@k) and the source has them, the router's
// kv_init decides: drop the non-leaders' K/V, or average each group's K/V (and k_norm) into its
// leader. A source without K/V weights for a layer the run needs is an error.
void load_initial_weights(const RunConfig& config, layers::Transformer& model);

// Reads model.init_from's model section into the config (train::take_model_from): the keys it left
// out are taken, the keys it gives are compared. A no-op without init_from, and for a config that
// gives every model key (a run's config.yaml) whose source no longer exists. Errors name the file.
void resolve_init_from(RunConfig& config);

// load_config + resolve_init_from: the config of a run about to be built or trained.
RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides = {});

}  // namespace kvroute::train
