#include "data/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utypes.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <queue>
#include <sstream>
#include <unordered_set>

#include <omp.h>

#include "core/text.h"
#include "core/error.h"
#include "core/io.h"
#include "core/json.h"

namespace kvroute::data {

// ---- GPT-2 byte <-> unicode map --------------------------------------------------------------------

namespace {

std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

struct ByteMap {
  std::string byte_to_str[256];
  int cp_to_byte[512];
  uint8_t order[256];  // GPT-2's id order of the single-byte tokens
  ByteMap() {
    std::fill(std::begin(cp_to_byte), std::end(cp_to_byte), -1);
    std::vector<int> bs;
    for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
    for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
    for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
    std::vector<int> cs = bs;
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      if (std::find(bs.begin(), bs.end(), b) == bs.end()) {
        bs.push_back(b);
        cs.push_back(256 + n++);
      }
    }
    for (size_t i = 0; i < bs.size(); ++i) {
      byte_to_str[bs[i]] = utf8_encode(static_cast<uint32_t>(cs[i]));
      cp_to_byte[cs[i]] = bs[i];
      order[i] = static_cast<uint8_t>(bs[i]);
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

std::string to_unicode(const std::string& raw) {
  std::string out;
  for (unsigned char c : raw) out += byte_map().byte_to_str[c];
  return out;
}

uint64_t pair_key(int32_t a, int32_t b) { return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b); }

}  // namespace


bool unicode_to_bytes(std::string_view text, std::string& out) {
  out.clear();
  for (size_t i = 0; i < text.size();) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    uint32_t cp;
    size_t len;
    if (c < 0x80) {
      cp = c, len = 1;
    } else if ((c & 0xE0) == 0xC0 && i + 1 < text.size()) {
      cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3Fu), len = 2;
    } else {
      return false;  // the map only uses code points below 0x800
    }
    if (cp >= 512 || byte_map().cp_to_byte[cp] < 0) return false;
    out += static_cast<char>(byte_map().cp_to_byte[cp]);
    i += len;
  }
  return true;
}

// ---- Pre-tokeniser -----------------------------------------------------------------------------------

struct PreTokenizer::Impl {
  pcre2_code* code = nullptr;
};

namespace {

// Unicode 16.0, the version of Hugging Face's tokenizers (Oniguruma 6.9.10), against PCRE2 10.42's
// Unicode 14 tables: the code points 16.0 adds to \p{L} (9,272) and \p{N} (120), as ranges; every
// PCRE2 letter and number is still one (tests/data/unicode_cases.json, generated from the Rust
// library by tests/data/make_unicode_cases.js, checks the result).
constexpr std::string_view kLetters16 =
    "\\x{1c89}-\\x{1c8a}\\x{a7cb}-\\x{a7cd}\\x{a7da}-\\x{a7dc}\\x{105c0}-\\x{105f3}\\x{10d4a}-\\x{10d65}"
    "\\x{10d6f}-\\x{10d85}\\x{10ec2}-\\x{10ec4}\\x{1123f}-\\x{11240}\\x{11380}-\\x{11389}\\x{1138b}\\x{1138e}"
    "\\x{11390}-\\x{113b5}\\x{113b7}\\x{113d1}\\x{113d3}\\x{11bc0}-\\x{11be0}\\x{11f02}\\x{11f04}-\\x{11f10}"
    "\\x{11f12}-\\x{11f33}\\x{1342f}\\x{13441}-\\x{13446}\\x{13460}-\\x{143fa}\\x{16100}-\\x{1611d}"
    "\\x{16d40}-\\x{16d6c}\\x{18cff}\\x{1b132}\\x{1b155}\\x{1df25}-\\x{1df2a}\\x{1e030}-\\x{1e06d}"
    "\\x{1e4d0}-\\x{1e4eb}\\x{1e5d0}-\\x{1e5ed}\\x{1e5f0}\\x{2b739}\\x{2ebf0}-\\x{2ee5d}\\x{31350}-\\x{323af}";
constexpr std::string_view kNumbers16 =
    "\\x{10d40}-\\x{10d49}\\x{116d0}-\\x{116e3}\\x{11bf0}-\\x{11bf9}\\x{11f50}-\\x{11f59}\\x{16130}-\\x{16139}"
    "\\x{16d70}-\\x{16d79}\\x{1ccf0}-\\x{1ccf9}\\x{1d2c0}-\\x{1d2d3}\\x{1e4f0}-\\x{1e4f9}\\x{1e5f1}-\\x{1e5fa}";
// Unicode White_Space (25 code points): PCRE2's \s with UCP also takes U+180E, Hugging Face's not.
constexpr std::string_view kWhiteSpace =
    "\\t-\\r\\x{20}\\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}";

}  // namespace

std::string unicode16_pattern(std::string_view pattern) {
  // Rewrites \p{L}, \p{N}, \s and \S (outside a class: \S only) so the classes are Unicode 16.0's;
  // escapes are copied as they are, and the position inside or outside a [...] class is tracked.
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const std::string_view rest = pattern.substr(i);
      auto add_class = [&](std::string_view original, std::string_view extra) {
        out += in_class ? std::string(original) + std::string(extra)
                        : "[" + std::string(original) + std::string(extra) + "]";
      };
      if (rest.starts_with("\\p{L}")) {
        add_class("\\p{L}", kLetters16);
        i += 4;
      } else if (rest.starts_with("\\p{N}")) {
        add_class("\\p{N}", kNumbers16);
        i += 4;
      } else if (rest.starts_with("\\s")) {
        out += in_class ? std::string(kWhiteSpace) : "[" + std::string(kWhiteSpace) + "]";
        i += 1;
      } else if (rest.starts_with("\\S") && !in_class) {
        out += "[^" + std::string(kWhiteSpace) + "]";
        i += 1;
      } else {
        out += pattern.substr(i, 2);
        i += 1;
      }
      continue;
    }
    if (c == '[' && !in_class) {
      in_class = true;
      out += c;
      // A ']' or '^]' right after the opening bracket is a literal, not the end of the class.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (c == ']' && in_class) in_class = false;
    out += c;
  }
  return out;
}

PreTokenizer::PreTokenizer(std::string_view pattern_as_given, std::string_view what)
    : impl_(std::make_unique<Impl>()) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  const std::string rewritten = unicode16_pattern(pattern_as_given);
  const std::string_view pattern = rewritten;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  if (impl_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    KV_FAIL("{}: PCRE2 cannot compile the pattern {}: {} (at offset {})", what, json::excerpt(std::string(pattern)),
            reinterpret_cast<const char*>(message), offset);
  }
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
}

PreTokenizer::~PreTokenizer() { pcre2_code_free(impl_->code); }

namespace {

// Length of the well-formed UTF-8 character at s[i] (1-4), or 0 when the bytes there are not one
// (a stray continuation byte, a truncated or overlong form, a surrogate, beyond U+10FFFF).
size_t utf8_char_len(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  const size_t n = s.size() - i;
  if (c >= 0xC2 && c <= 0xDF) return n >= 2 && (b(i + 1) & 0xC0) == 0x80 ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (n < 3 || (b(i + 1) & 0xC0) != 0x80 || (b(i + 2) & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && b(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(i + 1) >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (n < 4 || (b(i + 1) & 0xC0) != 0x80 || (b(i + 2) & 0xC0) != 0x80 || (b(i + 3) & 0xC0) != 0x80) return 0;
    if (c == 0xF0 && b(i + 1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(i + 1) >= 0x90) return 0;  // beyond U+10FFFF
    return 4;
  }
  return 0;
}

}  // namespace

void PreTokenizer::split(std::string_view text, const std::function<void(std::string_view)>& fn) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t piece = 0;   // start of the text not yet handed out
  size_t search = 0;  // where the next match may start
  while (search < text.size()) {
    int rc = pcre2_match(impl_->code, subject, text.size(), search, 0, md, nullptr);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {  // a JIT stack or match limit: the interpreter, once
      rc = pcre2_match(impl_->code, subject, text.size(), search, PCRE2_NO_JIT, md, nullptr);
    }
    if (rc < 0) break;  // no further match: the rest is one piece
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    // (\K can put a match's start after its end; the clamps keep every byte in exactly one piece.)
    const size_t start = std::max<size_t>(ov[0], piece), end = std::min<size_t>(ov[1], text.size());
    if (end <= start) {  // an empty match splits nothing: look again one character further
      const size_t step = start < text.size() ? std::max<size_t>(1, utf8_char_len(text, start)) : 1;
      search = start + step;
      continue;
    }
    if (start > piece) fn(text.substr(piece, start - piece));  // unmatched text: a piece of its own
    fn(text.substr(start, end - start));
    piece = search = end;
  }
  if (piece < text.size()) fn(text.substr(piece));
  pcre2_match_data_free(md);
}

// ---- NFC (ICU) -------------------------------------------------------------------------------------------

namespace {

// Appends the NFC form of `text` (well-formed UTF-8) to `out`.
void nfc_append(std::string_view text, std::string& out) {
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* nfc = unorm2_getNFCInstance(&status);
  KV_CHECK(U_SUCCESS(status), "tokenizer: ICU has no NFC normaliser: {}", u_errorName(status));
  // ICU works on UTF-16 with int32_t lengths: convert in chunks that end between two ASCII
  // characters (a normalisation boundary: no ASCII character composes with the next one).
  constexpr size_t kChunk = size_t{1} << 20;
  std::vector<UChar> utf16, normalized;
  while (!text.empty()) {
    size_t len = text.size();
    if (len > kChunk) {
      len = kChunk;
      while (len < text.size() && !(static_cast<unsigned char>(text[len - 1]) < 0x80 &&
                                    static_cast<unsigned char>(text[len]) < 0x80)) {
        ++len;
      }
      KV_CHECK(len <= (size_t{1} << 28), "tokenizer: NFC: {} bytes of text without two ASCII characters in a row",
               len);
    }
    const std::string_view chunk = text.substr(0, len);
    text.remove_prefix(len);
    utf16.resize(chunk.size() + 1);
    int32_t n16 = 0;
    status = U_ZERO_ERROR;
    u_strFromUTF8(utf16.data(), static_cast<int32_t>(utf16.size()), &n16, chunk.data(),
                  static_cast<int32_t>(chunk.size()), &status);
    KV_CHECK(U_SUCCESS(status), "tokenizer: NFC: ICU cannot read the text as UTF-8: {}", u_errorName(status));
    normalized.resize(static_cast<size_t>(n16) * 3 + 16);  // NFC expands by at most 3x
    status = U_ZERO_ERROR;
    const int32_t nn = unorm2_normalize(nfc, utf16.data(), n16, normalized.data(),
                                        static_cast<int32_t>(normalized.size()), &status);
    KV_CHECK(U_SUCCESS(status), "tokenizer: NFC: ICU failed: {}", u_errorName(status));
    int32_t n8 = 0;
    status = U_ZERO_ERROR;
    u_strToUTF8(nullptr, 0, &n8, normalized.data(), nn, &status);  // the length (status: buffer overflow)
    const size_t at = out.size();
    out.resize(at + static_cast<size_t>(n8));
    status = U_ZERO_ERROR;
    u_strToUTF8(out.data() + at, n8, &n8, normalized.data(), nn, &status);
    KV_CHECK(U_SUCCESS(status) || status == U_STRING_NOT_TERMINATED_WARNING, "tokenizer: NFC: ICU failed: {}",
             u_errorName(status));
  }
}

// NFC of every stretch of well-formed UTF-8 in `text`; other bytes are kept as they are, so a
// byte string that is not UTF-8 still round-trips.
std::string nfc_bytes(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    bool ascii = true;
    while (j < text.size()) {
      const size_t len = utf8_char_len(text, j);
      if (len == 0) break;
      ascii = ascii && len == 1;
      j += len;
    }
    if (ascii) {
      out.append(text.substr(i, j - i));  // ASCII is its own NFC
    } else {
      nfc_append(text.substr(i, j - i), out);
    }
    if (j < text.size()) out += text[j++];  // a byte that is not UTF-8
    i = j;
  }
  return out;
}

}  // namespace

// ---- Added tokens ------------------------------------------------------------------------------------------

// A byte trie over the added tokens' contents; `split` finds them leftmost-longest, as Hugging
// Face's added-vocabulary matcher does.
struct Tokenizer::AddedTokens {
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> next;  // byte -> node
    int32_t id = -1;                                      // token ending here
  };
  std::vector<Node> nodes{1};
  bool first[256] = {};

  void add(std::string_view content, int32_t id) {
    int32_t node = 0;
    for (unsigned char c : content) {
      auto& next = nodes[static_cast<size_t>(node)].next;
      auto it = std::find_if(next.begin(), next.end(), [&](const auto& e) { return e.first == c; });
      if (it == next.end()) {
        next.emplace_back(c, static_cast<int32_t>(nodes.size()));
        node = static_cast<int32_t>(nodes.size());
        nodes.emplace_back();
      } else {
        node = it->second;
      }
    }
    nodes[static_cast<size_t>(node)].id = id;
    first[static_cast<unsigned char>(content[0])] = true;
  }

  // Calls text(segment) for the text between matches and token(id) for each match, in order.
  template <class Text, class Token>
  void split(std::string_view s, Text&& text, Token&& token) const {
    size_t done = 0;
    for (size_t i = 0; i < s.size(); ++i) {
      if (!first[static_cast<unsigned char>(s[i])]) continue;
      int32_t node = 0, best = -1;
      size_t best_end = 0;
      for (size_t k = i; k < s.size(); ++k) {
        const auto& next = nodes[static_cast<size_t>(node)].next;
        const unsigned char c = static_cast<unsigned char>(s[k]);
        auto it = std::find_if(next.begin(), next.end(), [&](const auto& e) { return e.first == c; });
        if (it == next.end()) break;
        node = it->second;
        if (nodes[static_cast<size_t>(node)].id >= 0) best = nodes[static_cast<size_t>(node)].id, best_end = k + 1;
      }
      if (best < 0) continue;
      if (i > done) text(s.substr(done, i - done));
      token(best);
      done = best_end;
      i = best_end - 1;
    }
    if (done < s.size()) text(s.substr(done));
  }
};

// ---- Tokenizer: files --------------------------------------------------------------------------------

namespace {

// Tokenizer files hold objects of 50k-200k keys (the vocabulary). They are parsed into
// nlohmann::json, whose objects are maps: json::Json keeps insertion order in a vector with a
// linear search per key, which is quadratic (seconds for GPT-2's encoder.json, about a minute for a
// 150k vocabulary). The checks are json::parse's: bounded nesting, duplicate keys refused, errors
// "FILE: invalid JSON: ...".
using Doc = nlohmann::json;

Doc parse_tokenizer_json(const std::string& path, int max_depth) {
  return json::parse_unordered(io::read_file(path), path, max_depth);
}

std::string cut(const Doc& value) {
  return kvroute::excerpt(value.dump(-1, ' ', false, Doc::error_handler_t::replace), 60);
}

std::string cut(const std::string& text) { return cut(Doc(kvroute::excerpt(text, 200))); }

// Reads tokenizer.json: every error is "FILE: KEY.PATH: what is wrong".
struct HfReader {
  std::string file;

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    KV_FAIL("{}: {}: {}", file, path, what);
  }
  static std::string join(const std::string& path, std::string_view key) {
    return path.empty() ? std::string(key) : path + "." + std::string(key);
  }
  // The member, or nullptr when it is absent or null.
  static const Doc* find(const Doc& object, const char* key) {
    auto it = object.find(key);
    return it == object.end() || it->is_null() ? nullptr : &*it;
  }
  const Doc& object(const Doc& parent, const std::string& path, const char* key) const {
    const Doc* v = find(parent, key);
    if (v == nullptr) fail(join(path, key), "missing");
    if (!v->is_object()) fail(join(path, key), fmt::format("expected an object, got {}", cut(*v)));
    return *v;
  }
  std::string string(const Doc& parent, const std::string& path, const char* key) const {
    const Doc* v = find(parent, key);
    if (v == nullptr) fail(join(path, key), "missing");
    if (!v->is_string()) fail(join(path, key), fmt::format("expected a string, got {}", cut(*v)));
    return v->get<std::string>();
  }
  bool boolean(const Doc& parent, const std::string& path, const char* key, bool fallback) const {
    const Doc* v = find(parent, key);
    if (v == nullptr) return fallback;
    if (!v->is_boolean()) fail(join(path, key), fmt::format("expected true or false, got {}", cut(*v)));
    return v->get<bool>();
  }
  static bool is_id(const Doc& v) {
    return v.is_number_integer() && (v.is_number_unsigned() ? v.get<uint64_t>() <= kMaxTokenId
                                                            : v.get<int64_t>() >= 0 && v.get<int64_t>() <= kMaxTokenId);
  }
  int32_t id(const Doc& v, const std::string& path) const {
    if (!is_id(v)) fail(path, fmt::format("expected a token id, an integer in [0, {}], got {}", kMaxTokenId, cut(v)));
    return static_cast<int32_t>(v.get<int64_t>());
  }
  // `type` of the component at `path`, which must be one of `supported`.
  std::string type(const Doc& component, const std::string& path, std::initializer_list<std::string_view> supported) const {
    if (!component.is_object()) fail(path, fmt::format("expected an object, got {}", cut(component)));
    const std::string t = string(component, path, "type");
    for (std::string_view s : supported) {
      if (t == s) return t;
    }
    fail(join(path, "type"), fmt::format("unsupported value {} (supported: {})", cut(Doc(t)), fmt::join(supported, ", ")));
  }
  // A setting kvroute does not implement: fine when absent, null or `allowed`, else refused.
  void only(const Doc& parent, const std::string& path, const char* key, const Doc& allowed, const char* why) const {
    const Doc* v = find(parent, key);
    if (v != nullptr && *v != allowed) fail(join(path, key), fmt::format("unsupported value {} ({})", cut(*v), why));
  }
};

// A PCRE2 pattern that matches `literal` exactly (Hugging Face's Split with {"String": ...}).
std::string escape_literal(std::string_view literal) {
  std::string out;
  for (unsigned char c : literal) {
    if (c >= 0x80 || std::isalnum(c)) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{{{:02x}}}", c);
    }
  }
  return out;
}

}  // namespace

void Tokenizer::build_tables() {
  std::unordered_map<std::string, int32_t> id_of;
  for (size_t i = 0; i < tokens_.size(); ++i) id_of.emplace(tokens_[i], static_cast<int32_t>(i));
  is_token_.assign(tokens_.size(), true);
  for (int b = 0; b < 256; ++b) {
    auto it = id_of.find(std::string(1, static_cast<char>(b)));
    KV_CHECK(it != id_of.end(), "tokenizer: no token for byte {:#04x}", b);
    byte_ids_[b] = it->second;
  }
  merge_table_.clear();
  for (size_t rank = 0; rank < merges_.size(); ++rank) {
    auto [a, b] = merges_[rank];
    auto it = id_of.find(tokens_[a] + tokens_[b]);
    KV_CHECK(it != id_of.end(), "tokenizer: merge {} has no token for its result", rank);
    merge_table_.emplace(pair_key(a, b), std::make_pair(static_cast<int32_t>(rank), it->second));
  }
  auto eot = id_of.find(kEndOfText);
  eot_id_ = eot == id_of.end() ? -1 : eot->second;
  if (pretokenizers_.empty()) pretokenizers_.push_back(std::make_shared<const PreTokenizer>());
}

Tokenizer Tokenizer::load(const std::string& dir) {
  std::error_code ec;
  if (std::filesystem::exists(dir + "/tokenizer.json", ec)) return load_hf(dir);
  const std::string encoder_path = dir + "/encoder.json", merges_path = dir + "/vocab.bpe";
  KV_CHECK(std::filesystem::exists(encoder_path, ec),
           "{}: no such file (a tokenizer directory holds tokenizer.json, or encoder.json and vocab.bpe)",
           encoder_path);
  // One level: {"token": id, ...}; a deeper file is refused while parsing, not walked.
  const Doc encoder = parse_tokenizer_json(encoder_path, 1);
  KV_CHECK(encoder.is_object() && !encoder.empty() && encoder.size() <= (size_t{1} << 24),
           "{}: expected a JSON object of 1 to 2^24 token -> id entries", encoder_path);
  Tokenizer tok;
  tok.tokens_.assign(encoder.size(), std::string());
  std::vector<bool> seen(encoder.size(), false);
  std::unordered_map<std::string, int32_t> id_of;
  for (const auto& [key, value] : encoder.items()) {
    KV_CHECK(value.is_number_integer(), "{}: token {} has a non-integer id {}", encoder_path, cut(key), cut(value));
    const int64_t id = value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX ? -1 : value.get<int64_t>();
    KV_CHECK(id >= 0 && id < static_cast<int64_t>(encoder.size()) && !seen[static_cast<size_t>(id)],
             "{}: token {} has id {}, but ids must be unique and in [0, {})", encoder_path, cut(key), cut(value),
             encoder.size());
    std::string raw;
    KV_CHECK(unicode_to_bytes(key, raw), "{}: token {} is not in GPT-2's byte-level alphabet", encoder_path, cut(key));
    seen[static_cast<size_t>(id)] = true;
    tok.tokens_[static_cast<size_t>(id)] = raw;
    id_of[raw] = static_cast<int32_t>(id);
  }
  std::istringstream merges(io::read_file(merges_path));
  std::string line;
  int64_t line_no = 0;
  while (std::getline(merges, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    KV_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                 line.find(' ', space + 1) == std::string::npos,
             "{}:{}: expected 'LEFT RIGHT', got '{}'", merges_path, line_no, kvroute::excerpt(line, 60));
    std::string left, right;
    KV_CHECK(unicode_to_bytes(line.substr(0, space), left) && unicode_to_bytes(line.substr(space + 1), right),
             "{}:{}: '{}' is not in GPT-2's byte-level alphabet", merges_path, line_no, kvroute::excerpt(line, 60));
    auto l = id_of.find(left), r = id_of.find(right), m = id_of.find(left + right);
    KV_CHECK(l != id_of.end() && r != id_of.end() && m != id_of.end(),
             "{}:{}: merge '{}' uses or makes a token missing from {}", merges_path, line_no, kvroute::excerpt(line, 60),
             encoder_path);
    tok.merges_.emplace_back(l->second, r->second);
  }
  tok.build_tables();
  KV_CHECK(tok.eot_id_ >= 0, "{}: no {} token", encoder_path, kEndOfText);
  tok.files_ = {encoder_path, merges_path};
  return tok;
}

Tokenizer Tokenizer::load_hf(const std::string& dir) {
  const std::string file = dir + "/tokenizer.json";
  const HfReader r{file};
  const Doc root = parse_tokenizer_json(file, json::kMaxDepth);
  KV_CHECK(root.is_object(), "{}: expected a JSON object (a Hugging Face tokenizer), got {}", file, cut(root));
  Tokenizer tok;
  tok.format_ = "hf";
  tok.hf_merges_ = true;

  // model: byte-level BPE.
  const Doc& model = r.object(root, "", "model");
  r.type(model, "model", {"BPE"});
  r.only(model, "model", "dropout", Doc(), "BPE dropout is not supported");
  r.only(model, "model", "byte_fallback", Doc(false), "byte fallback is not supported");
  r.only(model, "model", "continuing_subword_prefix", Doc(""), "only a byte-level BPE without prefixes is supported");
  r.only(model, "model", "end_of_word_suffix", Doc(""), "only a byte-level BPE without suffixes is supported");
  tok.ignore_merges_ = r.boolean(model, "model", "ignore_merges", false);
  const Doc& vocab = r.object(model, "model", "vocab");
  if (vocab.empty() || vocab.size() > (size_t{1} << 24)) {
    r.fail("model.vocab", fmt::format("expected 1 to 2^24 tokens, got {}", vocab.size()));
  }
  // added_tokens (read first: they extend the id range).
  struct Added {
    int32_t id;
    std::string content;
    bool normalized;
  };
  std::vector<Added> added;
  if (const Doc* list = HfReader::find(root, "added_tokens")) {
    if (!list->is_array() || list->size() > (size_t{1} << 20)) {
      r.fail("added_tokens", fmt::format("expected an array of at most 2^20 tokens, got {}", cut(*list)));
    }
    for (size_t i = 0; i < list->size(); ++i) {
      const Doc& t = (*list)[i];
      const std::string path = fmt::format("added_tokens[{}]", i);
      if (!t.is_object()) r.fail(path, fmt::format("expected an object, got {}", cut(t)));
      const Doc* id = HfReader::find(t, "id");
      if (id == nullptr) r.fail(path + ".id", "missing");
      Added a{r.id(*id, path + ".id"), r.string(t, path, "content"), false};
      if (a.content.empty()) r.fail(path + ".content", "an added token cannot be empty");
      const bool special = r.boolean(t, path, "special", false);
      a.normalized = r.boolean(t, path, "normalized", !special);
      for (const char* key : {"single_word", "lstrip", "rstrip"}) {
        r.only(t, path, key, Doc(false), "added tokens are matched exactly, without word or space rules");
      }
      added.push_back(std::move(a));
    }
  }
  int32_t max_id = 0;
  std::vector<std::pair<int32_t, const std::string*>> entries;  // (id, spelling), sorted below
  entries.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!HfReader::is_id(it.value())) r.id(it.value(), "model.vocab[" + cut(it.key()) + "]");  // throws
    entries.emplace_back(static_cast<int32_t>(it.value().get<int64_t>()), &it.key());
    max_id = std::max(max_id, entries.back().first);
  }
  for (const Added& a : added) max_id = std::max(max_id, a.id);
  tok.tokens_.assign(static_cast<size_t>(max_id) + 1, std::string());
  tok.is_token_.assign(static_cast<size_t>(max_id) + 1, false);
  std::sort(entries.begin(), entries.end());
  auto vocab_ids = std::make_shared<std::unordered_map<std::string, int32_t>>();
  vocab_ids->reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto [id, spelling] = entries[i];
    if (i > 0 && entries[i - 1].first == id) {
      r.fail("model.vocab", fmt::format("tokens {} and {} both have id {}", cut(*entries[i - 1].second), cut(*spelling), id));
    }
    std::string raw;
    if (!unicode_to_bytes(*spelling, raw)) {
      r.fail("model.vocab[" + cut(*spelling) + "]", "not in the byte-level alphabet (GPT-2's bytes_to_unicode)");
    }
    tok.tokens_[static_cast<size_t>(id)] = raw;
    tok.is_token_[static_cast<size_t>(id)] = true;
    vocab_ids->emplace(std::move(raw), id);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_ids->find(std::string(1, static_cast<char>(b)));
    if (it == vocab_ids->end()) r.fail("model.vocab", fmt::format("no token for byte {:#04x}", b));
    tok.byte_ids_[b] = it->second;
  }
  std::unordered_map<std::string, int32_t> added_ids;  // content -> id
  for (size_t i = 0; i < added.size(); ++i) {
    const Added& a = added[i];
    const std::string path = fmt::format("added_tokens[{}]", i);
    if (!added_ids.emplace(a.content, a.id).second) {
      r.fail(path + ".content", fmt::format("{} is also added token {}", cut(a.content), added_ids[a.content]));
    }
    std::string& slot = tok.tokens_[static_cast<size_t>(a.id)];
    if (tok.is_token_[static_cast<size_t>(a.id)] && slot != a.content) {
      r.fail(path + ".id", fmt::format("id {} is already the token {}", a.id, cut(slot)));
    }
    slot = a.content;
    tok.is_token_[static_cast<size_t>(a.id)] = true;
  }

  // merges: "LEFT RIGHT" strings or [LEFT, RIGHT] pairs, in rank order.
  const Doc* merges = HfReader::find(model, "merges");
  if (merges == nullptr) r.fail("model.merges", "missing");
  if (!merges->is_array() || merges->size() > (size_t{1} << 24)) {
    r.fail("model.merges", fmt::format("expected an array of at most 2^24 merges, got {}", cut(*merges)));
  }
  tok.merges_.reserve(merges->size());
  tok.merge_table_.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const Doc& m = (*merges)[i];
    const std::string path = fmt::format("model.merges[{}]", i);
    std::string left, right;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() || s.find(' ', space + 1) != std::string::npos) {
        r.fail(path, fmt::format("expected \"LEFT RIGHT\", got {}", cut(m)));
      }
      left = s.substr(0, space), right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>(), right = m[1].get<std::string>();
    } else {
      r.fail(path, fmt::format("expected \"LEFT RIGHT\" or [LEFT, RIGHT], got {}", cut(m)));
    }
    std::string lb, rb;
    const bool spelled = unicode_to_bytes(left, lb) && unicode_to_bytes(right, rb);
    auto li = spelled ? vocab_ids->find(lb) : vocab_ids->end();
    auto ri = spelled ? vocab_ids->find(rb) : vocab_ids->end();
    auto mi = spelled ? vocab_ids->find(lb + rb) : vocab_ids->end();
    if (li == vocab_ids->end() || ri == vocab_ids->end() || mi == vocab_ids->end()) {
      r.fail(path, fmt::format("merge {} uses or makes a token missing from model.vocab", cut(m)));
    }
    tok.merges_.emplace_back(li->second, ri->second);
    // A merge listed twice takes its last rank, as Hugging Face's map does.
    tok.merge_table_.insert_or_assign(pair_key(li->second, ri->second),
                                      std::make_pair(static_cast<int32_t>(i), mi->second));
  }
  tok.vocab_ids_ = vocab_ids;

  // normalizer: none or NFC.
  if (const Doc* n = HfReader::find(root, "normalizer")) {
    if (r.type(*n, "normalizer", {"NFC", "Sequence"}) == "NFC") {
      tok.nfc_ = true;
    } else {
      const Doc* list = HfReader::find(*n, "normalizers");
      if (list == nullptr || !list->is_array()) r.fail("normalizer.normalizers", "expected an array");
      for (size_t i = 0; i < list->size(); ++i) r.type((*list)[i], fmt::format("normalizer.normalizers[{}]", i), {"NFC"});
      tok.nfc_ = !list->empty();
    }
  }

  // pre_tokenizer: ByteLevel, or Sequence [Split..., ByteLevel].
  const Doc* pre = HfReader::find(root, "pre_tokenizer");
  if (pre == nullptr) r.fail("pre_tokenizer", "missing (a byte-level BPE needs the ByteLevel pre-tokenizer)");
  std::vector<std::pair<const Doc*, std::string>> steps;  // (component, key path)
  if (r.type(*pre, "pre_tokenizer", {"ByteLevel", "Sequence", "Split"}) == "Sequence") {
    const Doc* list = HfReader::find(*pre, "pretokenizers");
    if (list == nullptr || !list->is_array() || list->empty() || list->size() > 16) {
      r.fail("pre_tokenizer.pretokenizers", "expected an array of 1 to 16 pre-tokenizers");
    }
    for (size_t i = 0; i < list->size(); ++i) steps.emplace_back(&(*list)[i], fmt::format("pre_tokenizer.pretokenizers[{}]", i));
  } else {
    steps.emplace_back(pre, "pre_tokenizer");
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    const auto& [step, path] = steps[i];
    const std::string t = r.type(*step, path, {"ByteLevel", "Split"});
    if (t == "ByteLevel") {
      if (i + 1 != steps.size()) r.fail(path + ".type", "ByteLevel must be the last pre-tokenizer");
      r.only(*step, path, "add_prefix_space", Doc(false), "a prefix space is not supported");
      if (r.boolean(*step, path, "use_regex", true)) {
        tok.pretokenizers_.push_back(std::make_shared<const PreTokenizer>(kGpt2Pattern, file + ": " + path));
      }
      continue;
    }
    if (i + 1 == steps.size()) r.fail(path + ".type", "the last pre-tokenizer must be ByteLevel (a byte-level BPE)");
    const std::string behavior = r.string(*step, path, "behavior");
    if (behavior != "Isolated") r.fail(path + ".behavior", fmt::format("unsupported value {} (supported: Isolated)", cut(Doc(behavior))));
    r.only(*step, path, "invert", Doc(false), "an inverted split is not supported");
    const Doc& pattern = r.object(*step, path, "pattern");
    if (pattern.size() != 1 || !(pattern.contains("Regex") || pattern.contains("String"))) {
      r.fail(path + ".pattern", fmt::format("expected {{\"Regex\": ...}} or {{\"String\": ...}}, got {}", cut(pattern)));
    }
    if (pattern.contains("Regex")) {
      const std::string regex = r.string(pattern, path + ".pattern", "Regex");
      tok.pretokenizers_.push_back(std::make_shared<const PreTokenizer>(regex, file + ": " + path + ".pattern.Regex"));
    } else {
      const std::string literal = r.string(pattern, path + ".pattern", "String");
      if (literal.empty()) r.fail(path + ".pattern.String", "an empty string splits nothing");
      tok.pretokenizers_.push_back(
          std::make_shared<const PreTokenizer>(escape_literal(literal), file + ": " + path + ".pattern.String"));
    }
  }

  // decoder: ByteLevel (the byte-level alphabet back to bytes) or none.
  if (const Doc* d = HfReader::find(root, "decoder")) r.type(*d, "decoder", {"ByteLevel"});

  // Added tokens: matched on the raw text ("normalized": false) or after NFC ("normalized": true).
  auto raw = std::make_shared<AddedTokens>(), normalized = std::make_shared<AddedTokens>();
  bool any_raw = false, any_normalized = false;
  for (const Added& a : added) {
    if (a.normalized && tok.nfc_) {
      normalized->add(nfc_bytes(a.content), a.id);
      any_normalized = true;
    } else {
      raw->add(a.content, a.id);
      any_raw = true;
    }
  }
  if (any_raw) tok.added_raw_ = raw;
  if (any_normalized) tok.added_normalized_ = normalized;

  // End of text: tokenizer_config.json's eos_token, else the first of these that is a token.
  auto find_token = [&](const std::string& content) -> int32_t {
    if (auto it = added_ids.find(content); it != added_ids.end()) return it->second;
    if (auto it = vocab_ids->find(content); it != vocab_ids->end()) return it->second;
    return -1;
  };
  tok.files_ = {file};
  const std::string config_path = dir + "/tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    tok.files_.push_back(config_path);
    const json::Json config = json::parse_file(config_path);
    KV_CHECK(config.is_object(), "{}: expected a JSON object, got {}", config_path, json::excerpt(config));
    if (auto it = config.find("eos_token"); it != config.end() && !it->is_null()) {
      const json::Json& eos = *it;
      std::string content;
      if (eos.is_string()) {
        content = eos.get<std::string>();
      } else if (eos.is_object() && eos.contains("content") && eos.at("content").is_string()) {
        content = eos.at("content").get<std::string>();
      } else {
        KV_FAIL("{}: eos_token: expected a string or {{\"content\": string}}, got {}", config_path, json::excerpt(eos));
      }
      tok.eot_id_ = find_token(content);
      KV_CHECK(tok.eot_id_ >= 0, "{}: eos_token: {} is not a token of {}", config_path, cut(content), file);
    }
  }
  for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>"}) {
    if (tok.eot_id_ < 0) tok.eot_id_ = find_token(name);
  }
  KV_CHECK(tok.eot_id_ >= 0,
           "{}: no end-of-text token: no eos_token in tokenizer_config.json and none of <|endoftext|>, "
           "<|end_of_text|>, </s> is a token",
           file);
  return tok;
}

void Tokenizer::save(const std::string& dir) const {
  KV_CHECK(format_ == "gpt2", "tokenizer save {}: a tokenizer loaded from {} can only be copied, not rewritten", dir,
           files_.empty() ? std::string("tokenizer.json") : files_[0]);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  KV_CHECK(!ec, "{}: cannot create directory: {}", dir, ec.message());
  nlohmann::ordered_json encoder = nlohmann::ordered_json::object();
  for (size_t i = 0; i < tokens_.size(); ++i) encoder[to_unicode(tokens_[i])] = i;
  io::write_file_atomic(dir + "/encoder.json", encoder.dump());
  std::string merges = "#version: 0.2\n";
  for (const auto& [a, b] : merges_) merges += to_unicode(tokens_[a]) + ' ' + to_unicode(tokens_[b]) + '\n';
  io::write_file_atomic(dir + "/vocab.bpe", merges);
}

// ---- Encode / decode ---------------------------------------------------------------------------------

void Tokenizer::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  for (unsigned char c : word) symbols.push_back(byte_ids_[c]);
  while (symbols.size() > 1) {
    int32_t best_rank = INT32_MAX, best_id = -1;
    uint64_t best_pair = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      auto it = merge_table_.find(pair_key(symbols[i], symbols[i + 1]));
      if (it != merge_table_.end() && it->second.first < best_rank) {
        best_rank = it->second.first;
        best_id = it->second.second;
        best_pair = it->first;
      }
    }
    if (best_id < 0) break;
    size_t w = 0;
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && pair_key(symbols[i], symbols[i + 1]) == best_pair) {
        symbols[w++] = best_id;
        ++i;
      } else {
        symbols[w++] = symbols[i];
      }
    }
    symbols.resize(w);
  }
  out.insert(out.end(), symbols.begin(), symbols.end());
}

// Hugging Face's Word::merge_all: a heap of (rank, position); the lowest rank merges first, the
// leftmost of equal ranks first, one pair at a time, and a popped entry counts only while the pair
// now at its position still merges into the same token.
void Tokenizer::encode_word_hf(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, merged;
  };
  const auto later = [](const Candidate& a, const Candidate& b) { return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos; };
  const int32_t n = static_cast<int32_t>(word.size());
  std::vector<Symbol> sym(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) sym[static_cast<size_t>(i)] = {byte_ids_[static_cast<unsigned char>(word[static_cast<size_t>(i)])], i - 1, i + 1 < n ? i + 1 : -1, true};
  std::vector<Candidate> heap;
  auto push = [&](int32_t pos) {
    const Symbol& s = sym[static_cast<size_t>(pos)];
    auto it = merge_table_.find(pair_key(s.id, sym[static_cast<size_t>(s.next)].id));
    if (it == merge_table_.end()) return;
    heap.push_back({it->second.first, pos, it->second.second});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& s = sym[static_cast<size_t>(top.pos)];
    if (!s.alive || s.next < 0) continue;
    Symbol& right = sym[static_cast<size_t>(s.next)];
    auto it = merge_table_.find(pair_key(s.id, right.id));
    if (it == merge_table_.end() || it->second.second != top.merged) continue;  // stale
    s.id = top.merged;
    right.alive = false;
    s.next = right.next;
    if (s.next >= 0) sym[static_cast<size_t>(s.next)].prev = top.pos;
    if (s.prev >= 0) push(s.prev);
    if (s.next >= 0) push(top.pos);
  }
  for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = sym[static_cast<size_t>(i)].next) out.push_back(sym[static_cast<size_t>(i)].id);
}

void Tokenizer::encode_piece(std::string_view piece, EncodeCache* cache, std::vector<int32_t>& out) const {
  auto encode_uncached = [&](std::vector<int32_t>& ids) {
    if (ignore_merges_) {
      if (auto it = vocab_ids_->find(std::string(piece)); it != vocab_ids_->end()) {
        ids.push_back(it->second);
        return;
      }
    }
    if (hf_merges_) {
      encode_word_hf(piece, ids);
    } else {
      encode_word(piece, ids);
    }
  };
  if (cache == nullptr) {
    encode_uncached(out);
    return;
  }
  auto it = cache->find(std::string(piece));
  if (it == cache->end()) {
    std::vector<int32_t> word;
    encode_uncached(word);
    it = cache->emplace(std::string(piece), std::move(word)).first;
  }
  out.insert(out.end(), it->second.begin(), it->second.end());
}

// Text without added tokens (normalised already): the pre-tokenizers in turn, then BPE per piece.
void Tokenizer::encode_plain(std::string_view text, EncodeCache* cache, std::vector<int32_t>& out) const {
  std::function<void(size_t, std::string_view)> step = [&](size_t stage, std::string_view piece) {
    if (stage == pretokenizers_.size()) {
      encode_piece(piece, cache, out);
    } else {
      pretokenizers_[stage]->split(piece, [&](std::string_view sub) { step(stage + 1, sub); });
    }
  };
  step(0, text);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, EncodeCache* cache) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  auto push_id = [&](int32_t id) { ids.push_back(id); };
  auto normalized = [&](std::string_view segment) {
    if (added_normalized_) {
      added_normalized_->split(segment, [&](std::string_view s) { encode_plain(s, cache, ids); }, push_id);
    } else {
      encode_plain(segment, cache, ids);
    }
  };
  auto raw = [&](std::string_view segment) {
    if (nfc_) {
      const std::string n = nfc_bytes(segment);
      normalized(n);
    } else {
      normalized(segment);
    }
  };
  if (added_raw_) {
    added_raw_->split(text, raw, push_id);
  } else {
    raw(text);
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    KV_CHECK(id >= 0 && id < vocab_size(), "tokenizer.decode: id {} outside the vocabulary [0, {})", id, vocab_size());
    KV_CHECK(is_token_[static_cast<size_t>(id)], "tokenizer.decode: id {} is not a token (no token has this id)", id);
    out += tokens_[static_cast<size_t>(id)];
  }
  return out;
}

// ---- Training ----------------------------------------------------------------------------------------

Tokenizer Tokenizer::train(const std::function<void(const std::function<void(std::string_view)>&)>& for_each_text,
                           int64_t vocab_size, const std::function<void(int64_t, int64_t)>& progress) {
  KV_CHECK(vocab_size >= 257 && vocab_size <= (int64_t{1} << 31) - 1,
           "tokenizer train: --vocab must be at least 257 (256 bytes + <|endoftext|>), got {}", vocab_size);
  // 1. Word frequencies, counted in parallel over batches of texts.
  PreTokenizer pre;
  std::unordered_map<std::string, int64_t> word_counts;
  std::vector<std::string> batch;
  auto count_batch = [&] {
    const int threads = omp_get_max_threads();
    std::vector<std::unordered_map<std::string, int64_t>> local(static_cast<size_t>(threads));
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t i = 0; i < batch.size(); ++i) {
      auto& counts = local[static_cast<size_t>(omp_get_thread_num())];
      pre.split(batch[i], [&](std::string_view piece) { ++counts[std::string(piece)]; });
    }
    for (auto& counts : local)
      for (auto& [w, c] : counts) word_counts[w] += c;
    batch.clear();
  };
  for_each_text([&](std::string_view text) {
    batch.emplace_back(text);
    if (batch.size() >= 512) count_batch();
  });
  count_batch();

  Tokenizer tok;
  const ByteMap& map = byte_map();
  for (int i = 0; i < 256; ++i) tok.tokens_.push_back(std::string(1, static_cast<char>(map.order[i])));
  int32_t byte_id[256];
  for (int i = 0; i < 256; ++i) byte_id[map.order[i]] = i;

  // Words sorted for a deterministic layout.
  std::vector<std::pair<std::string, int64_t>> sorted(word_counts.begin(), word_counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::vector<int32_t>> words(sorted.size());
  std::vector<int64_t> counts(sorted.size());
  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;  // may hold stale entries; rechecked
  for (size_t w = 0; w < sorted.size(); ++w) {
    counts[w] = sorted[w].second;
    for (unsigned char c : sorted[w].first) words[w].push_back(byte_id[c]);
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      uint64_t key = pair_key(words[w][i], words[w][i + 1]);
      pair_counts[key] += counts[w];
      pair_words[key].push_back(static_cast<int32_t>(w));
    }
  }
  // Max-heap on (count, then smaller pair key); stale entries are skipped when popped.
  using Entry = std::pair<int64_t, uint64_t>;
  auto cmp = [](const Entry& x, const Entry& y) { return x.first != y.first ? x.first < y.first : x.second > y.second; };
  std::priority_queue<Entry, std::vector<Entry>, decltype(cmp)> heap(cmp);
  for (const auto& [key, c] : pair_counts) heap.emplace(c, key);

  std::unordered_map<std::string, int32_t> token_ids;
  for (size_t i = 0; i < tok.tokens_.size(); ++i) token_ids.emplace(tok.tokens_[i], static_cast<int32_t>(i));
  const int64_t target_tokens = vocab_size - 1;  // the last id is <|endoftext|>
  const int64_t target_merges = target_tokens - 256;
  while (static_cast<int64_t>(tok.tokens_.size()) < target_tokens && !heap.empty()) {
    auto [count, key] = heap.top();
    heap.pop();
    auto pc = pair_counts.find(key);
    if (pc == pair_counts.end() || pc->second != count) continue;  // stale
    if (count < 2) break;
    const int32_t a = static_cast<int32_t>(key >> 32), b = static_cast<int32_t>(key & 0xffffffffu);
    // Two merge paths can spell the same bytes ("ab"+"c", "a"+"bc"): reuse the existing token.
    const std::string spelled = tok.tokens_[a] + tok.tokens_[b];
    auto [existing, is_new] = token_ids.emplace(spelled, static_cast<int32_t>(tok.tokens_.size()));
    const int32_t merged = existing->second;
    if (is_new) tok.tokens_.push_back(spelled);
    tok.merges_.emplace_back(a, b);
    std::vector<int32_t> affected = std::move(pair_words[key]);
    pair_words.erase(key);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    std::unordered_set<uint64_t> touched;
    for (int32_t w : affected) {
      std::vector<int32_t>& sym = words[static_cast<size_t>(w)];
      bool has = false;
      for (size_t i = 0; i + 1 < sym.size() && !has; ++i) has = sym[i] == a && sym[i + 1] == b;
      if (!has) continue;
      const int64_t c = counts[static_cast<size_t>(w)];
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        uint64_t k = pair_key(sym[i], sym[i + 1]);
        pair_counts[k] -= c;
        touched.insert(k);
      }
      size_t out = 0;
      for (size_t i = 0; i < sym.size(); ++i) {
        if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
          sym[out++] = merged;
          ++i;
        } else {
          sym[out++] = sym[i];
        }
      }
      sym.resize(out);
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        uint64_t k = pair_key(sym[i], sym[i + 1]);
        pair_counts[k] += c;
        touched.insert(k);
        if (sym[i] == merged || sym[i + 1] == merged) pair_words[k].push_back(w);
      }
    }
    pair_counts.erase(key);
    std::vector<uint64_t> touched_sorted(touched.begin(), touched.end());
    std::sort(touched_sorted.begin(), touched_sorted.end());
    for (uint64_t k : touched_sorted) {
      auto it = pair_counts.find(k);
      if (it == pair_counts.end()) continue;
      if (it->second <= 0) {
        pair_counts.erase(it);
      } else {
        heap.emplace(it->second, k);
      }
    }
    if (progress && tok.tokens_.size() % 256 == 0) progress(static_cast<int64_t>(tok.tokens_.size()) - 256, target_merges);
  }
  if (progress) progress(static_cast<int64_t>(tok.tokens_.size()) - 256, target_merges);
  tok.tokens_.push_back(kEndOfText);
  tok.build_tables();
  return tok;
}

}  // namespace kvroute::data
