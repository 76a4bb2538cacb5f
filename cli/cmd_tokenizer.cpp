// `kvroute tokenizer train | encode | decode`: learn a byte-level BPE in GPT-2's file format, print
// the token ids of a text, or the text of token ids (encode's output reads back).
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "core/text.h"
#include "core/threading.h"
#include "data/corpus.h"
#include "data/tokenizer.h"

namespace kvroute::cli {

namespace {

struct TrainArgs {
  std::vector<std::string> inputs;
  int64_t vocab = 8192;
  std::string out;
  bool overwrite = false;
  int threads = 0;
};

int run_train(const TrainArgs& a) {
  // Shards prepared with the tokenizer already in --out would silently stop matching it.
  std::error_code ec;
  KV_CHECK(a.overwrite || !std::filesystem::exists(a.out + "/encoder.json", ec),
           "tokenizer train: {} already holds a tokenizer (encoder.json); pass --overwrite to replace it, or choose "
           "another --out", a.out);
  set_num_threads(a.threads);
  const auto start = std::chrono::steady_clock::now();
  const bool tty = isatty(STDERR_FILENO);
  int64_t documents = 0, bytes = 0;
  data::Tokenizer tok = data::Tokenizer::train(
      [&](const std::function<void(std::string_view)>& emit) {
        data::for_each_document(a.inputs, [&](std::string_view text) {
          ++documents;
          bytes += static_cast<int64_t>(text.size());
          emit(text);
        });
      },
      a.vocab,
      [&](int64_t merges, int64_t target) {
        if (tty) std::fprintf(stderr, "\rtokenizer train: %ld/%ld merges", static_cast<long>(merges), static_cast<long>(target));
      });
  if (tty) std::fprintf(stderr, "\n");
  tok.save(a.out);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("tokenizer train: %ld documents, %.1f MB, vocab %ld (%zu merges) -> %s in %.1f s\n",
              static_cast<long>(documents), static_cast<double>(bytes) / 1e6, static_cast<long>(tok.vocab_size()),
              tok.num_merges(), a.out.c_str(), seconds);
  if (tok.vocab_size() < a.vocab) {
    std::printf("tokenizer train: note: the corpus supports only %ld tokens (no pair occurs twice beyond that)\n",
                static_cast<long>(tok.vocab_size()));
  }
  return 0;
}

struct EncodeArgs {
  std::string dir, text;
};

int run_encode(const EncodeArgs& a) {
  data::Tokenizer tok = data::Tokenizer::load(a.dir);
  std::vector<int32_t> ids = tok.encode(a.text);
  std::printf("%s\n", fmt::format("{}", fmt::join(ids, " ")).c_str());
  return 0;
}

struct DecodeArgs {
  std::string dir, ids;
};

// The items of "12 34 56" or "12,34,56" (what encode prints, or a list): separators are spaces,
// commas, tabs and newlines; empty items are skipped.
std::vector<std::string> id_items(const std::string& text) {
  std::vector<std::string> items(1);
  for (char c : text) {
    if (c == ' ' || c == ',' || c == '\n' || c == '\t') {
      if (!items.back().empty()) items.emplace_back();
    } else {
      items.back() += c;
    }
  }
  if (items.back().empty()) items.pop_back();
  return items;
}

// Each item a whole number in [0, 2^31).
CLI::Validator id_list() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::vector<std::string> items = id_items(text);
        for (const std::string& item : items)
          if (item.size() > 10 || !std::all_of(item.begin(), item.end(), ::isdigit) || std::stoll(item) > INT32_MAX)
            return fmt::format("'{}' is not a token id", excerpt(item));
        return items.empty() ? "no token ids" : "";
      },
      "IDS (e.g. '464 3290')");
}

int run_decode(const DecodeArgs& a) {
  data::Tokenizer tok = data::Tokenizer::load(a.dir);
  std::vector<int32_t> ids;
  for (const std::string& item : id_items(a.ids)) ids.push_back(static_cast<int32_t>(std::stol(item)));
  for (int32_t id : ids)
    KV_CHECK(tok.is_token(id), "--ids: {} is not a token of {} (vocabulary {})", id, a.dir, tok.vocab_size());
  const std::string text = tok.decode(ids);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
  return 0;
}

}  // namespace

void add_tokenizer_command(CLI::App& app, int& exit_code) {
  auto* tokenizer = app.add_subcommand("tokenizer", "train or use a byte-level BPE tokenizer");
  tokenizer->require_subcommand(1);

  auto train_args = std::make_shared<TrainArgs>();
  auto* train = tokenizer->add_subcommand("train", "learn a byte-level BPE in GPT-2's file format");
  train->add_option("--input", train_args->inputs, "text files, directories, JSONL files")->required()->check(existing_path());
  train->add_option("--vocab", train_args->vocab, "vocabulary size including <|endoftext|>")->required()->check(bounded(257, 1 << 24));
  train->add_option("--out", train_args->out, "output directory (encoder.json, vocab.bpe)")->required()->check(non_empty());
  train->add_flag("--overwrite", train_args->overwrite, "replace the tokenizer already in --out");
  add_threads_option(train, train_args->threads);
  train->callback([train_args, &exit_code] { exit_code = run_train(*train_args); });

  auto encode_args = std::make_shared<EncodeArgs>();
  auto* encode = tokenizer->add_subcommand("encode", "print the token ids of a text");
  encode->add_option("--tokenizer", encode_args->dir, "tokenizer directory")->required();
  encode->add_option("--text", encode_args->text, "text to encode")->required();
  encode->callback([encode_args, &exit_code] { exit_code = run_encode(*encode_args); });

  auto decode_args = std::make_shared<DecodeArgs>();
  auto* decode = tokenizer->add_subcommand("decode", "print the text of token ids (the inverse of encode)");
  decode->add_option("--tokenizer", decode_args->dir, "tokenizer directory")->required();
  decode->add_option("--ids", decode_args->ids, "token ids, space- or comma-separated (encode's output)")
      ->required()
      ->check(id_list());
  decode->callback([decode_args, &exit_code] { exit_code = run_decode(*decode_args); });
}

}  // namespace kvroute::cli
