// `kvroute prepare`: tokenize documents into llm.c-format train/val shards.
#include <algorithm>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/threading.h"
#include "data/prepare.h"

namespace kvroute::cli {

namespace {

struct Args {
  data::PrepareOptions options;
  int threads = 0;
};

int run(const Args& a) {
  set_num_threads(a.threads);
  data::PrepareSummary s = data::prepare(a.options);
  const int64_t tokens = s.train_tokens + s.val_tokens;
  std::printf("prepare: %ld %s (%ld train, %ld val), %ld tokens (%ld train in %ld shards, %ld val in %ld), "
              "%.1f MB text, %.2f bytes/token, %.1f s (%.1f MB/s) -> %s\n",
              static_cast<long>(s.documents), a.options.format == "sft" ? "examples" : "documents", static_cast<long>(s.train_documents), static_cast<long>(s.val_documents),
              static_cast<long>(tokens), static_cast<long>(s.train_tokens), static_cast<long>(s.train_shards),
              static_cast<long>(s.val_tokens), static_cast<long>(s.val_shards), static_cast<double>(s.bytes) / 1e6,
              static_cast<double>(s.bytes) / static_cast<double>(std::max<int64_t>(tokens, 1)), s.seconds,
              static_cast<double>(s.bytes) / 1e6 / s.seconds, a.options.out_dir.c_str());
  return 0;
}

}  // namespace

void add_prepare_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  data::PrepareOptions& o = args->options;
  auto* cmd = app.add_subcommand("prepare", "tokenize documents into train/val shards");
  cmd->add_option("--input", o.inputs,
                  "text files, directories, JSONL files, each also .gz or .zst (--format sft: JSONL files)")
      ->required()
      ->check(existing_path());
  cmd->add_option("--text-key", o.text_key, "the JSONL field holding a document's text (default text)")
      ->check(non_empty());
  cmd->add_option("--tokenizer", o.tokenizer_dir, "tokenizer directory")->required();
  cmd->add_option("--out", o.out_dir, "output directory for the shards")->required()->check(non_empty());
  cmd->add_option("--val-fraction", o.val_fraction, "fraction of documents held out")->check(bounded(0.0, 0.999));
  cmd->add_option("--shard-tokens", o.shard_tokens, "tokens per shard")->check(bounded(1, 2147483647));
  cmd->add_option("--seed", o.seed, "seed of the train/val split")->check(bounded(0, 9.2e18));
  cmd->add_flag("--overwrite", o.overwrite, "replace the prepared data already in --out");
  cmd->add_option("--format", o.format,
                  "text (documents -> token shards, default) or sft (JSONL prompt/response or "
                  "context/question/answer -> supervised examples, docs/formats.md)")
      ->check(CLI::IsMember({"text", "sft"}));
  add_threads_option(cmd, args->threads);
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace kvroute::cli
