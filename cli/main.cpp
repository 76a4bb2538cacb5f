// The kvroute executable: one binary, subcommands (CLI11). Every failure ends in a one-line
// "kvroute: error: ..." on stderr and a non-zero exit.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>

#include "core/error.h"
#include "core/threading.h"
#include "data/corpus.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
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

int run_train(const std::string& config_path, const std::vector<std::string>& overrides, const std::string& resume,
              int64_t threads_flag) {
  std::vector<std::string> all = overrides;
  if (threads_flag > 0) all.push_back(fmt::format("train.threads={}", threads_flag));
  train::RunConfig config = train::load_config(config_path, all);
  std::unique_ptr<train::Communicator> comm = train::make_communicator(config.dist.backend);
  try {
    if (comm->rank() == 0) {
      std::printf("kvroute train: %s -> %s (%s, %d rank%s)\n", config_path.c_str(), config.run_dir().c_str(),
                  comm->name().c_str(), comm->world_size(), comm->world_size() == 1 ? "" : "s");
    }
    train::TrainResult result = train::run_training(config, *comm, {resume, 0, false});
    return result.interrupted ? 130 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvroute: error (rank %d): %s\n", comm->rank(), e.what());
    std::fflush(stderr);
    if (comm->world_size() > 1) comm->abort(1);  // bring every rank down promptly
    return 1;
  }
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
  try {
    result = train::run_training(config, *comm, {"", 0, true, true});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvroute: error (rank %d): %s\n", comm->rank(), e.what());
    if (comm->world_size() > 1) comm->abort(1);
    return 1;
  }
  if (comm->rank() != 0) return 0;
  std::vector<double> timed(result.step_seconds.begin() + warmup, result.step_seconds.end());
  const double ms = 1e3 * median(timed);
  const double tok_s = static_cast<double>(result.global_batch_tokens) / (ms * 1e-3);
  const int threads = config.train.threads > 0 ? static_cast<int>(config.train.threads) : num_threads();
  std::printf("kvroute bench train %s: %d rank%s x %d thread%s, global batch %ld tokens (B=%ld T=%ld), "
              "share_prob %.2f: %.1f ms/step, %.0f tok/s\n",
              config_path.c_str(), comm->world_size(), comm->world_size() == 1 ? "" : "s", threads,
              threads == 1 ? "" : "s", static_cast<long>(result.global_batch_tokens),
              static_cast<long>(config.train.batch_size), static_cast<long>(config.train.seq_len),
              config.router.config.policy == layers::RouterConfig::Policy::Stochastic ? config.router.config.share_prob : 0.0,
              ms, tok_s);
  if (!peer || comm->world_size() != 1) return 0;
  if (std::system("/usr/bin/python3 -c 'import torch' > /dev/null 2>&1") != 0) {
    std::printf("peer: python3-torch not installed (KVROUTE_EXTRA_PACKAGES=python3-torch scripts/setup.sh)\n");
    return 0;
  }
  const layers::ModelConfig& m = config.model;
  const std::string peer_cmd = fmt::format(
      "/usr/bin/python3 {}/bench/peer_train_step.py --threads {} --steps {} --batch {} --seq {} --share-prob {} "
      "--vocab {} --hidden {} --layers {} --heads {} --kv-heads {} --head-dim {} --ffn {}",
      KVROUTE_SOURCE_DIR, threads, steps, result.global_batch_tokens / config.train.seq_len, config.train.seq_len,
      config.router.config.policy == layers::RouterConfig::Policy::Stochastic ? config.router.config.share_prob : 0.0,
      m.vocab_size, m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim, m.intermediate_size);
  double best = 0;
  for (const char* env : {"", "OMP_WAIT_POLICY=PASSIVE "}) {
    std::string line = last_line_of(std::string(env) + peer_cmd);
    std::printf("%s%s\n", line.empty() ? "peer failed: " : "", line.empty() ? peer_cmd.c_str() : line.c_str());
    best = std::max(best, tokens_per_second_of(line));
  }
  if (best > 0) std::printf("kvroute / best PyTorch tokens/s: %.2fx\n", tok_s / best);
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    if (!train_cmd->parsed() && !bench_train->parsed()) set_num_threads(threads);
    if (train->parsed()) return run_tokenizer_train(train_inputs, vocab, train_out);
    if (encode->parsed()) return run_tokenizer_encode(encode_dir, encode_text);
    if (prep->parsed()) return run_prepare(prepare_options);
    if (train_cmd->parsed()) return run_train(train_config, overrides, resume, threads);
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
