// `kvroute memory`: the bytes a training run needs per rank, from its config alone (nothing is
// allocated), and whether it fits a device. The activation figures follow what the autograd tape
// keeps tensor by tensor (docs/architecture.md: bf16 operands, recomputation) and round every
// tensor to the allocator's size class, so they can be checked against the allocator's measured
// peak (`bench train` prints it; tests/train/test_memory_plan.cpp checks CPU runs within 10%).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/config.h"

namespace kvroute::train {

// Where the run would go: this machine's memory ("cpu"), or a GPU by name ("h100", "h200").
struct MemoryDevice {
  std::string name;
  double bytes = 0;
};
// cpu | h100 | h200; an error naming the value otherwise.
MemoryDevice memory_device(const std::string& name);

struct MemoryPlan {
  int world_size = 1;
  int64_t parameters = 0;
  int64_t tokens_per_micro_batch = 0;  // train.batch_size x train.seq_len
  // Per rank, in bytes, as allocated (each flat buffer rounded to the allocator's size class).
  // Data parallelism replicates the model state; ZeRO (dist.zero) shards the moments (1) and the
  // reduced gradients (2).
  double weights = 0;         // the bf16 compute copy on CUDA with precision bf16, else 0 (the master is used)
  double master_weights = 0;  // f32
  double gradients = 0;       // f32 flat buffer
  double optimizer = 0;       // AdamW's two f32 moments
  double activations = 0;     // peak above the model state during a step, without recomputation
  double activations_recompute = 0;  // the same with train.recompute: layer
  // KV cache of generation at batch_size x seq_len tokens of context, in the generation dtype
  // (bf16 on CUDA or with precision bf16, else f32), at retention 1, 0.5 and 0.25.
  std::vector<std::pair<double, double>> kv_cache;
  bool recompute = false;  // the config's train.recompute
  int64_t zero = 0;        // the config's dist.zero
  double model_state() const { return weights + master_weights + gradients + optimizer; }
  double total() const { return model_state() + (recompute ? activations_recompute : activations); }
};

// The activation bytes of one micro-batch (peak above the model state) for `model` at `tokens`
// tokens, as the tape of this build keeps them.
double activation_bytes(const layers::ModelConfig& model, int64_t tokens, Precision precision, bool cuda,
                        bool recompute);

MemoryPlan plan_memory(const RunConfig& config, int world_size);

// The report: one line per item, whether it fits `device`, and if not, which settings would.
std::string format_memory_plan(const MemoryPlan& plan, const RunConfig& config, const MemoryDevice& device);

}  // namespace kvroute::train
