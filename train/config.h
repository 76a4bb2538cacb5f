// Run configuration: one YAML file with sections model, router, data, optim, train, eval, dist,
// parsed into typed structs. Every key is validated: an unknown key names the file, the key path
// and the nearest valid key; a wrong type or an out-of-range value names the value. Command-line
// overrides `section.key=value` apply before validation. to_yaml() is the resolved config.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "distributed/communicator.h"
#include "kernels/ops.h"
#include "layers/router.h"
#include "layers/transformer.h"
#include "train/schedule.h"

namespace YAML {
class Node;
}

namespace kvroute::train {

// The most steps a run may have: checkpoint directories carry 8-digit step numbers.
inline constexpr int64_t kMaxSteps = 99'999'999;

// A YAML node as text for messages and overrides: a scalar as is, anything else in flow style.
std::string yaml_text(const YAML::Node& node);

// The one YAML document of `text` (configs, study files, override values): a syntax error names
// `source`, the line and column; a second document ("---" and more) is refused, not ignored. An
// empty text is a null node.
YAML::Node load_yaml(const std::string& text, const std::string& source);

// train.precision: fp32, or bf16 compute with fp32 master weights, gradients and optimizer state.
enum class Precision { FP32, BF16 };
const char* precision_name(Precision precision);
// train.recompute: none, or layer (each decoder layer's activations recomputed in the backward).
enum class Recompute { None, Layer };
const char* recompute_name(Recompute recompute);

// train.device: cpu | cuda.
const char* device_kind_name(Device::Kind kind);

// router.kv_init: how a run whose router leaves layers without K/V weights (CLA@k) starts from a
// model that has them (model.init_from): drop the non-leaders' K/V, or average each group's K/V
// weights into its leader (as MLKV/LCKV initialise).
enum class KvInit { Drop, Average };
const char* kv_init_name(KvInit kv_init);

struct RouterSection {
  layers::RouterConfig config;
  bool same_plan_all_ranks = false;  // default: every rank (micro-batch slice) draws its own plan
  KvInit kv_init = KvInit::Drop;
};

struct DataSection {
  std::string dir = "data/prepared/quickstart";
  std::string tokenizer = "data/prepared/tokenizer-8k";
  // Supervised examples packed several to a training row (data/sft.h), each attending only to
  // itself: no compute on padding. Validation rows stay one example each. On CUDA the attention
  // runs on the CUDA-core kernel (the tensor-core one reads no sequence bounds).
  bool pack = false;
};

struct OptimSection {
  double lr = 6e-4;
  double min_lr = 6e-5;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // 0: no clipping
  ScheduleKind schedule = ScheduleKind::Cosine;
  double warmup_fraction = 0.05;
  double decay_fraction = 0.2;  // wsd: final fraction of steps that decays to min_lr
};

struct TrainSection {
  std::string name = "run";
  std::string run_dir;  // empty: runs/<name>
  int64_t steps = 100;
  int64_t batch_size = 8;  // sequences per micro-batch per rank
  int64_t seq_len = 256;
  int64_t global_batch_tokens = 0;  // 0: world x batch_size x seq_len (no accumulation)
  uint64_t seed = 1;
  int64_t log_interval = 10;
  int64_t checkpoint_interval = 0;  // 0: only at the end (and on SIGINT/SIGTERM)
  int64_t keep_checkpoints = 3;
  int64_t threads = 0;  // 0: all cores (per rank)
  Device::Kind device = Device::Kind::CPU;
  Precision precision = Precision::FP32;
  // The CUDA attention kernel (kernels/ops.h): cuda_cores or tensor_cores (bf16, sm_80+; shapes it
  // does not support fall back to cuda_cores). No effect on the CPU.
  ops::AttentionKernel attention = ops::AttentionKernel::CudaCores;
  // layer: each decoder layer keeps its input, norm and K/V and recomputes the rest during the
  // backward pass (the same gradients, bit for bit; docs/benchmarks.md has memory and time).
  Recompute recompute = Recompute::None;
  double peak_tflops = 0;  // for MFU; 0: not reported
};

struct EvalSection {
  int64_t interval = 0;  // 0: only at the end
  std::vector<double> retention = {1.0};
  int64_t batches = 0;  // validation batches per evaluation; 0: the whole val split
};

struct DistSection {
  dist::Backend backend = dist::Backend::Auto;  // auto (MPI when launched by mpirun) | mpi | none
  double bucket_mb = 16;
  // ZeRO: 0 replicates the model state on every rank; 1 shards the AdamW moments over the ranks
  // (each updates its piece of the weights, then all gather them); 2 also reduce-scatters the
  // gradients so each rank keeps only its piece (docs/architecture.md, "ZeRO").
  int64_t zero = 0;
  int64_t bucket_elements() const { return dist::bucket_elements(bucket_mb); }
};

struct RunConfig {
  layers::ModelConfig model;
  // model.init_from: a Hugging Face model directory or a kvroute checkpoint whose weights a fresh
  // run starts from (fresh optimizer, step 0). Model keys the YAML leaves out are taken from it;
  // keys it gives must agree with it (max_seq_len and init_std may differ).
  std::string init_from;
  RouterSection router;
  DataSection data;
  OptimSection optim;
  TrainSection train;
  EvalSection eval;
  DistSection dist;
  std::string source;  // the file it came from
  // Set by parsing when model.init_from must still be read (the YAML leaves model keys out): they
  // are defaults until train::resolve_init_from (train/init_from.h) takes them from the source, and
  // model_config() refuses to build the model before that. Parsing never reads the source.
  bool init_from_pending = false;
  std::set<std::string> model_keys_given;  // the model keys the YAML (with overrides) gives

  std::string run_dir() const { return train.run_dir.empty() ? "runs/" + train.name : train.run_dir; }
  std::string checkpoints_dir() const { return run_dir() + "/checkpoints"; }
  // The model this run builds: the model section plus which layers own K/V projection weights,
  // which the router decides (CLA@k leaves the non-leaders without). The one place that derives it.
  layers::ModelConfig model_config() const;
  std::string to_yaml() const;
  // A hash of everything that fixes the shape of the model and its parameters (model section,
  // router policy/group size): a checkpoint must match it to be loaded.
  std::string model_fingerprint() const;
};

// Completes the model section from `source` (the model section of model.init_from, read from
// `origin`): keys the YAML left out are taken, keys it gave must agree (max_seq_len may be
// smaller; init_std and scaled_residual_init are the run's). Then validates the whole config.
void take_model_from(RunConfig& config, const layers::ModelConfig& source, const std::string& origin);

// Reads `path`, applies `overrides` ("section.key=value"), validates. Errors name the file.
// model.init_from is not read here (see RunConfig::init_from_pending).
RunConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from YAML text (`source` names it in errors).
RunConfig parse_config(const std::string& yaml_text, const std::string& source,
                       const std::vector<std::string>& overrides = {});

}  // namespace kvroute::train
