#include "data/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <queue>
#include <sstream>
#include <unordered_set>

#include <omp.h>

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

constexpr const char* kPattern = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

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

PreTokenizer::PreTokenizer() : impl_(std::make_unique<Impl>()) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kPattern), PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
  KV_CHECK(impl_->code != nullptr, "tokenizer: PCRE2 rejected the pre-tokenisation pattern (error {} at {})", error,
           offset);
  pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
}

PreTokenizer::~PreTokenizer() { pcre2_code_free(impl_->code); }

void PreTokenizer::split(std::string_view text, const std::function<void(std::string_view)>& fn) const {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(impl_->code, nullptr);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t offset = 0;
  while (offset < text.size()) {
    int rc = pcre2_match(impl_->code, subject, text.size(), offset, 0, md, nullptr);
    if (rc < 0) {  // no further match (only bytes the pattern cannot match remain)
      fn(text.substr(offset));
      break;
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    size_t start = ov[0], end = ov[1];
    if (start > offset) fn(text.substr(offset, start - offset));  // unmatched bytes: their own piece
    if (end <= start) end = start + 1;                              // the pattern never matches empty; be safe
    end = std::min(end, text.size());
    fn(text.substr(start, end - start));
    offset = end;
  }
  pcre2_match_data_free(md);
}

// ---- Tokenizer: files --------------------------------------------------------------------------------

void Tokenizer::build_tables() {
  std::unordered_map<std::string, int32_t> id_of;
  for (size_t i = 0; i < tokens_.size(); ++i) id_of.emplace(tokens_[i], static_cast<int32_t>(i));
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
  if (!pretokenizer_) pretokenizer_ = std::make_shared<PreTokenizer>();
}

Tokenizer Tokenizer::load(const std::string& dir) {
  const std::string encoder_path = dir + "/encoder.json", merges_path = dir + "/vocab.bpe";
  std::error_code ec;
  KV_CHECK(std::filesystem::exists(encoder_path, ec),
           "{}: no such file (a tokenizer directory holds encoder.json and vocab.bpe)", encoder_path);
  // One level: {"token": id, ...}; a deeper file is refused while parsing, not walked.
  const json::Json encoder = json::parse_file(encoder_path, 1);
  KV_CHECK(encoder.is_object() && !encoder.empty() && encoder.size() <= (size_t{1} << 24),
           "{}: expected a JSON object of 1 to 2^24 token -> id entries", encoder_path);
  Tokenizer tok;
  tok.tokens_.assign(encoder.size(), std::string());
  std::vector<bool> seen(encoder.size(), false);
  std::unordered_map<std::string, int32_t> id_of;
  for (const auto& [key, value] : encoder.items()) {
    KV_CHECK(value.is_number_integer(), "{}: token {} has a non-integer id {}", encoder_path, json::excerpt(key),
             json::excerpt(value));
    const int64_t id = value.get<int64_t>();
    KV_CHECK(id >= 0 && id < static_cast<int64_t>(encoder.size()) && !seen[static_cast<size_t>(id)],
             "{}: token {} has id {}, but ids must be unique and in [0, {})", encoder_path, json::excerpt(key), id,
             encoder.size());
    std::string raw;
    KV_CHECK(unicode_to_bytes(key, raw), "{}: token {} is not in GPT-2's byte-level alphabet", encoder_path,
             json::excerpt(key));
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
             "{}:{}: expected 'LEFT RIGHT', got '{}'", merges_path, line_no, line.substr(0, 60));
    std::string left, right;
    KV_CHECK(unicode_to_bytes(line.substr(0, space), left) && unicode_to_bytes(line.substr(space + 1), right),
             "{}:{}: '{}' is not in GPT-2's byte-level alphabet", merges_path, line_no, line.substr(0, 60));
    auto l = id_of.find(left), r = id_of.find(right), m = id_of.find(left + right);
    KV_CHECK(l != id_of.end() && r != id_of.end() && m != id_of.end(),
             "{}:{}: merge '{}' uses or makes a token missing from {}", merges_path, line_no, line.substr(0, 60),
             encoder_path);
    tok.merges_.emplace_back(l->second, r->second);
  }
  tok.build_tables();
  KV_CHECK(tok.eot_id_ >= 0, "{}: no {} token", encoder_path, kEndOfText);
  return tok;
}

void Tokenizer::save(const std::string& dir) const {
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

std::vector<int32_t> Tokenizer::encode(std::string_view text, EncodeCache* cache) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  pretokenizer_->split(text, [&](std::string_view piece) {
    if (cache == nullptr) {
      encode_word(piece, ids);
      return;
    }
    auto it = cache->find(std::string(piece));
    if (it == cache->end()) {
      std::vector<int32_t> word;
      encode_word(piece, word);
      it = cache->emplace(std::string(piece), std::move(word)).first;
    }
    ids.insert(ids.end(), it->second.begin(), it->second.end());
  });
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) {
    KV_CHECK(id >= 0 && id < vocab_size(), "tokenizer.decode: id {} outside the vocabulary [0, {})", id, vocab_size());
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
