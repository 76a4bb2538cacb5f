// The training loop: data-parallel over a Communicator, gradient accumulation to the configured
// global batch, AdamW with global-norm clipping and an LR schedule, periodic validation at the
// configured retention levels, checkpoints (interval, end, SIGINT/SIGTERM), exact resume.
#pragma once

#include <string>
#include <vector>

#include "data/loader.h"
#include "layers/transformer.h"
#include "train/communicator.h"
#include "train/config.h"

namespace kvroute::train {

struct TrainResult {
  int64_t steps_done = 0;
  std::vector<double> losses;  // mean training loss of every step this run executed
  std::vector<double> step_seconds;  // wall time of every step (data, forward, backward, all-reduce, AdamW)
  int64_t global_batch_tokens = 0;
  int64_t parameters = 0;  // model parameter count (for FLOP and MFU figures)
  std::string last_checkpoint;
  bool interrupted = false;
};

struct TrainOptions {
  std::string resume;        // "", "auto" (newest checkpoint of the run, if any) or a checkpoint path
  int64_t stop_after = 0;    // > 0: stop (with a checkpoint) after this many steps of this run
  bool quiet = false;        // no progress output (tests)
  bool benchmark = false;    // no evaluation, no checkpoints, no run directory writes
};

TrainResult run_training(const RunConfig& config, Communicator& comm, const TrainOptions& options);

// Mean next-token loss over the validation split (at most max_batches batches; 0 = all) under
// `plan`, summed over ranks. Returns {loss, tokens}.
std::pair<double, int64_t> validation_loss(const layers::Transformer& model, data::ValidationLoader& loader,
                                           const layers::RoutingPlan& plan, int64_t max_batches, Communicator& comm);

// FLOPs of one training token (forward + backward): 6 N + 12 L H D T (PaLM, appendix B), N the
// parameter count, L layers, H query heads, D head_dim, T the sequence length.
double flops_per_token(const layers::ModelConfig& model, int64_t parameters, int64_t seq_len);

}  // namespace kvroute::train
