// `kvroute bench train CONFIG`: training tokens/s (median step) next to the PyTorch peers.
// `kvroute bench generate`: TTFT, decode tokens/s, KV bytes and peak bytes per retention.
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <numeric>

#include "bench/train_peers.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "core/allocator.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/stats.h"
#include "core/text.h"
#include "core/threading.h"
#include "data/shard.h"
#include "eval/evaluate.h"
#include "eval/generation_bench.h"
#include "kernels/ops.h"
#include "kernels/profile.h"
#include "layers/inference_plan.h"
#include "layers/kv_cache.h"
#include "train/execution.h"
#include "train/init_from.h"
#include "train/trainer.h"

namespace kvroute::cli {

namespace {


struct TrainArgs {
  std::string config;
  std::vector<std::string> overrides;
  int64_t steps = 10;
  bool no_peer = false;
  bool profile = false;
  bool print_peer_args = false;
  bool random_data = false;
  int threads = 0;
};

// Shards of uniformly random tokens of the model's vocabulary in a private temporary directory,
// enough for `tokens` training tokens and one validation window: a throughput check needs no
// corpus. Removed when it goes out of scope.
class RandomData {
 public:
  RandomData(int64_t vocab, int64_t tokens, int64_t seq_len) {
    const char* tmp = std::getenv("TMPDIR");
    dir_ = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/kvroute-bench-XXXXXX";
    KV_CHECK(::mkdtemp(dir_.data()) != nullptr, "bench train: cannot create a directory for random tokens: {}",
             std::strerror(errno));
    Philox rng(20241206);
    auto draw = [&](int64_t n) {
      std::vector<int32_t> t(static_cast<size_t>(n));
      for (auto& x : t) x = static_cast<int32_t>(rng.uniform_int(vocab));
      return t;
    };
    const int width = data::token_width_for_vocab(vocab);
    data::write_shard(dir_ + "/train_000000.bin", draw(tokens + seq_len + 1), width);
    data::write_shard(dir_ + "/val_000000.bin", draw(2 * (seq_len + 1)), width);
  }
  ~RandomData() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

// The per-op profile of the steps just run (every step, the warm-up included): time per step of
// each (phase, op) and its share of the mean step; "outside the ops" is the rest of the step (the
// autograd tape, allocation, copies, the data loader, clipping's host work).
void print_profile(const train::TrainResult& result, bool gpu) {
  const std::vector<ops::profile::Entry> entries = ops::profile::take();
  const double steps = static_cast<double>(result.step_seconds.size());
  double step_s = 0, in_ops = 0;
  for (double s : result.step_seconds) step_s += s;
  step_s /= steps;
  std::printf("\nper-op profile, mean over all %.0f steps (warm-up included)%s:\n%-10s %-14s %10s %8s %9s\n", steps,
              gpu ? "; GPU ops are timed on the host (launches), not on the device" : "", "phase", "op", "ms/step",
              "share", "calls/step");
  for (const auto& e : entries) {
    const double ms = 1e3 * e.seconds / steps;
    in_ops += e.seconds / steps;
    std::printf("%-10s %-14s %10.2f %7.1f%% %9.1f\n", ops::profile::phase_name(e.phase), e.op.c_str(), ms,
                100.0 * e.seconds / steps / step_s, static_cast<double>(e.calls) / steps);
  }
  std::printf("%-25s %10.2f %7.1f%%\n%-25s %10.2f\n", "outside the ops", 1e3 * (step_s - in_ops),
              100.0 * (step_s - in_ops) / step_s, "mean step", 1e3 * step_s);
}

int run_train(const TrainArgs& a) {
  check_distinct_overrides(a.overrides);
  std::vector<std::string> all = a.overrides;
  add_threads_override(all, a.threads);
  const int64_t warmup = 2;
  all.push_back(fmt::format("train.steps={}", a.steps + warmup));
  all.push_back(fmt::format("train.log_interval={}", a.steps + warmup));
  train::RunConfig config = train::load_run_config(a.config, all);
  if (a.print_peer_args) {  // for bench/cpu_bf16_vs_torch.sh: the PyTorch peer's arguments, nothing run
    const int64_t tokens = config.train.global_batch_tokens > 0 ? config.train.global_batch_tokens
                                                                : config.train.batch_size * config.train.seq_len;
    std::printf("%s\n", bench::peer_shape_args(config, tokens).c_str());
    return 0;
  }
  std::unique_ptr<RandomData> random;
  std::error_code ec;
  if (a.random_data || !std::filesystem::exists(config.data.dir, ec)) {
    const int64_t per_step = config.train.global_batch_tokens > 0 ? config.train.global_batch_tokens
                                                                  : config.train.batch_size * config.train.seq_len;
    // Every rank draws the same tokens (the same seed); the loader gives each its slice.
    random = std::make_unique<RandomData>(config.model.vocab_size, per_step * config.train.steps * 4,
                                          config.train.seq_len);
    if (!a.random_data)
      std::printf("bench train: data.dir %s does not exist: training on random tokens of the %ld-token vocabulary\n",
                  config.data.dir.c_str(), static_cast<long>(config.model.vocab_size));
    config.data.dir = random->dir();
  }
  std::unique_ptr<dist::Communicator> comm = dist::make_communicator(config.dist.backend);
  train::TrainResult result;
  ops::profile::enable(a.profile);
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
  const std::string where =
      gpu ? fmt::format("{} GPU{} ({})", comm->world_size(), comm->world_size() == 1 ? "" : "s",
                        train::precision_name(config.train.precision))
          : fmt::format("{} rank{} x {} thread{}, {}, {}", comm->world_size(), comm->world_size() == 1 ? "" : "s",
                        threads, threads == 1 ? "" : "s", train::precision_name(config.train.precision),
                        ops::cpu_matmul_description(
                            train::execution(config.train.device, config.train.precision, config.train.attention).ops));
  std::printf("kvroute bench train %s: %s, global batch %ld tokens (B=%ld T=%ld), share_prob %.2f: %.1f ms/step, "
              "%.0f tok/s, %s\n",
              a.config.c_str(), where.c_str(), static_cast<long>(result.global_batch_tokens),
              static_cast<long>(config.train.batch_size), static_cast<long>(config.train.seq_len), share_prob, ms, tok_s,
              mfu.c_str());
  {
    // Supervised data: the targets a step learns from (the responses), per second on this rank's
    // share; what packed rows (data.pack) raise.
    std::vector<double> scored(result.step_scored_tokens.begin() + warmup, result.step_scored_tokens.end());
    const double per_step = scored.empty() ? 0.0 : std::accumulate(scored.begin(), scored.end(), 0.0) / scored.size();
    const double all = static_cast<double>(result.global_batch_tokens) / comm->world_size();
    if (per_step < all) {
      std::printf("scored targets (responses): %.0f of %.0f row positions per step on this rank (%.1f%%), %.0f scored "
                  "tokens/s%s\n", per_step, all, 100.0 * per_step / all, per_step * comm->world_size() / (ms * 1e-3),
                  config.data.pack ? " (packed rows)" : "");
    }
  }
  if (gpu) {
    const Allocator& alloc = cuda_allocator(0);
    std::printf("kvroute peak GPU memory: %.1f GiB\n", static_cast<double>(alloc.stats().peak_bytes) / (1 << 30));
  }
  {
    const int64_t peak = *std::max_element(result.step_peak_bytes.begin() + warmup, result.step_peak_bytes.end());
    std::printf("tensor memory per rank: %.1f MiB between steps (weights, gradients, optimizer state), peak %.1f MiB "
                "above it during a step (activations, temporaries; train.recompute %s)\n",
                static_cast<double>(result.state_bytes) / (1 << 20), static_cast<double>(peak) / (1 << 20),
                train::recompute_name(config.train.recompute));
  }
  if (!gpu) std::printf("cpu: %s\n", bench::cpu_description().c_str());
  if (a.profile) print_profile(result, gpu);
  if (!a.no_peer && comm->world_size() == 1) {
    bench::run_training_peers(config, a.steps, result.global_batch_tokens, threads, tok_s);
  }
  return 0;
}

struct GenerateArgs {
  std::string checkpoint, config, csv;
  std::vector<std::string> retention_text, prompt_lengths_text, batch_sizes_text;  // comma lists as given
  std::vector<double> retention = eval::GenerationBench{}.retention;  // the benchmark's defaults
  std::vector<int64_t> prompt_lengths = eval::GenerationBench{}.prompt_lengths;
  std::vector<int64_t> batch_sizes = eval::GenerationBench{}.batch_sizes;
  int64_t new_tokens = eval::GenerationBench{}.new_tokens;
  int repeats = eval::GenerationBench{}.repeats;
  std::string memory_budget;  // --memory-budget: the largest batch that runs within it, per retention
  int64_t context = 0;        // prompt length of the --memory-budget search (default: the first prompt length)
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
    train::RunConfig c = train::load_run_config(a.config);
    if (a.threads == 0) set_num_threads(static_cast<int>(c.train.threads));
    owned = std::make_unique<layers::Transformer>(c.model_config(), 1);
    attention = c.train.attention;
  }
  layers::Transformer& model = owned ? *owned : *ck.model;
  place_model(model, a.placement, 0, attention);
  const int L = model.num_layers();
  const std::string gemm = model.device().is_cuda() ? "" : ", " + ops::cpu_matmul_description(model.execution());
  std::printf("bench generate: %d layers, hidden %ld, %ld KV heads x %ld, %s %s, KV cache %s, %d threads, %s%s\n", L,
              static_cast<long>(model.config().hidden_size), static_cast<long>(model.config().num_kv_heads),
              static_cast<long>(model.config().head_dim), model.device().str().c_str(),
              dtype_name(model.compute_dtype()), dtype_name(layers::kv_cache_dtype(model)), num_threads(),
              bench::cpu_description().c_str(), gemm.c_str());

  eval::BenchOutput out;
  if (!a.memory_budget.empty()) {
    // The paper's Table 5: per retention, the largest batch that runs within the budget.
    out = eval::bench_memory_budget(model, {a.retention, a.context > 0 ? a.context : a.prompt_lengths.front(),
                                            a.new_tokens, parse_byte_size("--memory-budget", a.memory_budget)});
  } else {
    out = eval::bench_generation(model, {a.retention, a.prompt_lengths, a.batch_sizes, a.new_tokens, a.repeats});
  }
  std::fputs(out.table.c_str(), stdout);
  if (!a.csv.empty()) write_file(a.csv, out.csv);
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
  train->add_flag("--random-data", train_args->random_data,
                  "train on random tokens of the model's vocabulary (also when data.dir does not exist)");
  train->add_flag("--no-peer", train_args->no_peer, "skip the PyTorch peer");
  train->add_flag("--profile", train_args->profile, "also print the time of every op family per step (forward, "
                  "backward, recompute: the forward ops train.recompute runs again in the backward, optimizer)");
  train->add_flag("--print-peer-args", train_args->print_peer_args,
                  "print the PyTorch peer's model and batch arguments for the config, run nothing");
  add_threads_option(train, train_args->threads);
  train->callback([train_args, &exit_code] { exit_code = run_train(*train_args); });

  auto gen_args = std::make_shared<GenerateArgs>();
  GenerateArgs& g = *gen_args;
  auto* gen = bench->add_subcommand("generate", "TTFT, decode tok/s, KV bytes and peak bytes per retention");
  auto* checkpoint = gen->add_option("--checkpoint", g.checkpoint, "checkpoint directory");
  gen->add_option("--config", g.config, "run config (random weights) instead of a checkpoint")->excludes(checkpoint);
  gen->add_option("--retention", g.retention_text)->check(number_list(1e-9, 1.0));
  gen->add_option("--prompt-lengths", g.prompt_lengths_text)->check(number_list(1, 1 << 24, true));
  gen->add_option("--batch-sizes", g.batch_sizes_text)->check(number_list(1, 1 << 16, true));
  gen->add_option("--new-tokens", g.new_tokens)->check(bounded(1, 1 << 24));
  gen->add_option("--repeats", g.repeats, "interleaved repeats (median and min-max reported)")->check(bounded(1, 10000));
  gen->add_option("--memory-budget", g.memory_budget,
                  "bytes (e.g. 2GB): per retention, the largest batch that runs within it at --context")
      ->check(byte_size());
  gen->add_option("--context", g.context, "prompt length of the --memory-budget search")->check(bounded(1, 1 << 24));
  gen->add_option("--csv", g.csv, "also write the results as CSV")->check(non_empty());
  add_threads_option(gen, g.threads);
  add_placement_options(gen, g.placement);
  gen->callback([gen_args, &exit_code] {
    GenerateArgs& a = *gen_args;
    if (!a.retention_text.empty()) a.retention = split_numbers(a.retention_text);
    auto integers = [](const std::vector<std::string>& text, std::vector<int64_t>& out) {
      if (text.empty()) return;
      out.clear();
      for (double v : split_numbers(text)) out.push_back(static_cast<int64_t>(v));
    };
    integers(a.prompt_lengths_text, a.prompt_lengths);
    integers(a.batch_sizes_text, a.batch_sizes);
    exit_code = run_generate(a);
  });
}

}  // namespace kvroute::cli
