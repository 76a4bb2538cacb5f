// The training loop, as a Trainer with named phases (llm.c's step: forward, backward and reduce,
// grad norm, update). One step() is: micro-batches (forward + backward, gradient accumulation to
// the configured global batch) -> reduce (all-reduce over ranks, overlapped with the last backward
// pass on GPUs) -> clip (global norm) -> update (AdamW at the schedule's learning rate). Beside it:
// log() (progress line, metrics.jsonl), evaluate() (validation loss at every eval.retention, through
// the same inference plan as `kvroute eval`), checkpoint() (atomic, keep-last-K). run() drives them
// to train.steps, stopping cleanly on SIGINT/SIGTERM with a checkpoint, and resumes exactly.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/io.h"
#include "data/loader.h"
#include "distributed/communicator.h"
#include "distributed/grad_reducer.h"
#include "distributed/shard.h"
#include "layers/router.h"
#include "layers/transformer.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/schedule.h"

namespace kvroute::train {

struct TrainResult {
  int64_t steps_done = 0;
  std::vector<double> losses;  // mean training loss of every step this run executed
  std::vector<double> step_seconds;  // wall time of every step (data, forward, backward, all-reduce, AdamW)
  // Targets scored in every step on this rank (not ignore_index: for supervised data the response
  // tokens, what a fine-tuning step learns from; all of them for token shards).
  std::vector<int64_t> step_scored_tokens;
  // Tensor memory (the device's allocator): bytes live when the last step began (weights,
  // gradients, optimizer state), and per step the peak above that (activations, temporaries).
  int64_t state_bytes = 0;
  std::vector<int64_t> step_peak_bytes;
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

// What one optimizer step measured.
struct StepStats {
  int64_t step = 0;
  double loss = 0;       // mean over micro-batches and ranks
  double lr = 0;
  double grad_norm = 0;  // before clipping
  double seconds = 0;
  bool stop_requested = false;  // some rank got SIGINT/SIGTERM during this step
};

// Installs SIGINT/SIGTERM handlers that only record the signal, and restores the previous ones
// when it goes out of scope (also when training throws).
class SignalGuard {
 public:
  SignalGuard();
  ~SignalGuard();
  SignalGuard(const SignalGuard&) = delete;
  SignalGuard& operator=(const SignalGuard&) = delete;
  bool raised() const;

 private:
  void (*old_int_)(int);
  void (*old_term_)(int);
};

class Trainer {
 public:
  // Builds everything a run needs: device and threads, the model (rank 0's initial weights on every
  // rank), the reducer, the data loaders, the optimizer state; resumes when options.resume says so.
  Trainer(const RunConfig& config, dist::Communicator& comm, const TrainOptions& options);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Steps until train.steps (then a final evaluation and checkpoint), a signal (checkpoint, then
  // result.interrupted) or options.stop_after steps of this run (checkpoint).
  TrainResult run();

  // One optimizer step: micro_batches() -> reduce() -> clip() -> update().
  StepStats step();
  // The progress line and a metrics.jsonl record (on log_interval steps and the last one).
  void log(const StepStats& stats);
  // Validation loss at every eval.retention under layers::inference_plan; a metrics.jsonl record
  // with the loss and the routing plan of each level.
  void evaluate();
  // A checkpoint of the current step (rank 0 writes; every rank waits for it).
  void checkpoint();

 private:
  double micro_batches(int64_t step);  // forward + backward of every micro-batch; the loss sum on this rank
  int64_t scored_tokens_ = 0;          // targets scored by the last micro_batches() on this rank
  void reduce();                        // gradient sum over ranks
  double clip();                        // mean gradient, its global norm (returned), clipping
  void update(int64_t step, double lr);  // AdamW; master weights and the compute copy
  void resume(const std::string& from);
  void check_fresh_run_directory() const;
  // One forward and backward pass on a fixed batch before the run directory is touched: weights
  // that are finite but give a non-finite loss or gradient (an absurd checkpoint or init) fail
  // here, naming the source, instead of after metrics.jsonl and config.yaml were rewritten.
  void check_first_forward();
  void open_run_directory();
  bool stop_agreed();  // whether any rank was signalled (a collective: every rank calls it)

  RunConfig config_;
  dist::Communicator& comm_;
  TrainOptions options_;
  bool leader_, verbose_;
  Device device_;
  layers::ModelConfig model_config_;
  layers::KVRouter router_;
  std::unique_ptr<layers::Transformer> model_;
  std::unique_ptr<dist::Communicator> nccl_;
  std::unique_ptr<dist::GradientReducer> reducer_;
  int64_t accum_ = 1, global_tokens_ = 0;
  std::unique_ptr<data::DataLoader> loader_;
  std::unique_ptr<data::ValidationLoader> val_loader_;
  // AdamW moments: of every parameter, or with ZeRO (dist.zero 1, 2) of this rank's piece (shard_).
  Tensor adam_m_, adam_v_;
  std::vector<ops::DecaySegment> segments_;  // of the piece the moments cover
  int64_t zero_ = 0;
  dist::ShardLayout shard_;
  Tensor shard_grads_;  // ZeRO stage 2: this rank's piece of the reduced gradient
  // The communicator of the model's tensors: NCCL on GPUs with several ranks, else comm_.
  dist::Communicator& tensor_comm() { return nccl_ ? *nccl_ : comm_; }
  // The gradient the optimizer reads (the whole flat buffer, or this rank's piece of it).
  Tensor optimizer_gradients();
  Schedule schedule_;
  TrainState state_;
  TrainResult result_;
  io::OutputFile metrics_;  // open on rank 0 unless benchmarking
  std::unique_ptr<SignalGuard> signals_;
  // Progress-line window.
  std::chrono::steady_clock::time_point run_start_, window_start_;
  int64_t first_step_ = 0, window_steps_ = 0;
  bool logged_once_ = false;  // the first progress line names the CPU GEMM path
};

// Builds a Trainer and runs it.
TrainResult run_training(const RunConfig& config, dist::Communicator& comm, const TrainOptions& options);

// Worker threads of one rank: train.threads, or with 0 all cores of this rank's share of its host
// (the cores divided among the host's ranks instead of oversubscribed).
int threads_per_rank(int64_t configured, int local_ranks);

// Mean next-token loss over the validation split (at most max_batches batches; 0 = all) under
// `plan`, summed over ranks. Returns {loss, tokens}. `stop` (optional) is polled between batches:
// when it returns true the walk ends early (a signal during an evaluation inside training).
std::pair<double, int64_t> validation_loss(const layers::Transformer& model, data::ValidationLoader& loader,
                                           const layers::RoutingPlan& plan, int64_t max_batches, dist::Communicator& comm,
                                           const std::function<bool()>& stop = {});

// FLOPs of one training token (forward + backward): 6 N + 12 L H D T (PaLM, appendix B), N the
// parameter count, L layers, H query heads, D head_dim, T the sequence length.
double flops_per_token(const layers::ModelConfig& model, int64_t parameters, int64_t seq_len);

}  // namespace kvroute::train
