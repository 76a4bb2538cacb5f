#include "eval/evaluate.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/safetensors.h"
#include "data/loader.h"
#include "layers/inference_plan.h"
#include "train/hf.h"
#include "train/trainer.h"

namespace kvroute::eval {

Checkpoint load_for_inference(const std::string& dir) {
  std::error_code ec;
  KV_CHECK(std::filesystem::is_directory(dir, ec), "{}: no such checkpoint directory", dir);
  Checkpoint ck;
  ck.dir = dir;
  if (!std::filesystem::exists(dir + "/config.yaml", ec) && train::hf::is_model_dir(dir)) {
    // A Hugging Face model directory: its config.json is the model section, no routing.
    ck.config.source = dir + "/config.json";
    ck.config.model = train::hf::read_config(dir).model;
    if (std::filesystem::exists(dir + "/tokenizer.json", ec)) ck.config.data.tokenizer = dir;
    ck.config.train.seq_len = std::min<int64_t>(ck.config.train.seq_len, ck.config.model.max_seq_len);
    ck.model = std::make_unique<layers::Transformer>(ck.config.model_config(), 0);
    const auto weights = train::hf::WeightSource::model_dir(dir, ck.config.model.tie_embeddings);
    weights.load_into(*ck.model);
    return ck;
  }
  ck.config = train::load_config(dir + "/config.yaml");
  ck.model = std::make_unique<layers::Transformer>(ck.config.model_config(), 0);
  const auto weights = train::hf::WeightSource::file(dir + "/model.safetensors");
  weights.load_into(*ck.model);
  return ck;
}

PlanResult evaluate_keep_set(const layers::Transformer& model, const std::string& data_dir, int64_t seq_len,
                             int64_t batch, int64_t max_batches, const std::vector<int>& keep, const std::string& label,
                             const std::string& strategy, dist::Communicator& comm, data::ValidationPart part) {
  PlanResult r;
  r.label = label;
  r.strategy = strategy;
  layers::InferencePlan p = layers::inference_plan(model.config(), keep);
  r.kept = std::move(p.kept);
  r.plan = std::move(p.plan);
  data::ValidationLoader loader(data_dir, batch, seq_len, comm.rank(), comm.world_size(), model.config().vocab_size,
                                part);
  auto [loss, tokens] = train::validation_loss(model, loader, r.plan, max_batches, comm);
  // A non-finite loss is not a result: no table or file reports it.
  KV_CHECK(std::isfinite(loss), "{}: the validation loss under {} is not finite ({}); the model's weights give "
           "non-finite outputs", data_dir, label, loss);
  r.loss = loss;
  r.perplexity = std::exp(loss);
  r.tokens = tokens;
  return r;
}

std::vector<PlanResult> greedy_keep_sets(const layers::Transformer& model, const std::string& data_dir,
                                         int64_t seq_len, int64_t batch, int64_t max_batches,
                                         const std::vector<int>& sizes, dist::Communicator& comm,
                                         data::ValidationPart plan_part, data::ValidationPart report_part) {
  auto measure = [&](const std::vector<int>& keep, data::ValidationPart part) {
    return evaluate_keep_set(model, data_dir, seq_len, batch, max_batches, keep, fmt::format("greedy {}", keep.size()),
                             "greedy", comm, part);
  };
  const int L = model.num_layers();
  std::vector<int> current;
  for (int l = 0; l < L; ++l)
    if (model.config().layer_has_kv_weights(l)) current.push_back(l);
  std::vector<PlanResult> chosen;
  auto want = [&](size_t n) { return std::find(sizes.begin(), sizes.end(), static_cast<int>(n)) != sizes.end(); };
  if (want(current.size())) chosen.push_back(measure(current, report_part));
  const int smallest = sizes.empty() ? 1 : *std::min_element(sizes.begin(), sizes.end());
  while (static_cast<int>(current.size()) > std::max(smallest, 1)) {
    PlanResult best;
    best.loss = INFINITY;
    for (size_t i = 1; i < current.size(); ++i) {  // layer 0 always stays
      std::vector<int> candidate = current;
      candidate.erase(candidate.begin() + static_cast<std::ptrdiff_t>(i));
      PlanResult r = measure(candidate, plan_part);
      if (r.loss < best.loss) best = r;
    }
    current = best.kept;
    if (want(current.size()))
      chosen.push_back(report_part.begin == plan_part.begin && report_part.end == plan_part.end
                           ? best
                           : measure(current, report_part));
  }
  return chosen;
}

std::vector<PlanResult> evaluate_plans(const layers::Transformer& model, const std::string& data_dir, int64_t seq_len,
                                       int64_t batch, int64_t max_batches, const PlanRequest& request,
                                       dist::Communicator& comm, const std::function<void(PlanResult&)>& on_plan) {
  const int L = model.num_layers();
  // Every row on the report part; the greedy planner chooses on the plan part.
  const auto [plan_part, report_part] = plan_split_parts(request.plan_split);
  std::vector<PlanResult> out;
  auto measure = [&](const std::vector<int>& keep, const std::string& label, const std::string& strategy) {
    out.push_back(evaluate_keep_set(model, data_dir, seq_len, batch, max_batches, keep, label, strategy, comm,
                                    report_part));
    if (on_plan) on_plan(out.back());
  };
  for (double r : request.retention) measure(layers::keep_retention(L, r), fmt::format("retention {:g}", r), "even");
  for (int g : request.groups) measure(layers::keep_every(L, g), fmt::format("groups {}", g), "even");
  for (const std::vector<int>& k : request.keep_sets)
    measure(layers::keep_list(L, k), fmt::format("keep {}", fmt::join(k, ",")), "list");
  if (request.implied_groups > 0) {
    const int g = request.implied_groups;
    const std::vector<int> implied = layers::inference_plan(model.config(), layers::keep_every(L, g)).kept;
    if (std::none_of(out.begin(), out.end(), [&](const PlanResult& p) { return p.kept == implied; }))
      measure(layers::keep_every(L, g), fmt::format("groups {}", g), "even");
  }
  if (request.greedy) {
    std::vector<int> sizes;
    for (const PlanResult& p : out) sizes.push_back(static_cast<int>(p.kept.size()));
    std::vector<PlanResult> greedy =
        greedy_keep_sets(model, data_dir, seq_len, batch, max_batches, sizes, comm, plan_part, report_part);
    out.insert(out.end(), greedy.begin(), greedy.end());
  }
  return out;
}

std::pair<data::ValidationPart, data::ValidationPart> plan_split_parts(double f) {
  KV_CHECK(f >= 0 && f < 1, "plan split {}: must be in [0, 1) (0: plan and report on the whole validation split)", f);
  if (f == 0) return {{}, {}};
  return {{0.0, f}, {f, 1.0}};
}

namespace {
std::string join(const std::vector<int>& v) { return fmt::format("{}", fmt::join(v, " ")); }
}  // namespace

std::string format_table(const std::vector<PlanResult>& results, int num_layers,
                         const std::vector<std::string>& metrics) {
  const bool task = std::any_of(results.begin(), results.end(), [](const PlanResult& r) { return r.task_examples > 0; });
  auto shown = [&](const char* m) { return task && std::find(metrics.begin(), metrics.end(), m) != metrics.end(); };
  std::string out = fmt::format("{:<16} {:>9} {:>9} {:>10} {:>10}", "plan", "kept", "KV share", "val loss", "perplexity");
  if (shown("em")) out += fmt::format(" {:>7}", "EM");
  if (shown("f1")) out += fmt::format(" {:>7}", "F1");
  if (shown("rougeL")) out += fmt::format(" {:>7}", "ROUGE-L");
  out += "  kept layers\n";
  for (const PlanResult& r : results) {
    out += fmt::format("{:<16} {:>5}/{:<3} {:>8.1f}% {:>10.4f} {:>10.2f}", r.label, r.kept.size(), num_layers,
                       100.0 * static_cast<double>(r.kept.size()) / num_layers, r.loss, r.perplexity);
    if (shown("em")) out += fmt::format(" {:>7.3f}", r.em);
    if (shown("f1")) out += fmt::format(" {:>7.3f}", r.f1);
    if (shown("rougeL")) out += fmt::format(" {:>7.3f}", r.rouge_l);
    out += "  " + join(r.kept) + "\n";
  }
  return out;
}

std::string format_csv(const std::vector<PlanResult>& results, int num_layers) {
  std::string out =
      "plan,strategy,kept,num_layers,kv_fraction,val_loss,perplexity,tokens,kept_layers,routing_plan,em,f1,rouge_l,"
      "task_examples\n";
  for (const PlanResult& r : results) {
    out += fmt::format("{},{},{},{},{:.6f},{:.6f},{:.4f},{},{},\"{}\",{:.6f},{:.6f},{:.6f},{}\n", r.label, r.strategy,
                       r.kept.size(), num_layers, static_cast<double>(r.kept.size()) / num_layers, r.loss, r.perplexity,
                       r.tokens, join(r.kept), layers::format_plan(r.plan), r.em, r.f1, r.rouge_l, r.task_examples);
  }
  return out;
}

std::string format_json(const std::vector<PlanResult>& results, int num_layers) {
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (const PlanResult& r : results) {
    arr.push_back({{"plan", r.label},
                   {"strategy", r.strategy},
                   {"kept", r.kept},
                   {"num_layers", num_layers},
                   {"kv_fraction", static_cast<double>(r.kept.size()) / num_layers},
                   {"val_loss", r.loss},
                   {"perplexity", r.perplexity},
                   {"tokens", r.tokens},
                   {"routing_plan", layers::format_plan(r.plan)}});
    if (r.task_examples > 0) {
      arr.back()["em"] = r.em;
      arr.back()["f1"] = r.f1;
      arr.back()["rouge_l"] = r.rouge_l;
      arr.back()["task_examples"] = r.task_examples;
    }
  }
  return arr.dump(2) + "\n";
}

}  // namespace kvroute::eval
