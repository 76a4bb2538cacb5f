// Byte-level BPE tokenizer. Two file formats load: GPT-2's (encoder.json + vocab.bpe), which
// `train` also writes, and a Hugging Face tokenizer.json of the byte-level BPE kind that GPT-2,
// Llama 3 and Qwen2/Qwen3 ship (docs/formats.md lists what is supported and what is refused).
// Text is split by the pre-tokenisation pattern(s) (PCRE2, UTF + UCP); bytes a pattern cannot match
// (invalid UTF-8) become pre-tokens of their own, so encode/decode round-trips any byte string
// exactly (unless the tokenizer.json asks for NFC: then valid UTF-8 comes back NFC-normalised).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/text.h"

namespace kvroute::data {

inline constexpr const char* kEndOfText = "<|endoftext|>";
// Per-thread memo of word -> ids; pass one to encode() to speed up large corpora.
using EncodeCache = std::unordered_map<std::string, std::vector<int32_t>>;

// Ids are bounded: every id of a loaded tokenizer is below 2^24.
inline constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

class Tokenizer {
 public:
  // Loads DIR/tokenizer.json (a Hugging Face tokenizer; DIR/tokenizer_config.json, if present,
  // names the end-of-text token as "eos_token") when it exists, else DIR/encoder.json and
  // DIR/vocab.bpe. Errors name the file and the key (or line) that is wrong.
  static Tokenizer load(const std::string& dir);
  // Writes DIR/encoder.json and DIR/vocab.bpe (DIR is created). GPT-2 format only: a tokenizer
  // loaded from a tokenizer.json is refused (copy files() instead).
  void save(const std::string& dir) const;

  // Hugging Face tokenizer.json: added tokens in the text are matched first (longest first) and
  // give their ids; the rest is normalised, split and merged. That is Hugging Face's
  // encode(text, add_special_tokens=False): no BOS/EOS is added, no truncation or padding.
  std::vector<int32_t> encode(std::string_view text, EncodeCache* cache = nullptr) const;
  // Every id must be a token: below vocab_size() and not a hole (an id no token uses).
  std::string decode(const std::vector<int32_t>& ids) const;
  // Largest id + 1; a tokenizer.json may leave ids unused (holes), which decode refuses.
  int64_t vocab_size() const { return static_cast<int64_t>(tokens_.size()); }
  // Whether `id` is a token (in range and not a hole), i.e. decode accepts it.
  bool is_token(int64_t id) const { return id >= 0 && id < vocab_size() && is_token_[static_cast<size_t>(id)]; }
  int32_t eot_id() const { return eot_id_; }
  size_t num_merges() const { return merges_.size(); }
  // "gpt2" (encoder.json + vocab.bpe, or trained) or "hf" (tokenizer.json).
  const std::string& format() const { return format_; }
  // The files it was loaded from (paths as given to load; empty for a trained tokenizer):
  // DIR/encoder.json and DIR/vocab.bpe, or DIR/tokenizer.json [+ DIR/tokenizer_config.json].
  const std::vector<std::string>& files() const { return files_; }

  // Learns a byte-level BPE with `vocab_size` tokens (256 bytes + merges + <|endoftext|>) from the
  // texts `for_each_text` produces (called once; it calls its argument for each text). Ties
  // between equally frequent pairs break towards the smaller token ids, so training is
  // deterministic. Stops early (smaller vocabulary) when no pair occurs twice.
  static Tokenizer train(const std::function<void(const std::function<void(std::string_view)>&)>& for_each_text,
                         int64_t vocab_size, const std::function<void(int64_t, int64_t)>& progress = {});

 private:
  struct AddedTokens;  // a byte trie over added tokens' contents
  static Tokenizer load_hf(const std::string& dir);
  void build_tables();
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;       // GPT-2: merge all occurrences
  void encode_word_hf(std::string_view word, std::vector<int32_t>& out) const;    // Hugging Face: one merge at a time
  void encode_piece(std::string_view piece, EncodeCache* cache, std::vector<int32_t>& out) const;
  void encode_plain(std::string_view text, EncodeCache* cache, std::vector<int32_t>& out) const;

  std::string format_ = "gpt2";
  std::vector<std::string> files_;
  std::vector<std::string> tokens_;                       // id -> raw bytes ("" for a hole)
  std::vector<bool> is_token_;                            // id -> used (false: a hole)
  std::vector<std::pair<int32_t, int32_t>> merges_;       // rank -> (left id, right id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_table_;  // (l, r) -> (rank, merged id)
  int32_t byte_ids_[256] = {};
  int32_t eot_id_ = -1;
  std::vector<std::shared_ptr<const PreTokenizer>> pretokenizers_;  // applied in turn to each piece
  // tokenizer.json only:
  bool hf_merges_ = false;                                // one merge at a time (Hugging Face's order)
  bool ignore_merges_ = false;                            // a piece that is a token is emitted whole
  bool nfc_ = false;                                      // NFC before splitting (valid UTF-8 only)
  std::shared_ptr<const std::unordered_map<std::string, int32_t>> vocab_ids_;  // raw bytes -> id (model.vocab)
  std::shared_ptr<const AddedTokens> added_raw_;          // matched on the text as given ("normalized": false)
  std::shared_ptr<const AddedTokens> added_normalized_;   // matched after NFC ("normalized": true)
};

}  // namespace kvroute::data
