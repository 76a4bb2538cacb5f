// Text handling the tokenizers share (data/text.h, data/tokenizer_internal.h): GPT-2's byte <->
// unicode map, the PCRE2 pre-tokenizer with Unicode 16.0 classes, NFC through ICU.
#include "data/text.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utypes.h>

#include <algorithm>

#include "core/error.h"
#include "core/json.h"
#include "data/tokenizer_internal.h"

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

}  // namespace

ByteMap::ByteMap() {
  {
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
}

const ByteMap& byte_map() {
  static const ByteMap map;
  return map;
}

std::string to_unicode(const std::string& raw) {
  std::string out;
  for (unsigned char c : raw) out += byte_map().byte_to_str[c];
  return out;
}



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
        if (!in_class) out += '[';
        out.append(original).append(extra);
        if (!in_class) out += ']';
      };
      if (rest.starts_with("\\p{L}")) {
        add_class("\\p{L}", kLetters16);
        i += 4;
      } else if (rest.starts_with("\\p{N}")) {
        add_class("\\p{N}", kNumbers16);
        i += 4;
      } else if (rest.starts_with("\\s")) {
        add_class("", kWhiteSpace);
        i += 1;
      } else if (rest.starts_with("\\S") && !in_class) {
        out.append("[^").append(kWhiteSpace).append("]");
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
    KV_FAIL("{}: PCRE2 cannot compile the pattern {}: {} (at offset {})", what, json::excerpt(json::Json(std::string(pattern))),
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

}  // namespace

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


}  // namespace kvroute::data
