// Generation benchmarks (`kvroute bench generate`): TTFT, decode tokens/s, KV bytes and peak bytes
// per retention, and the paper's Table 5 (per retention, the largest batch that runs within a
// memory budget). Random prompts, greedy decoding; the CLI only parses flags and prints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eval/generate.h"
#include "layers/transformer.h"

namespace kvroute::eval {

// A result as the table printed and the CSV written.
struct BenchOutput {
  std::string table, csv;
};

struct GenerationBench {
  std::vector<double> retention = {1.0, 0.5, 0.25};
  std::vector<int64_t> prompt_lengths = {64, 192}, batch_sizes = {1, 4};
  int64_t new_tokens = 32;
  int repeats = 3;
};

// Every (prompt length, batch size, retention), `repeats` rounds interleaved (every configuration
// once per round, so drift in the machine's speed spreads over all of them): median and min-max of
// TTFT and decode tokens/s, with the KV and peak bytes.
BenchOutput bench_generation(const layers::Transformer& model, const GenerationBench& bench);

struct MemoryBudgetBench {
  std::vector<double> retention = {1.0, 0.5, 0.25};
  int64_t context = 0;  // prompt length
  int64_t new_tokens = 32;
  int64_t budget_bytes = 0;
};

// Per retention, the largest batch whose generation runs within the budget of the model's
// allocator (weights, cache and activations all count): run, not computed (doubling, then
// bisection).
BenchOutput bench_memory_budget(const layers::Transformer& model, const MemoryBudgetBench& bench);

}  // namespace kvroute::eval
