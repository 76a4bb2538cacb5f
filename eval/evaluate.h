// Evaluation over routing plans: validation loss and perplexity for keep-sets given as retention
// fractions, group sizes or explicit lists (evenly spread), and the greedy retention planner.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "layers/transformer.h"
#include "data/loader.h"
#include "distributed/communicator.h"
#include "train/config.h"

namespace kvroute::eval {

// The retention levels evaluated when none are given (eval, sweep).
inline const std::vector<double> kDefaultRetention = {1.0, 0.75, 0.5, 0.33, 0.25};

struct PlanResult {
  std::string label;       // "retention 0.5", "groups 2", "keep 0,3,7", "greedy 3"
  std::string strategy;    // even | greedy | list
  std::vector<int> kept;   // keep-set S
  layers::RoutingPlan plan;
  double loss = 0, perplexity = 0;
  int64_t tokens = 0;
  // Generation-based QA metrics (eval/qa.h), when a task was evaluated (task_examples > 0).
  double em = 0, f1 = 0, rouge_l = 0;
  int64_t task_examples = 0;
};

struct Checkpoint {
  train::RunConfig config;
  std::unique_ptr<layers::Transformer> model;
  std::string dir;
};
// Loads a checkpoint directory (config.yaml + model.safetensors), or a Hugging Face model
// directory (config.json + safetensors, train/hf.h), for inference.
Checkpoint load_for_inference(const std::string& dir);

// Validation loss of the model with a KV cache kept in `keep` (planned by layers::inference_plan,
// as in the in-training evaluation).
// `part`: the part of the validation split measured (data/loader.h).
PlanResult evaluate_keep_set(const layers::Transformer& model, const std::string& data_dir, int64_t seq_len,
                             int64_t batch, int64_t max_batches, const std::vector<int>& keep, const std::string& label,
                             const std::string& strategy, dist::Communicator& comm, data::ValidationPart part = {});

// Greedy planner: from all layers, repeatedly drop the layer whose removal raises the validation
// loss least; returns the chosen set for each size in `sizes` (descending order of removal).
// The choices are made on `plan_part` of the validation split; the losses reported for the chosen
// sets are measured on `report_part` (pass disjoint parts for an unbiased report).
std::vector<PlanResult> greedy_keep_sets(const layers::Transformer& model, const std::string& data_dir,
                                         int64_t seq_len, int64_t batch, int64_t max_batches,
                                         const std::vector<int>& sizes, dist::Communicator& comm,
                                         data::ValidationPart plan_part = {}, data::ValidationPart report_part = {});

// What `kvroute eval` and a study measure: plans from retention levels, group sizes and explicit
// keep-sets (in that order), optionally the keep-set a CLA@k model's groups imply when none of
// those gives it, and with `greedy` the greedy sets of the same sizes; `plan_split` as below.
struct PlanRequest {
  std::vector<double> retention;
  std::vector<int> groups;
  std::vector<std::vector<int>> keep_sets;
  int implied_groups = 0;  // > 0: add "groups g" when no plan above keeps the set it implies
  bool greedy = false;
  double plan_split = 0;
};
// Evaluates every plan of `request` on `data_dir`; `on_plan` (optional) sees each evenly spread or
// listed plan's result as it is measured (for the QA metrics of `kvroute eval --task`).
std::vector<PlanResult> evaluate_plans(const layers::Transformer& model, const std::string& data_dir, int64_t seq_len,
                                       int64_t batch, int64_t max_batches, const PlanRequest& request,
                                       dist::Communicator& comm,
                                       const std::function<void(PlanResult&)>& on_plan = nullptr);

// The validation parts of a plan split f (data::ValidationPart: interleaved windows): the planner
// chooses on [0, f), results are reported on [f, 1). f = 0: no split, both are the whole split.
std::pair<data::ValidationPart, data::ValidationPart> plan_split_parts(double f);

// Table / CSV / JSON renderings of results.
// `metrics`: the QA columns the table shows when a task was evaluated (em, f1, rougeL).
std::string format_table(const std::vector<PlanResult>& results, int num_layers,
                         const std::vector<std::string>& metrics = {"em", "f1", "rougeL"});
std::string format_csv(const std::vector<PlanResult>& results, int num_layers);
std::string format_json(const std::vector<PlanResult>& results, int num_layers);

}  // namespace kvroute::eval
