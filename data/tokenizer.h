// Byte-level BPE tokenizer in GPT-2's file format (encoder.json + vocab.bpe): GPT-2's own files
// load and give GPT-2's ids; `train_bpe` learns a new vocabulary in the same format. Text is split
// by GPT-2's pre-tokenisation pattern (PCRE2, UTF + UCP); bytes the pattern cannot match (invalid
// UTF-8) become pre-tokens of their own, so encode/decode round-trips any byte string exactly.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace kvroute::data {

inline constexpr const char* kEndOfText = "<|endoftext|>";

// Splits text into GPT-2 pre-tokens. Thread-safe.
class PreTokenizer {
 public:
  PreTokenizer();
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;
  // Calls fn(piece) for each pre-token, in order; the pieces concatenate to `text`.
  void split(std::string_view text, const std::function<void(std::string_view)>& fn) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Per-thread memo of word -> ids; pass one to encode() to speed up large corpora.
using EncodeCache = std::unordered_map<std::string, std::vector<int32_t>>;

class Tokenizer {
 public:
  // Loads DIR/encoder.json and DIR/vocab.bpe; errors name the file (and line) that is wrong.
  static Tokenizer load(const std::string& dir);
  // Writes DIR/encoder.json and DIR/vocab.bpe (DIR is created).
  void save(const std::string& dir) const;

  std::vector<int32_t> encode(std::string_view text, EncodeCache* cache = nullptr) const;
  std::string decode(const std::vector<int32_t>& ids) const;  // ids must be < vocab_size()
  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  int32_t eot_id() const { return eot_id_; }
  size_t num_merges() const { return merges_.size(); }

  // Learns a byte-level BPE with `vocab_size` tokens (256 bytes + merges + <|endoftext|>) from the
  // texts `for_each_text` produces (called once; it calls its argument for each text). Ties
  // between equally frequent pairs break towards the smaller token ids, so training is
  // deterministic. Stops early (smaller vocabulary) when no pair occurs twice.
  static Tokenizer train(const std::function<void(const std::function<void(std::string_view)>&)>& for_each_text,
                         int64_t vocab_size, const std::function<void(int64_t, int64_t)>& progress = {});

 private:
  void build_tables();
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::vector<std::string> tokens_;                       // id -> raw bytes
  std::vector<std::pair<int32_t, int32_t>> merges_;       // rank -> (left id, right id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_table_;  // (l, r) -> (rank, merged id)
  int32_t byte_ids_[256] = {};
  int32_t eot_id_ = -1;
  std::shared_ptr<PreTokenizer> pretokenizer_;
};

// Inverse of GPT-2's reversible byte -> printable-unicode map over a whole string; false if a
// character is not in the map.
bool unicode_to_bytes(std::string_view text, std::string& out);

}  // namespace kvroute::data
