// BPE encoding and decoding (data/tokenizer.h): pre-tokens through the merge table, added tokens,
// NFC where the tokenizer asks for it.
#include "data/tokenizer.h"

#include <algorithm>
#include <cctype>
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
#include "core/text.h"
#include "data/tokenizer_internal.h"

namespace kvroute::data {

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

}  // namespace kvroute::data
