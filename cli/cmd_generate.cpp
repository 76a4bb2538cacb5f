// `kvroute generate --checkpoint DIR --prompt TEXT`: sampling with a shared KV cache kept in the
// layers that --retention or --groups selects (planned by layers::inference_plan).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "core/threading.h"
#include "data/tokenizer.h"
#include "eval/evaluate.h"
#include "eval/generate.h"
#include "layers/inference_plan.h"

namespace kvroute::cli {

namespace {

struct Args {
  std::string checkpoint, tokenizer, prompt;
  double retention = 1.0;
  int groups = 0;
  eval::SamplingOptions sampling;
  Placement placement;
  int threads = 0;
};

int run(const Args& a) {
  set_num_threads(a.threads);
  eval::Checkpoint ck = eval::load_for_inference(a.checkpoint);
  place_model(*ck.model, a.placement, 0, ck.config.train.attention);
  const std::string tokenizer_dir = a.tokenizer.empty() ? ck.config.data.tokenizer : a.tokenizer;
  data::Tokenizer tok = data::Tokenizer::load(tokenizer_dir);
  KV_CHECK(tok.vocab_size() <= ck.model->config().vocab_size,
           "{}: the tokenizer has {} tokens but the model's vocabulary is {} (a tokenizer of another model?)",
           tokenizer_dir, tok.vocab_size(), ck.model->config().vocab_size);
  std::vector<int32_t> ids = tok.encode(a.prompt);
  ids.insert(ids.begin(), tok.eot_id());  // documents start with <|endoftext|> in training
  const int L = ck.model->num_layers();
  const layers::InferencePlan plan = layers::inference_plan(
      ck.model->config(), a.groups > 0 ? layers::keep_every(L, a.groups) : layers::keep_retention(L, a.retention));
  eval::SamplingOptions o = a.sampling;
  o.stop_token = tok.eot_id();
  eval::restrict_to_tokenizer(o, tok);  // never an id the tokenizer cannot decode (padding, holes)
  eval::GenerationStats stats;
  std::vector<std::vector<int32_t>> out = eval::generate(*ck.model, {ids}, plan.plan, o, &stats);
  if (!out[0].empty() && out[0].back() == tok.eot_id()) out[0].pop_back();
  std::printf("%s%s\n", a.prompt.c_str(), tok.decode(out[0]).c_str());
  std::fprintf(stderr, "[plan %s: %d/%d layers cached, KV %.1f KiB, TTFT %.1f ms, %.1f tok/s]\n",
               layers::format_plan(plan.plan).c_str(), stats.kept_layers, L, static_cast<double>(stats.kv_bytes) / 1024,
               stats.ttft_ms, stats.decode_tokens_per_s);
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  Args& a = *args;
  auto* cmd = app.add_subcommand("generate", "sample text with a shared KV cache");
  cmd->add_option("--checkpoint", a.checkpoint, "checkpoint directory")->required();
  cmd->add_option("--prompt", a.prompt, "prompt text")->required();
  cmd->add_option("--tokenizer", a.tokenizer, "tokenizer directory (default: the run's data.tokenizer)");
  auto* retention = cmd->add_option("--retention", a.retention, "fraction of layers keeping a KV cache")
                        ->check(bounded(0.0, 1.0));
  cmd->add_option("--groups", a.groups, "keep every g-th layer's cache")->check(bounded(1, 4096))->excludes(retention);
  cmd->add_option("--temperature", a.sampling.temperature, "0: greedy")->check(bounded(0.0, 100.0));
  cmd->add_option("--top-k", a.sampling.top_k, "0: off")->check(bounded(0, 1 << 24));
  cmd->add_option("--top-p", a.sampling.top_p, "1: off")->check(bounded(0.0, 1.0));
  cmd->add_option("--max-new-tokens", a.sampling.max_new_tokens)->check(bounded(1, 1 << 24));
  cmd->add_option("--seed", a.sampling.seed, "sampling seed")->check(bounded(0, 9.2e18));
  add_threads_option(cmd, a.threads);
  add_placement_options(cmd, a.placement);
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace kvroute::cli
