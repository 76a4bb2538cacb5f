// What the tokenizer's source files share and nothing else includes: GPT-2's byte map, the merge
// table key, NFC, and the added-token matcher (Tokenizer::AddedTokens).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/tokenizer.h"

namespace kvroute::data {

// GPT-2's reversible byte -> printable-unicode map.
struct ByteMap {
  std::string byte_to_str[256];
  int cp_to_byte[512];
  uint8_t order[256];  // GPT-2's id order of the single-byte tokens
  ByteMap();
};
const ByteMap& byte_map();
// Every byte of `raw` through the map.
std::string to_unicode(const std::string& raw);

// The merge table's key of the pair (a, b).
inline uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

// NFC of every stretch of well-formed UTF-8 in `text`; other bytes are kept as they are, so a
// byte string that is not UTF-8 still round-trips.
std::string nfc_bytes(std::string_view text);

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

}  // namespace kvroute::data
