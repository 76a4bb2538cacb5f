#include "eval/generation_bench.h"

#include <algorithm>

#include <fmt/format.h>

#include "core/allocator.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/stats.h"
#include "layers/inference_plan.h"

namespace kvroute::eval {

namespace {

std::vector<std::vector<int32_t>> random_prompts(int64_t batch, int64_t length, int64_t vocab) {
  Philox rng(7);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(batch), std::vector<int32_t>(static_cast<size_t>(length)));
  for (auto& p : prompts)
    for (auto& t : p) t = static_cast<int32_t>(rng.uniform_int(vocab));
  return prompts;
}

SamplingOptions greedy(int64_t new_tokens) {
  SamplingOptions o;
  o.temperature = 0;
  o.max_new_tokens = new_tokens;
  return o;
}

// Whether `batch` prompts of `context` tokens generate `new_tokens` within `budget` bytes.
bool fits(const layers::Transformer& model, const layers::RoutingPlan& plan, int64_t batch, int64_t context,
          int64_t new_tokens, int64_t budget, GenerationStats& stats) {
  Allocator& memory = allocator_for(model.device());
  memory.empty_cache();
  memory.set_limit(static_cast<size_t>(budget));
  bool ok = true;
  try {
    generate(model, random_prompts(batch, context, model.config().vocab_size), plan, greedy(new_tokens), &stats);
  } catch (const MemoryBudgetExceeded&) {
    ok = false;
  }
  memory.set_limit(0);
  memory.empty_cache();
  return ok;
}

}  // namespace

BenchOutput bench_memory_budget(const layers::Transformer& model, const MemoryBudgetBench& b) {
  const int L = model.num_layers();
  KV_CHECK(b.context > 0 && b.new_tokens > 0 && b.budget_bytes > 0,
           "bench generate: context {}, new tokens {} and budget {} must be positive", b.context, b.new_tokens,
           b.budget_bytes);
  KV_CHECK(b.context + b.new_tokens <= model.config().max_seq_len,
           "bench generate: --context {} + --new-tokens {} exceed model.max_seq_len {}", b.context, b.new_tokens,
           model.config().max_seq_len);
  BenchOutput out;
  out.table = fmt::format("memory budget {} bytes, context {}, {} new tokens\n{:<10} {:<6} {:>10} {:>14} {:>14}\n",
                          b.budget_bytes, b.context, b.new_tokens, "retention", "kept", "max batch", "KV bytes",
                          "peak bytes");
  out.csv = "retention,kept,num_layers,context,new_tokens,budget_bytes,max_batch,kv_bytes,peak_bytes\n";
  for (double r : b.retention) {
    const layers::InferencePlan p = layers::inference_plan(model.config(), layers::keep_retention(L, r));
    GenerationStats best, trial;
    int64_t ok = 0, bad = 0;
    for (int64_t batch = 1; batch <= (int64_t{1} << 16); batch *= 2) {  // doubling, then bisection
      if (fits(model, p.plan, batch, b.context, b.new_tokens, b.budget_bytes, trial)) {
        ok = batch;
        best = trial;
      } else {
        bad = batch;
        break;
      }
    }
    while (bad > 0 && bad - ok > 1) {
      const int64_t mid = (ok + bad) / 2;
      if (fits(model, p.plan, mid, b.context, b.new_tokens, b.budget_bytes, trial)) {
        ok = mid;
        best = trial;
      } else {
        bad = mid;
      }
    }
    out.table += fmt::format("{:<10} {:2}/{:<3} {:>10} {:>14} {:>14}\n", fmt::format("{:g}", r), p.kept.size(), L, ok,
                             best.kv_bytes, best.peak_bytes);
    out.csv += fmt::format("{},{},{},{},{},{},{},{},{}\n", r, p.kept.size(), L, b.context, b.new_tokens,
                           b.budget_bytes, ok, best.kv_bytes, best.peak_bytes);
  }
  return out;
}

BenchOutput bench_generation(const layers::Transformer& model, const GenerationBench& b) {
  const int L = model.num_layers();
  const int64_t V = model.config().vocab_size;
  struct Row {
    double retention;
    int64_t prompt, batch;
    layers::RoutingPlan plan;
    std::vector<GenerationStats> runs;
  };
  std::vector<Row> rows;
  for (int64_t tp : b.prompt_lengths) {
    KV_CHECK(tp + b.new_tokens <= model.config().max_seq_len,
             "bench generate: prompt {} + --new-tokens {} exceed model.max_seq_len {}", tp, b.new_tokens,
             model.config().max_seq_len);
    for (int64_t batch : b.batch_sizes)
      for (double r : b.retention)
        rows.push_back({r, tp, batch, layers::inference_plan(model.config(), layers::keep_retention(L, r)).plan, {}});
  }
  const SamplingOptions o = greedy(b.new_tokens);
  for (int rep = 0; rep < b.repeats; ++rep) {
    for (Row& row : rows) {
      row.runs.emplace_back();
      generate(model, random_prompts(row.batch, row.prompt, V), row.plan, o, &row.runs.back());
    }
  }
  BenchOutput out;
  out.table = fmt::format("{:<10} {:<6} {:<7} {:<6} {:>22} {:>30} {:>12} {:>12}\n", "retention", "kept", "prompt",
                          "batch", "TTFT ms med [min-max]", "decode tok/s med [min-max]", "KV bytes", "peak bytes");
  out.csv =
      "retention,kept,num_layers,prompt,batch,new_tokens,repeats,ttft_ms_median,ttft_ms_min,ttft_ms_max,"
      "decode_tok_s_median,decode_tok_s_min,decode_tok_s_max,kv_bytes,peak_bytes\n";
  for (const Row& row : rows) {
    std::vector<double> ttft, tps;
    for (const auto& s : row.runs) {
      ttft.push_back(s.ttft_ms);
      tps.push_back(s.decode_tokens_per_s);
    }
    const auto [tmin, tmax] = std::minmax_element(ttft.begin(), ttft.end());
    const auto [dmin, dmax] = std::minmax_element(tps.begin(), tps.end());
    const GenerationStats& s = row.runs.front();
    out.table += fmt::format("{:<10} {:2}/{:<3} {:<7} {:<6} {:8.1f} [{:6.1f}-{:6.1f}] {:10.1f} [{:8.1f}-{:8.1f}] {:12} {:12}\n",
                             fmt::format("{:g}", row.retention), s.kept_layers, L, row.prompt, row.batch, median(ttft),
                             *tmin, *tmax, median(tps), *dmin, *dmax, s.kv_bytes, s.peak_bytes);
    out.csv += fmt::format("{},{},{},{},{},{},{},{:.3f},{:.3f},{:.3f},{:.2f},{:.2f},{:.2f},{},{}\n", row.retention,
                           s.kept_layers, L, row.prompt, row.batch, b.new_tokens, b.repeats, median(ttft), *tmin, *tmax,
                           median(tps), *dmin, *dmax, s.kv_bytes, s.peak_bytes);
  }
  return out;
}

}  // namespace kvroute::eval
