#include "eval/generate.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <cmath>
#include <numeric>

#include "autograd/variable.h"
#include "core/rng.h"

namespace kvroute::eval {

int32_t sample_token(const float* logits, int64_t vocab, const SamplingOptions& options, Philox& rng) {
  if (options.temperature <= 0) {
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  }
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  int64_t keep = vocab;
  if (options.top_k > 0 && options.top_k < vocab) keep = options.top_k;
  std::partial_sort(order.begin(), order.begin() + keep, order.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  std::vector<double> probs(static_cast<size_t>(keep));
  const double m = logits[order[0]];
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += probs[i] = std::exp((logits[order[i]] - m) / options.temperature);
  if (options.top_p < 1.0) {  // smallest prefix with mass >= top_p
    double mass = 0;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      mass += probs[i] / total;
      if (mass >= options.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    total = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
  }
  double u = rng.uniform_double() * total;
  for (int64_t i = 0; i < keep; ++i) {
    u -= probs[i];
    if (u <= 0) return order[i];
  }
  return order[keep - 1];
}

std::vector<std::vector<int32_t>> generate(const layers::Transformer& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const layers::RoutingPlan& plan, const SamplingOptions& options,
                                           GenerationStats* stats) {
  KV_CHECK(!prompts.empty(), "generate: no prompts");
  const int64_t B = static_cast<int64_t>(prompts.size());
  std::vector<int64_t> lengths;
  for (const auto& p : prompts) {
    KV_CHECK(!p.empty(), "generate: empty prompt");
    lengths.push_back(static_cast<int64_t>(p.size()));
  }
  // Prompts of different lengths: right-padded into one prefill (causal attention keeps the padding
  // out of every real position), then each row continues from its own length.
  const int64_t Tp = *std::max_element(lengths.begin(), lengths.end());
  const int64_t V = model.config().vocab_size;
  const int64_t sampled_vocab = options.vocab_limit > 0 ? std::min(options.vocab_limit, V) : V;
  const int64_t total = Tp + options.max_new_tokens;
  KV_CHECK(total <= model.config().max_seq_len, "generate: prompt {} + {} new tokens exceed model.max_seq_len {}", Tp,
           options.max_new_tokens, model.config().max_seq_len);
  Allocator& memory = allocator_for(model.device());
  memory.reset_peak();
  layers::KVCache cache(model.config(), plan, B, total, model.device(), layers::kv_cache_dtype(model));
  Tensor prompt = Tensor::empty({B, Tp}, DType::I32);
  prompt.zero_();
  for (int64_t b = 0; b < B; ++b) std::copy(prompts[b].begin(), prompts[b].end(), prompt.data<int32_t>() + b * Tp);
  std::vector<Philox> rngs;
  for (int64_t b = 0; b < B; ++b) rngs.emplace_back(options.seed, static_cast<uint64_t>(b));
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(B));
  std::vector<bool> done(static_cast<size_t>(B), false);

  const auto start = std::chrono::steady_clock::now();
  // Prefill in chunks; each row's logits come from the chunk holding its last prompt position.
  const int64_t chunk = options.prefill_chunk > 0 ? options.prefill_chunk : Tp;
  Tensor logits;  // [B, 1, V]: each row's last prompt position
  for (int64_t from = 0; from < Tp; from += chunk) {
    const int64_t n = std::min(chunk, Tp - from);
    std::vector<int64_t> at(lengths.size());
    bool any = false;
    for (size_t b = 0; b < lengths.size(); ++b) {
      const int64_t last = lengths[b] - 1;
      at[b] = std::clamp<int64_t>(last - from, 0, n - 1);
      any = any || (last >= from && last < from + n);
    }
    Tensor part = layers::forward_cached(model, prompt.slice(1, from, from + n).contiguous(), cache, &at);
    if (!any) continue;
    if (!logits.defined()) logits = part.clone();
    for (size_t b = 0; b < lengths.size(); ++b) {
      const int64_t last = lengths[b] - 1;
      if (last >= from && last < from + n) {
        logits.slice(0, static_cast<int64_t>(b), static_cast<int64_t>(b) + 1)
            .copy_(part.slice(0, static_cast<int64_t>(b), static_cast<int64_t>(b) + 1));
      }
    }
  }
  Tensor next = Tensor::empty({B, 1}, DType::I32);
  cache.set_row_lengths(lengths);
  // row_pos(b): the position whose logits predict row b's next token.
  auto pick = [&](const Tensor& device_logits, int64_t row_len, const std::function<int64_t(int64_t)>& row_pos) {
    const Tensor lg = device_logits.to(Device::cpu()).to(DType::F32).contiguous();  // sampling runs on the host
    std::vector<float> masked;
    for (int64_t b = 0; b < B; ++b) {
      const float* row = lg.data<float>() + (b * row_len + row_pos(b)) * V;
      if (!options.excluded_ids.empty()) {
        masked.assign(row, row + sampled_vocab);
        for (int32_t id : options.excluded_ids)
          if (id >= 0 && id < sampled_vocab) masked[static_cast<size_t>(id)] = -INFINITY;
        row = masked.data();
      }
      int32_t t = sample_token(row, sampled_vocab, options, rngs[static_cast<size_t>(b)]);
      next.data<int32_t>()[b] = t;
      if (!done[static_cast<size_t>(b)]) {
        out[static_cast<size_t>(b)].push_back(t);
        if (t == options.stop_token) done[static_cast<size_t>(b)] = true;
      }
    }
  };
  if (options.max_new_tokens > 0) pick(logits, 1, [](int64_t) { return int64_t{0}; });
  const auto first = std::chrono::steady_clock::now();
  int64_t steps = 0;
  for (int64_t i = 1; i < options.max_new_tokens; ++i) {
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    Tensor step_logits = layers::forward_cached(model, next, cache);
    pick(step_logits, 1, [](int64_t) { return int64_t{0}; });
    ++steps;
  }
  const auto end = std::chrono::steady_clock::now();
  if (stats != nullptr) {
    stats->ttft_ms = std::chrono::duration<double, std::milli>(first - start).count();
    const double decode_s = std::chrono::duration<double>(end - first).count();
    stats->decode_tokens_per_s = decode_s > 0 ? static_cast<double>(steps * B) / decode_s : 0.0;
    stats->kv_bytes = cache.bytes();
    stats->peak_bytes = static_cast<int64_t>(memory.stats().peak_bytes);
    stats->kept_layers = cache.kept_layers();
    stats->new_tokens = (steps + 1) * B;
  }
  return out;
}

std::vector<int32_t> generate_uncached_greedy(const layers::Transformer& model, const std::vector<int32_t>& prompt,
                                              const layers::RoutingPlan& plan, int64_t new_tokens) {
  autograd::NoGradGuard no_grad;
  std::vector<int32_t> seq = prompt, out;
  const int64_t V = model.config().vocab_size;
  for (int64_t i = 0; i < new_tokens; ++i) {
    Tensor tokens = Tensor::from_vector(seq, {1, static_cast<int64_t>(seq.size())});
    Tensor logits = model.logits(tokens, plan).data().to(Device::cpu()).to(DType::F32).contiguous();
    const float* row = logits.data<float>() + (static_cast<int64_t>(seq.size()) - 1) * V;
    const int32_t t = static_cast<int32_t>(std::max_element(row, row + V) - row);
    out.push_back(t);
    seq.push_back(t);
  }
  return out;
}

}  // namespace kvroute::eval
