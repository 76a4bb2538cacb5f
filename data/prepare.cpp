#include "data/prepare.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <omp.h>

#include "core/text.h"
#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/rng.h"
#include "data/corpus.h"
#include "data/sft.h"
#include "data/shard.h"
#include "data/tokenizer.h"

namespace kvroute::data {

namespace fs = std::filesystem;

namespace {

// Writes a token stream into PREFIX_NNNNNN.bin shards of at most shard_tokens tokens, as it comes:
// each shard is a file open in the staging directory (synced once when the directory is
// published), its header written when its count is known. Memory: one append's bytes.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string prefix, int64_t shard_tokens, int width)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), shard_tokens_(shard_tokens), width_(width) {}
  void append(const std::vector<int32_t>& tokens) {
    size_t i = 0;
    while (i < tokens.size()) {
      if (!file_.is_open()) open_shard();
      const size_t take = std::min(tokens.size() - i, static_cast<size_t>(shard_tokens_ - count_));
      bytes_.clear();
      append_shard_tokens(path_, tokens.data() + i, take, width_, bytes_);
      file_.write(bytes_);
      count_ += static_cast<int64_t>(take);
      i += take;
      if (count_ == shard_tokens_) close_shard();
    }
  }
  int64_t finish() {
    if (!file_.is_open() && shards_ == 0) open_shard();  // an empty split still has its shard
    if (file_.is_open()) close_shard();
    return shards_;
  }

 private:
  void open_shard() {
    path_ = fmt::format("{}/{}_{:06d}.bin", dir_, prefix_, shards_);
    file_ = io::OutputFile(path_, io::OutputFile::Mode::Truncate);
    file_.write(shard_header(path_, 0, width_));  // rewritten with the count at the end
    count_ = 0;
  }
  void close_shard() {
    const std::string header = shard_header(path_, count_, width_);
    file_.write_at(0, header.data(), header.size());
    file_.close(false);
    ++shards_;
  }
  std::string dir_, prefix_, path_;
  int64_t shard_tokens_;
  int width_;
  int64_t shards_ = 0, count_ = 0;
  io::OutputFile file_;
  std::string bytes_;
};

// How many of n documents (or examples) go to the val split: the fraction, rounded, but at least
// one when the fraction is > 0 and there are two or more.
int64_t val_documents(int64_t n, double val_fraction) {
  int64_t val_count = static_cast<int64_t>(std::llround(static_cast<double>(n) * val_fraction));
  if (val_fraction > 0 && val_count == 0 && n >= 2) val_count = 1;
  return val_count;
}

// Split by document: the first val_count of a seeded permutation go to val. (The permutation is
// held as 4-byte indices where they fit: the split is the one part of a streaming prepare that
// grows with the corpus, by its document count, not its text.)
std::vector<bool> val_split(int64_t n, int64_t val_count, uint64_t seed) {
  Philox rng(seed, 0x5eed);
  std::vector<bool> is_val(static_cast<size_t>(n), false);
  auto mark = [&](const auto& order) {
    for (int64_t i = 0; i < val_count; ++i) is_val[static_cast<size_t>(order[static_cast<size_t>(i)])] = true;
  };
  if (n <= int64_t{UINT32_MAX}) {
    mark(shuffled_indices<uint32_t>(n, rng));
  } else {
    mark(shuffled_indices<int64_t>(n, rng));
  }
  return is_val;
}

// --format sft: JSONL examples (data/sft.h) -> sft_train.bin, sft_val.bin, split per example.
// DIR/data.json (staged): the tokenizer, the token width and the split. `format` "text" counts
// documents; "sft" counts examples and says so first (data::read_data_info reads both).
void write_data_json(const std::string& dir, const std::string& format, const Tokenizer& tokenizer, int width,
                     int64_t n, const PrepareSummary& summary, const PrepareOptions& options) {
  const bool sft = format == "sft";
  const std::string unit = sft ? "examples" : "documents";
  nlohmann::ordered_json meta = nlohmann::ordered_json::object();
  if (sft) meta["format"] = "sft";
  meta["tokenizer"] = fs::absolute(options.tokenizer_dir).string();
  meta["vocab_size"] = tokenizer.vocab_size();
  meta["eot_id"] = tokenizer.eot_id();
  meta["token_bytes"] = width;
  meta[unit] = n;
  meta["train_" + unit] = summary.train_documents;
  meta["val_" + unit] = summary.val_documents;
  meta["train_tokens"] = summary.train_tokens;
  meta["val_tokens"] = summary.val_tokens;
  meta["seed"] = options.seed;
  meta["val_fraction"] = options.val_fraction;
  io::write_file_staged(dir + "/data.json", meta.dump(2) + "\n");
}

PrepareSummary prepare_sft(const PrepareOptions& options, const Tokenizer& tokenizer) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<SftText> texts;
  PrepareSummary summary;
  for (const std::string& input : options.inputs) {
    const std::string content = io::read_file(input);
    summary.bytes += static_cast<int64_t>(content.size());
    size_t begin = 0;
    for (int64_t line = 1; begin < content.size(); ++line) {
      size_t end = content.find('\n', begin);
      if (end == std::string::npos) end = content.size();
      const std::string text = content.substr(begin, end - begin);
      begin = end + 1;
      if (blank_line(text)) continue;
      texts.push_back(parse_sft_line(text, fmt::format("{}:{}", input, line), options.seed,
                                     static_cast<uint64_t>(texts.size())));
    }
  }
  const int64_t n = static_cast<int64_t>(texts.size());
  KV_CHECK(n > 0, "prepare: no examples in the inputs");
  const int64_t val_count = val_documents(n, options.val_fraction);
  const std::vector<bool> is_val = val_split(n, val_count, options.seed);

  std::vector<SftExample> encoded(static_cast<size_t>(n));
  std::vector<EncodeCache> caches(static_cast<size_t>(omp_get_max_threads()));
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < n; ++i) {
    EncodeCache* cache = &caches[static_cast<size_t>(omp_get_thread_num())];
    SftExample& e = encoded[static_cast<size_t>(i)];
    e.prompt.push_back(tokenizer.eot_id());
    const std::vector<int32_t> p = tokenizer.encode(texts[static_cast<size_t>(i)].prompt, cache);
    e.prompt.insert(e.prompt.end(), p.begin(), p.end());
    e.response = tokenizer.encode(texts[static_cast<size_t>(i)].response, cache);
    e.response.push_back(tokenizer.eot_id());
  }
  std::vector<SftExample> train, val;
  for (int64_t i = 0; i < n; ++i) {
    SftExample& e = encoded[static_cast<size_t>(i)];
    const int64_t tokens = static_cast<int64_t>(e.prompt.size() + e.response.size());
    if (is_val[static_cast<size_t>(i)]) {
      summary.val_tokens += tokens;
      val.push_back(std::move(e));
    } else {
      summary.train_tokens += tokens;
      train.push_back(std::move(e));
    }
  }
  summary.documents = n;
  summary.train_documents = static_cast<int64_t>(train.size());
  summary.val_documents = static_cast<int64_t>(val.size());
  KV_CHECK(!train.empty(), "prepare: every example went to the val split (--val-fraction {})", options.val_fraction);

  io::StagedDirectory staged(options.out_dir);
  const std::string& tmp = staged.path();
  {
    const int width = token_width_for_vocab(tokenizer.vocab_size());
    write_sft_file(tmp + "/sft_train.bin", train, width);
    write_sft_file(tmp + "/sft_val.bin", val, width);
    summary.train_shards = summary.val_shards = 1;
    write_data_json(tmp, "sft", tokenizer, width, n, summary, options);
    staged.publish();  // the old directory is replaced whole (checked to hold only prepared data)
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace

DataInfo read_data_info(const std::string& dir) {
  const std::string path = dir + "/data.json";
  const json::Json j = json::parse_file(path);
  KV_CHECK(j.is_object(), "{}: expected a JSON object", path);
  DataInfo info;
  info.vocab_size = json::get_int(j, "vocab_size", path, 1, int64_t{1} << 31);
  info.eot_id = json::get_int(j, "eot_id", path, 0, info.vocab_size - 1);
  info.token_bytes = static_cast<int>(json::get_int(j, "token_bytes", path, 2, 4));
  KV_CHECK(info.token_bytes == token_width_for_vocab(info.vocab_size),
           "{}: token_bytes {} does not match vocab_size {} (expected {})", path, info.token_bytes, info.vocab_size,
           token_width_for_vocab(info.vocab_size));
  if (j.contains("tokenizer")) info.tokenizer = json::get_string(j, "tokenizer", path);
  if (j.contains("format")) info.format = json::get_string(j, "format", path);
  KV_CHECK(info.format == "tokens" || info.format == "sft", "{}: format '{}' is not tokens or sft", path,
           kvroute::excerpt(info.format, 60));
  return info;
}

PrepareSummary prepare(const PrepareOptions& options) {
  KV_CHECK(options.val_fraction >= 0.0 && options.val_fraction < 1.0, "prepare: --val-fraction must be in [0, 1), got {}",
           options.val_fraction);
  KV_CHECK(options.shard_tokens > 0 && options.shard_tokens <= INT32_MAX,
           "prepare: --shard-tokens must be in [1, {}] (the shard header's count), got {}", INT32_MAX,
           options.shard_tokens);
  // Shards of an earlier run are replaced only when asked: a mistyped --out must not destroy data.
  std::error_code exists_ec;
  KV_CHECK(options.overwrite || !fs::exists(options.out_dir + "/data.json", exists_ec),
           "prepare: {} already holds prepared data (data.json); pass --overwrite to replace it, or choose another --out",
           options.out_dir);
  KV_CHECK(options.format == "text" || options.format == "sft", "prepare: --format '{}' is not text or sft",
           kvroute::excerpt(options.format, 60));
  // The output directory is replaced whole when published: it must hold nothing but prepared data.
  io::check_output_directory(options.out_dir);
  if (fs::is_directory(options.out_dir, exists_ec)) {
    for (const auto& entry : fs::directory_iterator(options.out_dir)) {
      const std::string name = entry.path().filename().string();
      const bool prepared = name == "data.json" || ((name.rfind("train_", 0) == 0 || name.rfind("val_", 0) == 0 ||
                                                     name.rfind("sft_", 0) == 0) && entry.path().extension() == ".bin");
      KV_CHECK(prepared && entry.is_regular_file(exists_ec),
               "prepare: {} holds '{}', which prepare did not write; --out must be a new directory or one holding "
               "only prepared data", options.out_dir, kvroute::excerpt(name, 100));
    }
  }
  {
    const std::string parent = io::parent_dir(fs::path(options.out_dir).lexically_normal().string());
    fs::create_directories(parent, exists_ec);
    KV_CHECK(!exists_ec, "prepare: cannot create {}: {}", parent, exists_ec.message());
  }
  const auto start = std::chrono::steady_clock::now();
  Tokenizer tokenizer = Tokenizer::load(options.tokenizer_dir);
  if (options.format == "sft") return prepare_sft(options, tokenizer);

  KV_CHECK(options.chunk_bytes > 0, "prepare: chunk_bytes must be > 0, got {}", options.chunk_bytes);
  // Pass 1: count the documents for the seeded split (lines are not parsed here, nor held).
  const int64_t n = count_documents(options.inputs);
  KV_CHECK(n > 0, "prepare: no documents in the inputs");
  const int64_t val_count = val_documents(n, options.val_fraction);
  const std::vector<bool> is_val = val_split(n, val_count, options.seed);

  // Pass 2: chunks of documents, each tokenized in parallel (one cache per thread) and written in
  // document order into a private staging directory, which is swapped into place whole at the
  // end. It is removed on any failure (a full disk included): a failed run leaves nothing behind.
  const bool show = options.progress && isatty(STDERR_FILENO);
  PrepareSummary summary;
  io::StagedDirectory staged(options.out_dir);
  const std::string& tmp = staged.path();
  const int width = token_width_for_vocab(tokenizer.vocab_size());
  ShardWriter train(tmp, "train", options.shard_tokens, width), val(tmp, "val", options.shard_tokens, width);
  const std::vector<int32_t> eot = {tokenizer.eot_id()};
  std::vector<EncodeCache> caches(static_cast<size_t>(omp_get_max_threads()));
  std::vector<std::string> chunk;
  std::vector<std::vector<int32_t>> encoded;
  int64_t chunk_bytes = 0, next = 0;  // next: the index of the chunk's first document
  auto flush = [&] {
    const int64_t m = static_cast<int64_t>(chunk.size());
    encoded.assign(static_cast<size_t>(m), {});
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t i = 0; i < m; ++i) {
      encoded[static_cast<size_t>(i)] =
          tokenizer.encode(chunk[static_cast<size_t>(i)], &caches[static_cast<size_t>(omp_get_thread_num())]);
    }
    for (int64_t i = 0; i < m; ++i, ++next) {
      const auto& tokens = encoded[static_cast<size_t>(i)];
      const bool to_val = is_val[static_cast<size_t>(next)];
      ShardWriter& writer = to_val ? val : train;
      writer.append(eot);  // llm.c convention: every document starts with <|endoftext|>
      writer.append(tokens);
      (to_val ? summary.val_documents : summary.train_documents) += 1;
      (to_val ? summary.val_tokens : summary.train_tokens) += static_cast<int64_t>(tokens.size()) + 1;
    }
    chunk.clear();
    encoded.clear();
    chunk_bytes = 0;
    // The word caches only save time: bounded, so that memory does not grow with the corpus's
    // vocabulary of distinct words (which keeps growing with its size).
    for (EncodeCache& cache : caches) {
      if (cache.size() > (1u << 20)) cache.clear();
    }
    if (show) {
      const int bar = 40;
      const int filled = static_cast<int>(bar * next / n);
      std::fprintf(stderr, "\rprepare: [%s%s] %ld/%ld documents", std::string(static_cast<size_t>(filled), '#').c_str(),
                   std::string(static_cast<size_t>(bar - filled), '.').c_str(), static_cast<long>(next),
                   static_cast<long>(n));
    }
  };
  int64_t seen = 0;
  for_each_document(
      options.inputs,
      [&](std::string_view text) {
        // The inputs changed between the passes (a file grew): the split no longer fits them.
        KV_CHECK(++seen <= n, "prepare: the inputs changed while being read ({} documents counted, more found)", n);
        chunk.emplace_back(text);
        chunk_bytes += static_cast<int64_t>(text.size());
        summary.bytes += static_cast<int64_t>(text.size());
        if (chunk_bytes >= options.chunk_bytes) flush();
      },
      options.text_key);
  if (!chunk.empty()) flush();
  if (show) std::fprintf(stderr, "\n");
  KV_CHECK(seen == n, "prepare: the inputs changed while being read ({} documents counted, {} found)", n, seen);
  summary.documents = n;
  summary.train_shards = train.finish();
  summary.val_shards = val.finish();
  write_data_json(tmp, "text", tokenizer, width, n, summary, options);
  staged.publish();  // the old directory is replaced whole (checked to hold only prepared data)
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace kvroute::data
