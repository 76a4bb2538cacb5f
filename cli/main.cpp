// The kvroute executable: one binary, subcommands (CLI11). Every failure ends in a one-line
// "kvroute: error: ..." on stderr and a non-zero exit.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "core/allocator.h"
#include "core/device_runtime.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threading.h"
#include "data/corpus.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "eval/evaluate.h"
#include "eval/generate.h"
#include "eval/sweep.h"
#include "train/communicator.h"
#include "train/config.h"
#include "train/trainer.h"

namespace {

using namespace kvroute;

void add_threads_option(CLI::App* app, int& threads) {
  app->add_option("--threads", threads, "worker threads (0: all cores)")->check(CLI::NonNegativeNumber);
}

int run_tokenizer_train(const std::vector<std::string>& inputs, int64_t vocab, const std::string& out) {
  const auto start = std::chrono::steady_clock::now();
  const bool tty = isatty(STDERR_FILENO);
  int64_t documents = 0, bytes = 0;
  data::Tokenizer tok = data::Tokenizer::train(
      [&](const std::function<void(std::string_view)>& emit) {
        data::for_each_document(inputs, [&](std::string_view text) {
          ++documents;
          bytes += static_cast<int64_t>(text.size());
          emit(text);
        });
      },
      vocab,
      [&](int64_t merges, int64_t target) {
        if (tty) std::fprintf(stderr, "\rtokenizer train: %ld/%ld merges", static_cast<long>(merges), static_cast<long>(target));
      });
  if (tty) std::fprintf(stderr, "\n");
  tok.save(out);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("tokenizer train: %ld documents, %.1f MB, vocab %ld (%zu merges) -> %s in %.1f s\n",
              static_cast<long>(documents), static_cast<double>(bytes) / 1e6, static_cast<long>(tok.vocab_size()),
              tok.num_merges(), out.c_str(), seconds);
  if (tok.vocab_size() < vocab) {
    std::printf("tokenizer train: note: the corpus supports only %ld tokens (no pair occurs twice beyond that)\n",
                static_cast<long>(tok.vocab_size()));
  }
  return 0;
}

int run_tokenizer_encode(const std::string& dir, const std::string& text) {
  data::Tokenizer tok = data::Tokenizer::load(dir);
  std::vector<int32_t> ids = tok.encode(text);
  std::printf("%s\n", fmt::format("{}", fmt::join(ids, " ")).c_str());
  return 0;
}

int run_prepare(const data::PrepareOptions& options) {
  data::PrepareSummary s = data::prepare(options);
  const int64_t tokens = s.train_tokens + s.val_tokens;
  std::printf("prepare: %ld documents (%ld train, %ld val), %ld tokens (%ld train in %ld shards, %ld val in %ld), "
              "%.1f MB text, %.2f bytes/token, %.1f s (%.1f MB/s) -> %s\n",
              static_cast<long>(s.documents), static_cast<long>(s.train_documents), static_cast<long>(s.val_documents),
              static_cast<long>(tokens), static_cast<long>(s.train_tokens), static_cast<long>(s.train_shards),
              static_cast<long>(s.val_tokens), static_cast<long>(s.val_shards), static_cast<double>(s.bytes) / 1e6,
              static_cast<double>(s.bytes) / static_cast<double>(std::max<int64_t>(tokens, 1)), s.seconds,
              static_cast<double>(s.bytes) / 1e6 / s.seconds, options.out_dir.c_str());
  return 0;
}

// Runs fn on this rank. A failure prints "kvroute: error (rank R): ..." and, under mpirun, ends
// every rank at once (MPI_Abort), so none waits forever in a collective.
int on_all_ranks(train::Communicator& comm, const std::function<int()>& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvroute: error (rank %d): %s\n", comm.rank(), e.what());
    std::fflush(stderr);
    if (comm.world_size() > 1) comm.abort(1);
    return 1;
  }
}

int run_train(const std::string& config_path, const std::vector<std::string>& overrides, const std::string& resume,
              int64_t threads_flag) {
  std::vector<std::string> all = overrides;
  if (threads_flag > 0) all.push_back(fmt::format("train.threads={}", threads_flag));
  train::RunConfig config = train::load_config(config_path, all);
  std::unique_ptr<train::Communicator> comm = train::make_communicator(config.dist.backend);
  return on_all_ranks(*comm, [&] {
    if (comm->rank() == 0) {
      std::printf("kvroute train: %s -> %s (%s, %d rank%s)\n", config_path.c_str(), config.run_dir().c_str(),
                  comm->name().c_str(), comm->world_size(), comm->world_size() == 1 ? "" : "s");
    }
    train::TrainResult result = train::run_training(config, *comm, {resume, 0, false});
    return result.interrupted ? 130 : 0;
  });
}

// Median of a vector (copied).
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Runs a shell command and returns its last stdout line ("" on failure).
std::string last_line_of(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string out, line;
  char buf[4096];
  while (fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
  const int rc = pclose(pipe);
  if (rc != 0) return "";
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const size_t nl = out.rfind('\n');
  return nl == std::string::npos ? out : out.substr(nl + 1);
}

double tokens_per_second_of(const std::string& line) {
  const size_t pos = line.find(" tok/s");
  if (pos == std::string::npos) return 0.0;
  size_t start = line.rfind(' ', pos - 1);
  return std::atof(line.substr(start + 1, pos - start - 1).c_str());
}

int run_bench_train(const std::string& config_path, const std::vector<std::string>& overrides, int64_t steps,
                    bool peer, int64_t threads_flag) {
  std::vector<std::string> all = overrides;
  if (threads_flag > 0) all.push_back(fmt::format("train.threads={}", threads_flag));
  const int64_t warmup = 2;
  all.push_back(fmt::format("train.steps={}", steps + warmup));
  all.push_back(fmt::format("train.log_interval={}", steps + warmup));
  train::RunConfig config = train::load_config(config_path, all);
  std::unique_ptr<train::Communicator> comm = train::make_communicator(config.dist.backend);
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
  const bool gpu = config.train.device == "cuda";
  const double share_prob =
      config.router.config.policy == layers::RouterConfig::Policy::Stochastic ? config.router.config.share_prob : 0.0;
  const double tflops = tok_s * train::flops_per_token(config.model, result.parameters, config.train.seq_len) / 1e12;
  const std::string mfu = config.train.peak_tflops > 0
                              ? fmt::format("MFU {:.1f}%", 100.0 * tflops / (config.train.peak_tflops * comm->world_size()))
                              : fmt::format("{:.2f} TFLOP/s", tflops);
  const std::string where = gpu ? fmt::format("{} GPU{} ({})", comm->world_size(), comm->world_size() == 1 ? "" : "s",
                                              config.train.precision)
                                : fmt::format("{} rank{} x {} thread{}", comm->world_size(),
                                              comm->world_size() == 1 ? "" : "s", threads, threads == 1 ? "" : "s");
  std::printf("kvroute bench train %s: %s, global batch %ld tokens (B=%ld T=%ld), share_prob %.2f: %.1f ms/step, "
              "%.0f tok/s, %s\n",
              config_path.c_str(), where.c_str(), static_cast<long>(result.global_batch_tokens),
              static_cast<long>(config.train.batch_size), static_cast<long>(config.train.seq_len), share_prob, ms, tok_s,
              mfu.c_str());
  if (gpu) {
    const Allocator& alloc = cuda_allocator(0);
    std::printf("kvroute peak GPU memory: %.1f GiB\n", static_cast<double>(alloc.stats().peak_bytes) / (1 << 30));
  }
  if (!peer || comm->world_size() != 1) return 0;
  // The interpreter with PyTorch: Debian's python3-torch by default, KVROUTE_PYTHON to override.
  const char* python_env = std::getenv("KVROUTE_PYTHON");
  const std::string python = python_env != nullptr && *python_env != '\0' ? python_env : "/usr/bin/python3";
  if (std::system((python + " -c 'import torch' > /dev/null 2>&1").c_str()) != 0) {
    std::printf("peer: %s cannot import torch (KVROUTE_EXTRA_PACKAGES=python3-torch scripts/setup.sh, or set "
                "KVROUTE_PYTHON)\n",
                python.c_str());
    return 0;
  }
  // The peer scripts: from the source tree this binary was built in, or KVROUTE_SOURCE_DIR (a
  // binary carried to another machine, next to a checkout at another path).
  const char* source_env = std::getenv("KVROUTE_SOURCE_DIR");
  const std::string source = source_env != nullptr && *source_env != '\0' ? source_env : KVROUTE_SOURCE_DIR;
  const layers::ModelConfig& m = config.model;
  const std::string dims = fmt::format(
      "--steps {} --batch {} --seq {} --share-prob {} --vocab {} --hidden {} --layers {} --heads {} --kv-heads {} "
      "--head-dim {} --ffn {}",
      steps, result.global_batch_tokens / config.train.seq_len, config.train.seq_len, share_prob, m.vocab_size,
      m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim, m.intermediate_size);
  // GPU: PyTorch eager and torch.compile (bf16 autocast). CPU: PyTorch as is and with passive
  // OpenMP waiting (Debian's build starves OpenBLAS's threads otherwise); the better one counts.
  std::vector<std::pair<std::string, std::string>> peers;
  if (gpu) {
    const std::string base = fmt::format("{} {}/bench/peer_gpu_train_step.py {} --rope-theta {} --peak-tflops {}",
                                         python, source, dims, m.rope_theta,
                                         config.train.peak_tflops > 0 ? config.train.peak_tflops : 989.0);
    peers = {{"eager", base + " --mode eager"}, {"torch.compile", base + " --mode compile"}};
  } else {
    const std::string base =
        fmt::format("{} {}/bench/peer_train_step.py --threads {} {}", python, source, threads, dims);
    peers = {{"as is", base}, {"OMP_WAIT_POLICY=PASSIVE", "OMP_WAIT_POLICY=PASSIVE " + base}};
  }
  double best = 0;
  for (const auto& [label, cmd] : peers) {
    std::string line = last_line_of(cmd);
    std::printf("%s%s\n", line.empty() ? "peer failed: " : "", line.empty() ? cmd.c_str() : line.c_str());
    const double peer_tok_s = tokens_per_second_of(line);
    if (gpu && peer_tok_s > 0) std::printf("kvroute / PyTorch %s tokens/s: %.2fx\n", label.c_str(), tok_s / peer_tok_s);
    best = std::max(best, peer_tok_s);
  }
  if (!gpu && best > 0) std::printf("kvroute / best PyTorch tokens/s: %.2fx\n", tok_s / best);
  return 0;
}

// Where an inference command runs the model: --device cpu|cuda, --precision fp32|bf16.
struct Placement {
  std::string device = "cpu", precision = "fp32";
};

void add_placement_options(CLI::App* cmd, Placement& p) {
  cmd->add_option("--device", p.device, "cpu | cuda (one GPU per rank under mpirun)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--precision", p.precision, "fp32 | bf16 (bf16 needs --device cuda)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
}

void place_model(layers::Transformer& model, const Placement& p, int local_rank) {
  KV_CHECK(p.device == "cuda" || p.precision == "fp32", "--precision {}: bf16 needs --device cuda", p.precision);
  if (p.device == "cpu") return;
  KV_CHECK(device_runtime::cuda_built(), "--device cuda: this build of kvroute has no CUDA backend");
  const int gpus = device_runtime::cuda_device_count();
  KV_CHECK(gpus > 0, "--device cuda: no CUDA device is visible to this process");
  KV_CHECK(local_rank < gpus, "--device cuda: local rank {} but this host has {} GPU(s)", local_rank, gpus);
  model.to(Device::cuda(local_rank), p.precision == "bf16" ? DType::BF16 : DType::F32);
}

struct EvalArgs {
  Placement placement;
  std::string checkpoint, data, out, strategy = "even";
  std::vector<double> retention;
  std::vector<int> groups;
  std::vector<std::string> keep;
  int64_t batch = 8, seq_len = 0, batches = 0;
};

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  KV_CHECK(out.good(), "{}: write failed", path);
}

int run_eval(EvalArgs a) {
  eval::Checkpoint ck = eval::load_for_inference(a.checkpoint);
  std::unique_ptr<train::Communicator> comm = train::make_communicator(ck.config.dist.backend);
  return on_all_ranks(*comm, [&] {
    place_model(*ck.model, a.placement, comm->local_rank());
    const int L = ck.model->num_layers();
    const std::string data = a.data.empty() ? ck.config.data.dir : a.data;
    const int64_t T = a.seq_len > 0 ? a.seq_len : ck.config.train.seq_len;
    if (a.retention.empty() && a.groups.empty() && a.keep.empty()) a.retention = {1.0, 0.75, 0.5, 0.33, 0.25};
    std::vector<eval::PlanResult> results;
    std::vector<int> sizes;
    auto add = [&](const std::vector<int>& keep, const std::string& label, const std::string& strategy) {
      results.push_back(eval::evaluate_keep_set(*ck.model, data, T, a.batch, a.batches, keep, label, strategy, *comm));
      sizes.push_back(static_cast<int>(results.back().kept.size()));
    };
    for (double r : a.retention) add(layers::keep_retention(L, r), fmt::format("retention {:g}", r), "even");
    for (int g : a.groups) add(layers::keep_every(L, g), fmt::format("groups {}", g), "even");
    for (const std::string& k : a.keep) {
      std::vector<int> layers_list;
      for (const std::string& part : CLI::detail::split(k, ',')) {
        try {
          layers_list.push_back(std::stoi(part));
        } catch (const std::exception&) {
          KV_FAIL("--keep {}: '{}' is not a layer index", k, part);
        }
      }
      add(layers_list, "keep " + k, "list");
    }
    if (a.strategy == "greedy") {
      std::vector<eval::PlanResult> greedy = eval::greedy_keep_sets(*ck.model, data, T, a.batch, a.batches, sizes, *comm);
      results.insert(results.end(), greedy.begin(), greedy.end());
    }
    if (comm->rank() != 0) return 0;
    std::printf("kvroute eval %s (%d layers, %s, %ld validation tokens)\n%s", a.checkpoint.c_str(), L, data.c_str(),
                static_cast<long>(results.empty() ? 0 : results[0].tokens), eval::format_table(results, L).c_str());
    const std::string out = a.out.empty() ? a.checkpoint : a.out;
    std::filesystem::create_directories(out);
    write_file(out + "/eval.csv", eval::format_csv(results, L));
    write_file(out + "/eval.json", eval::format_json(results, L));
    std::printf("wrote %s/eval.csv and %s/eval.json\n", out.c_str(), out.c_str());
    return 0;
  });
}

layers::RoutingPlan inference_plan(const layers::Transformer& model, double retention, int groups) {
  const int L = model.num_layers();
  std::vector<int> keep = groups > 0 ? layers::keep_every(L, groups) : layers::keep_retention(L, retention);
  return layers::plan_from_keep_set(L, eval::snap_to_kv_layers(model.config(), keep));
}

int run_generate(const std::string& checkpoint, const std::string& tokenizer_dir, const std::string& prompt,
                 double retention, int groups, const eval::SamplingOptions& options, const Placement& placement) {
  eval::Checkpoint ck = eval::load_for_inference(checkpoint);
  place_model(*ck.model, placement, 0);
  data::Tokenizer tok = data::Tokenizer::load(tokenizer_dir.empty() ? ck.config.data.tokenizer : tokenizer_dir);
  std::vector<int32_t> ids = tok.encode(prompt);
  ids.insert(ids.begin(), tok.eot_id());  // documents start with <|endoftext|> in training
  layers::RoutingPlan plan = inference_plan(*ck.model, retention, groups);
  eval::SamplingOptions o = options;
  o.stop_token = tok.eot_id();
  eval::GenerationStats stats;
  std::vector<std::vector<int32_t>> out = eval::generate(*ck.model, {ids}, plan, o, &stats);
  if (!out[0].empty() && out[0].back() == tok.eot_id()) out[0].pop_back();
  std::printf("%s%s\n", prompt.c_str(), tok.decode(out[0]).c_str());
  std::fprintf(stderr, "[plan %s: %d/%d layers cached, KV %.1f KiB, TTFT %.1f ms, %.1f tok/s]\n",
               layers::format_plan(plan).c_str(), stats.kept_layers, ck.model->num_layers(),
               static_cast<double>(stats.kv_bytes) / 1024, stats.ttft_ms, stats.decode_tokens_per_s);
  return 0;
}

int run_bench_generate(const std::string& checkpoint, const std::string& config_path, std::vector<double> retention,
                       std::vector<int64_t> prompt_lengths, std::vector<int64_t> batch_sizes, int64_t new_tokens,
                       int repeats, const Placement& placement) {
  std::unique_ptr<layers::Transformer> owned;
  const layers::Transformer* model = nullptr;
  eval::Checkpoint ck;
  if (!checkpoint.empty()) {
    ck = eval::load_for_inference(checkpoint);
    model = ck.model.get();
  } else {
    train::RunConfig c = train::load_config(config_path);
    set_num_threads(static_cast<int>(c.train.threads));
    owned = std::make_unique<layers::Transformer>(c.model, 1);
    model = owned.get();
  }
  place_model(owned ? *owned : *ck.model, placement, 0);
  const int L = model->num_layers();
  std::printf("%-10s %-6s %-7s %-6s %10s %14s %12s %12s\n", "retention", "kept", "prompt", "batch", "TTFT ms",
              "decode tok/s", "KV bytes", "peak bytes");
  for (int64_t tp : prompt_lengths) {
    for (int64_t b : batch_sizes) {
      for (double r : retention) {
        layers::RoutingPlan plan = inference_plan(*model, r, 0);
        Philox rng(7);
        std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(b), std::vector<int32_t>(static_cast<size_t>(tp)));
        for (auto& p : prompts)
          for (auto& t : p) t = static_cast<int32_t>(rng.uniform_int(model->config().vocab_size));
        eval::SamplingOptions o;
        o.temperature = 0;
        o.max_new_tokens = new_tokens;
        std::vector<eval::GenerationStats> runs(static_cast<size_t>(repeats));
        for (auto& s : runs) eval::generate(*model, prompts, plan, o, &s);
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

int main(int argc, char** argv) {
  CLI::App app{"kvroute: training with Stochastic KV Routing (R-CLA)"};
  app.require_subcommand(1);
  int threads = 0;

  auto* tokenizer = app.add_subcommand("tokenizer", "train or use a byte-level BPE tokenizer");
  tokenizer->require_subcommand(1);
  auto* train = tokenizer->add_subcommand("train", "learn a byte-level BPE in GPT-2's file format");
  std::vector<std::string> train_inputs;
  int64_t vocab = 8192;
  std::string train_out;
  train->add_option("--input", train_inputs, "text files, directories, JSONL files")->required();
  train->add_option("--vocab", vocab, "vocabulary size including <|endoftext|>")->required();
  train->add_option("--out", train_out, "output directory (encoder.json, vocab.bpe)")->required();
  add_threads_option(train, threads);
  auto* encode = tokenizer->add_subcommand("encode", "print the token ids of a text");
  std::string encode_dir, encode_text;
  encode->add_option("--tokenizer", encode_dir, "tokenizer directory")->required();
  encode->add_option("--text", encode_text, "text to encode")->required();

  auto* prep = app.add_subcommand("prepare", "tokenize documents into train/val shards");
  data::PrepareOptions prepare_options;
  prep->add_option("--input", prepare_options.inputs, "text files, directories, JSONL files")->required();
  prep->add_option("--tokenizer", prepare_options.tokenizer_dir, "tokenizer directory")->required();
  prep->add_option("--out", prepare_options.out_dir, "output directory for the shards")->required();
  prep->add_option("--val-fraction", prepare_options.val_fraction, "fraction of documents held out")
      ->check(CLI::Range(0.0, 0.999));
  prep->add_option("--shard-tokens", prepare_options.shard_tokens, "tokens per shard")->check(CLI::PositiveNumber);
  prep->add_option("--seed", prepare_options.seed, "seed of the train/val split");
  add_threads_option(prep, threads);

  auto* train_cmd = app.add_subcommand("train", "train a model from a YAML run config");
  std::string train_config, resume;
  std::vector<std::string> overrides;
  train_cmd->add_option("config", train_config, "run config (YAML)")->required();
  train_cmd->add_option("overrides", overrides, "section.key=value overrides");
  train_cmd->add_option("--resume", resume, "auto (newest checkpoint of the run) or a checkpoint directory");
  add_threads_option(train_cmd, threads);

  auto* bench = app.add_subcommand("bench", "benchmarks");
  bench->require_subcommand(1);
  auto* bench_train = bench->add_subcommand("train", "training tokens/s of a config, next to the PyTorch peer");
  std::string bench_config;
  std::vector<std::string> bench_overrides;
  int64_t bench_steps = 10;
  bool no_peer = false;
  bench_train->add_option("config", bench_config, "run config (YAML)")->required();
  bench_train->add_option("overrides", bench_overrides, "section.key=value overrides");
  bench_train->add_option("--steps", bench_steps, "timed steps (median reported)")->check(CLI::PositiveNumber);
  bench_train->add_flag("--no-peer", no_peer, "skip the PyTorch peer");
  add_threads_option(bench_train, threads);

  auto* eval_cmd = app.add_subcommand("eval", "validation loss and perplexity over cache-retention plans");
  EvalArgs eval_args;
  eval_cmd->add_option("--checkpoint", eval_args.checkpoint, "checkpoint directory")->required();
  eval_cmd->add_option("--retention", eval_args.retention, "retention fractions, e.g. 1,0.75,0.5")->delimiter(',');
  eval_cmd->add_option("--groups", eval_args.groups, "keep every g-th layer, e.g. 1,2,3,4")->delimiter(',');
  eval_cmd->add_option("--keep", eval_args.keep, "explicit keep-set, e.g. 0,3,7 (repeatable)");
  eval_cmd->add_option("--strategy", eval_args.strategy, "even | greedy (adds greedy sets of the same sizes)")
      ->check(CLI::IsMember({"even", "greedy"}));
  eval_cmd->add_option("--data", eval_args.data, "shard directory (default: the run's data.dir)");
  eval_cmd->add_option("--batch", eval_args.batch, "sequences per batch")->check(CLI::PositiveNumber);
  eval_cmd->add_option("--seq-len", eval_args.seq_len, "window length (default: the run's train.seq_len)");
  eval_cmd->add_option("--batches", eval_args.batches, "validation batches per plan (0: all)");
  eval_cmd->add_option("--out", eval_args.out, "directory for eval.csv / eval.json (default: the checkpoint)");
  add_threads_option(eval_cmd, threads);
  add_placement_options(eval_cmd, eval_args.placement);

  auto* gen = app.add_subcommand("generate", "sample text with a shared KV cache");
  std::string gen_checkpoint, gen_tokenizer, gen_prompt;
  double gen_retention = 1.0;
  int gen_groups = 0;
  eval::SamplingOptions sampling;
  gen->add_option("--checkpoint", gen_checkpoint, "checkpoint directory")->required();
  gen->add_option("--prompt", gen_prompt, "prompt text")->required();
  gen->add_option("--tokenizer", gen_tokenizer, "tokenizer directory (default: the run's data.tokenizer)");
  auto* ret_opt = gen->add_option("--retention", gen_retention, "fraction of layers keeping a KV cache")
                      ->check(CLI::Range(0.0, 1.0));
  gen->add_option("--groups", gen_groups, "keep every g-th layer's cache")->check(CLI::PositiveNumber)->excludes(ret_opt);
  gen->add_option("--temperature", sampling.temperature, "0: greedy")->check(CLI::Range(0.0, 100.0));
  gen->add_option("--top-k", sampling.top_k)->check(CLI::NonNegativeNumber);
  gen->add_option("--top-p", sampling.top_p)->check(CLI::Range(0.0, 1.0));
  gen->add_option("--max-new-tokens", sampling.max_new_tokens)->check(CLI::PositiveNumber);
  gen->add_option("--seed", sampling.seed);
  add_threads_option(gen, threads);
  Placement gen_placement;
  add_placement_options(gen, gen_placement);

  auto* bench_gen = bench->add_subcommand("generate", "TTFT, decode tok/s, KV bytes and peak bytes per retention");
  std::string bg_checkpoint, bg_config;
  std::vector<double> bg_retention = {1.0, 0.5, 0.25};
  std::vector<int64_t> bg_prompts = {64, 192}, bg_batches = {1, 4};
  int64_t bg_new = 32;
  int bg_repeats = 3;
  auto* bg_ck = bench_gen->add_option("--checkpoint", bg_checkpoint, "checkpoint directory");
  bench_gen->add_option("--config", bg_config, "run config (random weights) instead of a checkpoint")->excludes(bg_ck);
  bench_gen->add_option("--retention", bg_retention)->delimiter(',');
  bench_gen->add_option("--prompt-lengths", bg_prompts)->delimiter(',');
  bench_gen->add_option("--batch-sizes", bg_batches)->delimiter(',');
  bench_gen->add_option("--new-tokens", bg_new)->check(CLI::PositiveNumber);
  bench_gen->add_option("--repeats", bg_repeats)->check(CLI::PositiveNumber);
  add_threads_option(bench_gen, threads);
  Placement bg_placement;
  add_placement_options(bench_gen, bg_placement);

  auto* sweep = app.add_subcommand("sweep", "run a study: a grid of training runs x retention evaluations");
  std::string study_path;
  sweep->add_option("study", study_path, "study file (YAML), e.g. experiments/quickstart.yaml")->required();
  add_threads_option(sweep, threads);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (!train_cmd->parsed() && !bench_train->parsed() && !sweep->parsed()) set_num_threads(threads);
    if (train->parsed()) return run_tokenizer_train(train_inputs, vocab, train_out);
    if (encode->parsed()) return run_tokenizer_encode(encode_dir, encode_text);
    if (prep->parsed()) return run_prepare(prepare_options);
    if (train_cmd->parsed()) return run_train(train_config, overrides, resume, threads);
    if (eval_cmd->parsed()) return run_eval(eval_args);
    if (sweep->parsed()) {
      eval::Study study = eval::load_study(study_path);
      if (threads > 0) study.overrides.push_back(fmt::format("train.threads={}", threads));
      std::unique_ptr<train::Communicator> comm = train::make_communicator("auto");
      return on_all_ranks(*comm, [&] {
        eval::run_study(study, *comm);
        return 0;
      });
    }
    if (gen->parsed()) return run_generate(gen_checkpoint, gen_tokenizer, gen_prompt, gen_retention, gen_groups, sampling,
                                             gen_placement);
    if (bench_gen->parsed()) {
      KV_CHECK(!bg_checkpoint.empty() || !bg_config.empty(), "bench generate: give --checkpoint DIR or --config FILE");
      return run_bench_generate(bg_checkpoint, bg_config, bg_retention, bg_prompts, bg_batches, bg_new, bg_repeats,
                                bg_placement);
    }
    if (bench_train->parsed()) return run_bench_train(bench_config, bench_overrides, bench_steps, !no_peer, threads);
  } catch (const Error& e) {
    std::fprintf(stderr, "kvroute: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvroute: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
