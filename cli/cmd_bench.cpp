// `kvroute bench train CONFIG`: training tokens/s (median step) next to the PyTorch peers.
// `kvroute bench generate`: TTFT, decode tokens/s, KV bytes and peak bytes per retention.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "bench/train_peers.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/allocator.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threading.h"
#include "eval/evaluate.h"
#include "eval/generate.h"
#include "layers/inference_plan.h"
#include "train/trainer.h"

namespace kvroute::cli {

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  int64_t steps = 10;
  bool no_peer = false;
  int threads = 0;
};

int run_train(const TrainArgs& a) {
  std::vector<std::string> all = a.overrides;
  add_threads_override(all, a.threads);
  const int64_t warmup = 2;
  all.push_back(fmt::format("train.steps={}", a.steps + warmup));
  all.push_back(fmt::format("train.log_interval={}", a.steps + warmup));
  train::RunConfig config = train::load_config(a.config, all);
  std::unique_ptr<dist::Communicator> comm = dist::make_communicator(config.dist.backend);
  train::TrainResult result;
  if (const int rc = on_all_ranks(*comm, [&] {
        result = train::run_training(config, *comm, {"", 0, true, true});
        return 0;
      });
      rc != 0) {
    return rc;
  }
  if (comm->rank() != 0) return 0;
  std::vector<double> timed(result.step_seconds.begin() + warmup, result.step_seconds.end());
  const double ms = 1e3 * median(timed);
  const double tok_s = static_cast<double>(result.global_batch_tokens) / (ms * 1e-3);
  const int threads = config.train.threads > 0 ? static_cast<int>(config.train.threads) : num_threads();
  const bool gpu = config.train.device == Device::Kind::CUDA;
  const double share_prob =
      config.router.config.policy == layers::RouterConfig::Policy::Stochastic ? config.router.config.share_prob : 0.0;
  const double tflops = tok_s * train::flops_per_token(config.model, result.parameters, config.train.seq_len) / 1e12;
  const std::string mfu = config.train.peak_tflops > 0
                              ? fmt::format("MFU {:.1f}%", 100.0 * tflops / (config.train.peak_tflops * comm->world_size()))
                              : fmt::format("{:.2f} TFLOP/s", tflops);
  const std::string where = gpu ? fmt::format("{} GPU{} ({})", comm->world_size(), comm->world_size() == 1 ? "" : "s",
                                              train::precision_name(config.train.precision))
                                : fmt::format("{} rank{} x {} thread{}", comm->world_size(),
                                              comm->world_size() == 1 ? "" : "s", threads, threads == 1 ? "" : "s");
  std::printf("kvroute bench train %s: %s, global batch %ld tokens (B=%ld T=%ld), share_prob %.2f: %.1f ms/step, "
              "%.0f tok/s, %s\n",
              a.config.c_str(), where.c_str(), static_cast<long>(result.global_batch_tokens),
              static_cast<long>(config.train.batch_size), static_cast<long>(config.train.seq_len), share_prob, ms, tok_s,
              mfu.c_str());
  if (gpu) {
    const Allocator& alloc = cuda_allocator(0);
    std::printf("kvroute peak GPU memory: %.1f GiB\n", static_cast<double>(alloc.stats().peak_bytes) / (1 << 30));
  }
  if (!a.no_peer && comm->world_size() == 1) {
    bench::run_training_peers(config, a.steps, result.global_batch_tokens, threads, tok_s);
  }
  return 0;
}

struct GenerateArgs {
  std::string checkpoint, config;
  std::vector<double> retention = {1.0, 0.5, 0.25};
  std::vector<int64_t> prompt_lengths = {64, 192}, batch_sizes = {1, 4};
  int64_t new_tokens = 32;
  int repeats = 3;
  Placement placement;
  int threads = 0;
};

int run_generate(const GenerateArgs& a) {
  set_num_threads(a.threads);
  KV_CHECK(!a.checkpoint.empty() || !a.config.empty(), "bench generate: give --checkpoint DIR or --config FILE");
  std::unique_ptr<layers::Transformer> owned;
  eval::Checkpoint ck;
  ops::AttentionKernel attention = ops::AttentionKernel::CudaCores;
  if (!a.checkpoint.empty()) {
    ck = eval::load_for_inference(a.checkpoint);
    attention = ck.config.train.attention;
  } else {
    train::RunConfig c = train::load_config(a.config);
    set_num_threads(static_cast<int>(c.train.threads));
    owned = std::make_unique<layers::Transformer>(c.model_config(), 1);
    attention = c.train.attention;
  }
  layers::Transformer& model = owned ? *owned : *ck.model;
  place_model(model, a.placement, 0, attention);
  const int L = model.num_layers();
  std::printf("%-10s %-6s %-7s %-6s %10s %14s %12s %12s\n", "retention", "kept", "prompt", "batch", "TTFT ms",
              "decode tok/s", "KV bytes", "peak bytes");
  for (int64_t tp : a.prompt_lengths) {
    for (int64_t b : a.batch_sizes) {
      for (double r : a.retention) {
        const layers::RoutingPlan plan = layers::inference_plan(model.config(), layers::keep_retention(L, r)).plan;
        Philox rng(7);
        std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(b), std::vector<int32_t>(static_cast<size_t>(tp)));
        for (auto& p : prompts)
          for (auto& t : p) t = static_cast<int32_t>(rng.uniform_int(model.config().vocab_size));
        eval::SamplingOptions o;
        o.temperature = 0;
        o.max_new_tokens = a.new_tokens;
        std::vector<eval::GenerationStats> runs(static_cast<size_t>(a.repeats));
        for (auto& s : runs) eval::generate(model, prompts, plan, o, &s);
        std::sort(runs.begin(), runs.end(), [](const auto& x, const auto& y) { return x.ttft_ms < y.ttft_ms; });
        const eval::GenerationStats& med = runs[runs.size() / 2];
        std::vector<double> tps;
        for (const auto& s : runs) tps.push_back(s.decode_tokens_per_s);
        std::printf("%-10g %2d/%-3d %-7ld %-6ld %10.1f %14.1f %12ld %12ld\n", r, med.kept_layers, L,
                    static_cast<long>(tp), static_cast<long>(b), med.ttft_ms, median(tps),
                    static_cast<long>(med.kv_bytes), static_cast<long>(med.peak_bytes));
      }
    }
  }
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, int& exit_code) {
  auto* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);

  auto train_args = std::make_shared<TrainArgs>();
  auto* train = bench->add_subcommand("train", "training tokens/s of a config, next to the PyTorch peer");
  train->add_option("config", train_args->config, "run config (YAML)")->required();
  train->add_option("overrides", train_args->overrides, "section.key=value overrides");
  train->add_option("--steps", train_args->steps, "timed steps (median reported)")->check(bounded(1, 100000));
  train->add_flag("--no-peer", train_args->no_peer, "skip the PyTorch peer");
  add_threads_option(train, train_args->threads);
  train->callback([train_args, &exit_code] { exit_code = run_train(*train_args); });

  auto gen_args = std::make_shared<GenerateArgs>();
  GenerateArgs& g = *gen_args;
  auto* gen = bench->add_subcommand("generate", "TTFT, decode tok/s, KV bytes and peak bytes per retention");
  auto* checkpoint = gen->add_option("--checkpoint", g.checkpoint, "checkpoint directory");
  gen->add_option("--config", g.config, "run config (random weights) instead of a checkpoint")->excludes(checkpoint);
  gen->add_option("--retention", g.retention)->delimiter(',')->check(bounded(1e-9, 1.0));
  gen->add_option("--prompt-lengths", g.prompt_lengths)->delimiter(',')->check(bounded(1, 1 << 24));
  gen->add_option("--batch-sizes", g.batch_sizes)->delimiter(',')->check(bounded(1, 1 << 16));
  gen->add_option("--new-tokens", g.new_tokens)->check(bounded(1, 1 << 24));
  gen->add_option("--repeats", g.repeats)->check(bounded(1, 10000));
  add_threads_option(gen, g.threads);
  add_placement_options(gen, g.placement);
  gen->callback([gen_args, &exit_code] { exit_code = run_generate(*gen_args); });
}

}  // namespace kvroute::cli
