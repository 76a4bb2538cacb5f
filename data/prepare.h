// `kvroute prepare`: documents -> tokens -> train/val shards. Documents are split into train and
// val by a seeded draw, encoded in parallel, each preceded by <|endoftext|>, and written as
// llm.c shards. The output is a pure function of (inputs, tokenizer, options).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvroute::data {

struct PrepareOptions {
  std::vector<std::string> inputs;
  std::string tokenizer_dir;
  std::string out_dir;
  double val_fraction = 0.005;
  int64_t shard_tokens = 100'000'000;
  uint64_t seed = 1337;
  bool progress = true;
  bool overwrite = false;  // replace the shards of an earlier run in out_dir (else: an error)
  std::string format = "text";  // text: documents -> token shards; sft: JSONL examples -> sft_*.bin (data/sft.h)
  std::string text_key = "text";  // the JSONL field that holds a document's text (--format text)
  // --format text streams: documents are read, tokenized (all threads) and written in chunks of
  // about this many bytes of text, so memory does not grow with the corpus. Any value gives the
  // same shards.
  int64_t chunk_bytes = int64_t{64} << 20;
};

// A prepared directory's data.json: what the shards were made with. Validated (types, ranges,
// eot_id < vocab_size, token width = the vocabulary's); errors name the file.
struct DataInfo {
  std::string format = "tokens";  // tokens (llm.c shards) | sft (sft_train.bin, sft_val.bin)
  std::string tokenizer;
  int64_t vocab_size = 0;
  int64_t eot_id = 0;
  int token_bytes = 2;
};
DataInfo read_data_info(const std::string& dir);

struct PrepareSummary {
  int64_t documents = 0, train_documents = 0, val_documents = 0;  // sft: examples
  int64_t train_tokens = 0, val_tokens = 0, bytes = 0;
  int64_t train_shards = 0, val_shards = 0;
  double seconds = 0;
};

PrepareSummary prepare(const PrepareOptions& options);

}  // namespace kvroute::data
