// `kvroute eval --checkpoint DIR`: validation loss and perplexity under KV-cache plans given as
// retention fractions, group sizes or explicit keep-sets (and greedy sets of the same sizes);
// a table, eval.csv and eval.json. Runs under mpirun (validation windows split over ranks).
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "core/json.h"
#include "core/threading.h"
#include "data/tokenizer.h"
#include "eval/evaluate.h"
#include "eval/qa.h"

namespace kvroute::cli {

namespace {

struct Args {
  Placement placement;
  std::string checkpoint, data, out, strategy = "even";
  std::vector<std::string> retention_text, groups_text;  // comma lists, checked item by item
  std::vector<double> retention;
  std::vector<int> groups;
  std::vector<std::string> keep;
  int64_t batch = 8, seq_len = 0, batches = 0;
  double plan_split = 0;
  int threads = 0;
  std::string task, tokenizer;
  int64_t max_new_tokens = 16;
  std::vector<std::string> metrics = {"em", "f1", "rougeL"};
  uint64_t task_seed = 1337;
};

int run(Args a) {
  a.retention = split_numbers(a.retention_text);
  for (double g : split_numbers(a.groups_text)) a.groups.push_back(static_cast<int>(g));
  set_num_threads(a.threads);
  eval::Checkpoint ck = eval::load_for_inference(a.checkpoint);
  std::unique_ptr<dist::Communicator> comm = dist::make_communicator(ck.config.dist.backend);
  return on_all_ranks(*comm, [&] {
    place_model(*ck.model, a.placement, comm->local_rank(), ck.config.train.attention);
    const int L = ck.model->num_layers();
    const std::string data = a.data.empty() ? ck.config.data.dir : a.data;
    const int64_t T = a.seq_len > 0 ? a.seq_len : ck.config.train.seq_len;
    KV_CHECK(T <= ck.model->config().max_seq_len, "--seq-len {}: longer than the model's max_seq_len {} ({})", T,
             ck.model->config().max_seq_len, a.checkpoint);
    if (a.retention.empty() && a.groups.empty() && a.keep.empty()) a.retention = eval::kDefaultRetention;
    std::string answers;  // answers.jsonl: one line per plan and task example
    // --task: generation-based QA metrics for every plan as well (eval/qa.h).
    std::vector<eval::QAExample> task;
    std::optional<data::Tokenizer> tokenizer;
    if (!a.task.empty()) {
      task = eval::read_task(a.task, a.task_seed);
      const std::string dir = a.tokenizer.empty() ? ck.config.data.tokenizer : a.tokenizer;
      tokenizer = data::Tokenizer::load(dir);
      KV_CHECK(tokenizer->vocab_size() <= ck.model->config().vocab_size,
               "--task: tokenizer {} has {} tokens but the model's vocabulary is {} (a tokenizer of another model?)",
               dir, tokenizer->vocab_size(), ck.model->config().vocab_size);
    }
    auto score_task = [&](eval::PlanResult& r) {
      if (task.empty()) return;
      std::vector<std::string> predictions;
      const eval::QAScores s =
          eval::evaluate_task(*ck.model, *tokenizer, task, r.plan, a.batch, a.max_new_tokens, *comm, &predictions);
      for (size_t i = 0; i < task.size(); ++i) {
        const eval::QAScores one = eval::score_answer(predictions[i], task[i].answers);
        const json::Json line = {{"plan", r.label}, {"example", i}, {"prediction", predictions[i]},
                                 {"answers", task[i].answers}, {"em", one.em}, {"f1", one.f1}};
        answers += line.dump(-1, ' ', false, json::Json::error_handler_t::replace) + "\n";  // bytes of a cut UTF-8 character: U+FFFD
      }
      r.em = s.em;
      r.f1 = s.f1;
      r.rouge_l = s.rouge_l;
      r.task_examples = s.examples;
    };
    // --plan-split f: the greedy planner chooses on a fraction f of the validation windows (spread
    // over the whole split); every row is measured on the rest, so sets compare on unseen data.
    eval::PlanRequest request;
    request.retention = a.retention;
    request.groups = a.groups;
    for (const std::string& k : a.keep) request.keep_sets.push_back(parse_layer_list("--keep", k));
    request.greedy = a.strategy == "greedy";
    request.plan_split = a.plan_split;
    const std::vector<eval::PlanResult> results =
        eval::evaluate_plans(*ck.model, data, T, a.batch, a.batches, request, *comm, score_task);
    if (comm->rank() != 0) return 0;
    std::printf("kvroute eval %s (%d layers, %s, %ld validation tokens%s)\n%s", a.checkpoint.c_str(), L, data.c_str(),
                static_cast<long>(results.empty() ? 0 : results[0].tokens),
                task.empty() ? "" : fmt::format("; task {}, {} examples", a.task, task.size()).c_str(),
                eval::format_table(results, L, a.metrics).c_str());
    if (a.plan_split > 0) {
      std::printf("plan split %g: greedy sets chosen on %g of the validation windows (interleaved over the split); "
                  "every row measured on the other %g\n", a.plan_split, a.plan_split, 1 - a.plan_split);
    }
    const std::string out = a.out.empty() ? a.checkpoint : a.out;
    std::filesystem::create_directories(out);
    write_file(out + "/eval.csv", eval::format_csv(results, L));
    write_file(out + "/eval.json", eval::format_json(results, L));
    if (!task.empty()) write_file(out + "/answers.jsonl", answers);
    std::printf("wrote %s/eval.csv and %s/eval.json%s\n", out.c_str(), out.c_str(),
                task.empty() ? "" : fmt::format(" (answers: {}/answers.jsonl)", out).c_str());
    return 0;
  });
}

}  // namespace

void add_eval_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  Args& a = *args;
  auto* cmd = app.add_subcommand("eval", "validation loss and perplexity over cache-retention plans");
  cmd->add_option("--checkpoint", a.checkpoint, "checkpoint directory")->required();
  cmd->add_option("--retention", a.retention_text, "retention fractions, e.g. 1,0.75,0.5")
      ->check(number_list(1e-9, 1.0));
  cmd->add_option("--groups", a.groups_text, "keep every g-th layer, e.g. 1,2,3,4")->check(number_list(1, 4096, true));
  cmd->add_option("--keep", a.keep, "explicit keep-set, e.g. 0,3,7 (repeatable)")->check(layer_list());
  cmd->add_option("--strategy", a.strategy, "even | greedy (adds greedy sets of the same sizes)")
      ->check(CLI::IsMember({"even", "greedy"}));
  cmd->add_option("--plan-split", a.plan_split,
                  "greedy: choose keep-sets on this fraction of the validation windows and report every row on "
                  "the rest (0: both on all)")
      ->check(bounded(0, 0.99));
  cmd->add_option("--data", a.data, "shard directory (default: the run's data.dir)")->check(non_empty());
  cmd->add_option("--batch", a.batch, "sequences per batch")->check(bounded(1, 1 << 20));
  cmd->add_option("--seq-len", a.seq_len, "window length (default: the run's train.seq_len)")->check(bounded(0, 1 << 24));
  cmd->add_option("--batches", a.batches, "validation batches per plan (0: all)")->check(bounded(0, 1e12));
  cmd->add_option("--out", a.out, "directory for eval.csv / eval.json, and answers.jsonl with --task (default: the checkpoint)")
      ->check(non_empty());
  cmd->add_option("--task", a.task,
                  "QA task (JSONL: prompt/response or context/question/answer[s]): greedy answers generated with "
                  "the shared cache, scored by EM, F1 and ROUGE-L");
  cmd->add_option("--metrics", a.metrics, "QA metrics shown for --task: em,f1,rougeL (all are in eval.csv/json)")
      ->delimiter(',')
      ->check(CLI::IsMember({"em", "f1", "rougeL"}));
  cmd->add_option("--tokenizer", a.tokenizer, "tokenizer for --task (default: the run's data.tokenizer)");
  cmd->add_option("--max-new-tokens", a.max_new_tokens, "longest generated answer for --task")->check(bounded(1, 4096));
  cmd->add_option("--task-seed", a.task_seed, "seed of the context/question order (as prepare --format sft --seed)")
      ->check(bounded(0, 9.2e18));
  add_threads_option(cmd, a.threads);
  add_placement_options(cmd, a.placement);
  cmd->callback([args, &exit_code] {
    if (args->plan_split > 0 && args->strategy != "greedy")
      usage_error("--plan-split", fmt::format("{}: only the greedy planner (--strategy greedy) chooses keep-sets on "
                                              "validation data", args->plan_split));
    exit_code = run(*args);
  });
}

}  // namespace kvroute::cli
