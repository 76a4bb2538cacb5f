// Checkpoints: one directory per step, written as step_NNNNNNNN.tmp/, fsynced and renamed (atomic
// and durable), so a directory named step_NNNNNNNN is complete. Contents: model.safetensors (fp32, Hugging Face
// names), config.json (the Hugging Face config of the model's architecture plus a "kvroute" block, train/hf.h), optimizer.safetensors
// (AdamW m and v), state.json (step, tokens, data cursor, world size, fingerprint), config.yaml.
#pragma once

#include <string>
#include <vector>

#include "data/loader.h"
#include "layers/transformer.h"
#include "train/config.h"

namespace kvroute::train {

struct TrainState {
  int64_t step = 0;
  int64_t tokens_seen = 0;
  data::LoaderCursor cursor;
  int world_size = 1;
  int64_t global_batch_tokens = 0;
  std::string fingerprint;
};

// The directory of step `step`'s checkpoint: checkpoints_dir/step_NNNNNNNN.
std::string checkpoint_path(const std::string& checkpoints_dir, int64_t step);
// Writes checkpoint_path(checkpoints_dir, state.step) durably (fsynced files and directories) and
// keeps the newest `keep`. Refuses (an error, nothing written) when a weight or optimizer value is
// NaN/inf. Returns the directory. The weights are the model's master weights, or (ZeRO with
// sharded masters) `gathered_masters`, a whole flat f32 buffer in the model's order.
std::string save_checkpoint(const std::string& checkpoints_dir, const TrainState& state, const layers::Transformer& model,
                            const Tensor& adam_m, const Tensor& adam_v, const RunConfig& config, int64_t keep,
                            const Tensor* gathered_masters = nullptr);
// A checkpoint's state.json, every field validated (types, ranges, step = the directory's step).
TrainState read_train_state(const std::string& dir);
// Loads a checkpoint into model/m/v after checking it matches `config`; errors name the path.
// m/v hold every parameter's moment, or (ZeRO) a piece of them starting at `moments_offset`.
TrainState load_checkpoint(const std::string& dir, layers::Transformer& model, Tensor& adam_m, Tensor& adam_v,
                           const RunConfig& config, int64_t moments_offset = 0);
// The newest complete checkpoint under checkpoints_dir, or "" when there is none.
std::string latest_checkpoint(const std::string& checkpoints_dir);

}  // namespace kvroute::train
