// Text handling shared by the tokenizers: the PCRE2 pre-tokenizer (with Unicode 16.0's letter,
// number and space classes, as Hugging Face's tokenizers have them) and GPT-2's reversible byte ->
// printable-unicode map.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace kvroute::data {

// GPT-2's pre-tokenisation pattern (also Hugging Face's ByteLevel pre-tokenizer with use_regex).
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// `pattern` with \p{L}, \p{N}, \s and \S spelled as Unicode 16.0's classes (Hugging Face's
// tokenizers), which PCRE2 10.42's Unicode 14 tables are not: 16.0's added letters and digits, and
// White_Space without U+180E. Every PreTokenizer compiles the rewritten pattern.
std::string unicode16_pattern(std::string_view pattern);

// Splits text into pre-tokens by one pattern: every match is a piece, and so is every stretch of
// text between matches (Hugging Face's Split with behavior "Isolated"). Thread-safe.
class PreTokenizer {
 public:
  // Compiles `pattern` with PCRE2 (UTF, UCP); a pattern PCRE2 refuses is an error that starts with
  // `what` (a file and key) and gives PCRE2's message and the offset.
  explicit PreTokenizer(std::string_view pattern = kGpt2Pattern, std::string_view what = "tokenizer: pattern");
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;
  // Calls fn(piece) for each pre-token, in order; the pieces concatenate to `text`.
  void split(std::string_view text, const std::function<void(std::string_view)>& fn) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Inverse of GPT-2's reversible byte -> printable-unicode map over a whole string; false if a
// character is not in the map.
bool unicode_to_bytes(std::string_view text, std::string& out);

}  // namespace kvroute::data
