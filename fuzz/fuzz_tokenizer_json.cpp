// Fuzzes kvroute::data::Tokenizer::load on a Hugging Face tokenizer.json. The input is split at its
// first NUL byte into tokenizer.json (before) and tokenizer_config.json (after; no NUL: no such
// file). A tokenizer that loads must be a byte-level BPE whose end-of-text token is a token, whose
// encode gives only ids decode accepts, and, without a normalizer, must round-trip
// decode(encode(text)) == text for any bytes (tokenizer.h). Loading fails only with a
// kvroute::Error; anything else (crash, sanitizer report, other exception, hang) is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "core/error.h"
#include "data/tokenizer.h"
#include "fuzz/fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static kvroute::fuzz::TempDir dir;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view file = input.substr(0, nul);
  dir.write("tokenizer.json", file);
  const std::string config = dir.path() + "/tokenizer_config.json";
  if (nul == std::string_view::npos) {
    ::unlink(config.c_str());
  } else {
    dir.write("tokenizer_config.json", input.substr(nul + 1));
  }
  kvroute::data::Tokenizer tok;
  try {
    tok = kvroute::data::Tokenizer::load(dir.path());
  } catch (const kvroute::Error& e) {
    kvroute::fuzz::rejected(e);
    return 0;
  }
  // 256 byte tokens at least; ids below 2^24; the end-of-text token is a token.
  if (tok.format() != "hf" || tok.vocab_size() < 256 || tok.vocab_size() > kvroute::data::kMaxTokenId + 1 ||
      !tok.is_token(tok.eot_id())) {
    __builtin_trap();
  }
  // Some text, valid and invalid UTF-8, plus the input's own bytes (which hold the tokens' spellings).
  std::string text = "Hello world, it's 2024!  \t\n\xff\xfe caf\xc3\xa9 e\xcc\x81 \xe2\x82 <|endoftext|>";
  text.append(input.substr(0, 512));
  const std::vector<int32_t> ids = tok.encode(text);
  for (int32_t id : ids) {
    if (!tok.is_token(id)) {
      std::fprintf(stderr, "fuzz_tokenizer_json: encode produced %d, not a token\n", id);
      __builtin_trap();
    }
  }
  std::string back;
  try {
    back = tok.decode(ids);
  } catch (const kvroute::Error& e) {
    std::fprintf(stderr, "fuzz_tokenizer_json: encode produced an id decode rejects: %s\n", e.what());
    __builtin_trap();
  }
  // Exact round trip unless the file asks for NFC (valid UTF-8 then comes back normalised). The file
  // loaded, so it is JSON no deeper than the loader allows.
  const nlohmann::json j = nlohmann::json::parse(file, nullptr, false);
  const bool normalizer = j.is_object() && j.contains("normalizer") && !j["normalizer"].is_null();
  if (!normalizer && back != text) {
    std::fprintf(stderr, "fuzz_tokenizer_json: decode(encode(text)) != text (%zu vs %zu bytes)\n", back.size(),
                 text.size());
    __builtin_trap();
  }
  return 0;
}
