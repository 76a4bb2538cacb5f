// BPE training (Tokenizer::train, data/tokenizer.h): pair counts over the pre-tokenized corpus,
// merged most-frequent first, in GPT-2's file format.
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
