// KV-cached generation under an inference routing plan: the cache holds only the kept layers,
// non-kept layers skip their K/V projections. Sampling: greedy (temperature 0), temperature,
// top-k, top-p, from Philox(seed) so a seed gives the same text on any machine.
#pragma once

#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "layers/kv_cache.h"
#include "layers/transformer.h"

namespace kvroute::eval {

struct SamplingOptions {
  double temperature = 0.8;  // 0: greedy
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;
  int64_t max_new_tokens = 64;
  int32_t stop_token = -1;   // stop a row at this token (e.g. <|endoftext|>); -1: never
  int64_t vocab_limit = 0;   // > 0: sample only ids below it (the tokenizer's vocabulary, when the
                             // model's is padded larger); 0: the model's whole vocabulary
  std::vector<int32_t> excluded_ids;  // never sampled: ids the tokenizer leaves unused (holes)
  // The prompt is prefilled this many positions at a time (0: all at once): activations stay
  // bounded by the chunk while the KV cache grows with the prompt. Same tokens either way.
  int64_t prefill_chunk = 512;
};

// Sampling options that keep generation inside `tokenizer`'s vocabulary: vocab_limit and the
// unused ids below it.
template <class Tokenizer>
void restrict_to_tokenizer(SamplingOptions& options, const Tokenizer& tokenizer) {
  options.vocab_limit = tokenizer.vocab_size();
  options.excluded_ids.clear();
  for (int64_t id = 0; id < tokenizer.vocab_size(); ++id)
    if (!tokenizer.is_token(id)) options.excluded_ids.push_back(static_cast<int32_t>(id));
}

struct GenerationStats {
  double ttft_ms = 0;             // prefill of the prompt + the first sampled token
  double decode_tokens_per_s = 0; // tokens/s (all rows) over the remaining steps
  int64_t kv_bytes = 0;           // allocated KV cache
  int64_t peak_bytes = 0;         // peak CPU allocator bytes during generation
  int kept_layers = 0;
  int64_t new_tokens = 0;
};

// prompts: B rows, of any lengths (the tokens each row gets equal those of generating it alone).
// Returns the new tokens of each row.
std::vector<std::vector<int32_t>> generate(const layers::Transformer& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const layers::RoutingPlan& plan, const SamplingOptions& options,
                                           GenerationStats* stats = nullptr);

// Reference for tests: greedy decoding by full forward passes over the whole sequence (no cache).
std::vector<int32_t> generate_uncached_greedy(const layers::Transformer& model, const std::vector<int32_t>& prompt,
                                              const layers::RoutingPlan& plan, int64_t new_tokens);

// Picks a token from one row of logits.
int32_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& options, Philox& rng);

}  // namespace kvroute::eval
