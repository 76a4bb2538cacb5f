// Fuzzes kvroute::data::Tokenizer::load. The input is split at its first NUL byte into encoder.json
// (before) and vocab.bpe (after; no NUL: an empty merges file). A tokenizer that loads must encode
// and decode: decode(encode(text)) == text for any bytes (tokenizer.h). Loading fails only with a
// kvroute::Error; anything else (crash, sanitizer report, other exception, hang) is a bug.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "core/error.h"
#include "data/tokenizer.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kvroute::fuzz::TempDir dir;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  dir.write("encoder.json", input.substr(0, nul));
  dir.write("vocab.bpe", nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1));
  kvroute::data::Tokenizer tok;
  try {
    tok = kvroute::data::Tokenizer::load(dir.path());
  } catch (const kvroute::Error& e) {
    kvroute::fuzz::rejected(e);
    return 0;
  }
  if (tok.vocab_size() < 257 || tok.eot_id() < 0 || tok.eot_id() >= tok.vocab_size()) __builtin_trap();
  // Some text, valid and invalid UTF-8, plus the input's own bytes (which hold the tokens' spellings).
  std::string text = "Hello world, it's 2024!  \t\n\xff\xfe caf\xc3\xa9 \xe2\x82";
  text.append(input.substr(0, 512));
  const std::vector<int32_t> ids = tok.encode(text);
  std::string back;
  try {
    back = tok.decode(ids);
  } catch (const kvroute::Error& e) {
    std::fprintf(stderr, "fuzz_tokenizer: encode produced an id decode rejects: %s\n", e.what());
    __builtin_trap();
  }
  if (back != text) {
    std::fprintf(stderr, "fuzz_tokenizer: decode(encode(text)) != text (%zu vs %zu bytes)\n", back.size(), text.size());
    __builtin_trap();
  }
  return 0;
}
