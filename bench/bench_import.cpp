// Peak memory of importing a Hugging Face checkpoint into a model (model.init_from, eval of a
// model directory): streaming (hf::WeightSource, one tensor at a time) against reading every
// tensor as F32 first (hf::read_weights, the import before 2026-12-07). A Llama-shaped model of
// about 1B parameters (2.1 GB in bf16, 4 shards) is generated once:
//   kvroute_bench_import --generate DIR        # writes DIR (config.json, shards, index)
//   kvroute_bench_import --measure DIR [--whole]
// Each --measure is its own process: the model is built (its parameters and gradients allocated and
// initialised, free heap pages returned with malloc_trim), the peak-RSS counter is reset
// (/proc/self/clear_refs), the weights are imported,
// and the growth of the peak RSS over the model's RSS is printed with the import's wall time.
#include <malloc.h>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "core/allocator.h"
#include "core/io.h"
#include "core/json.h"
#include "train/hf.h"

namespace kvroute {
namespace {

// kB from /proc/self/status ("VmRSS" or "VmHWM").
int64_t status_kb(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stoll(line.substr(key.size() + 1));
  }
  return -1;
}

train::RunConfig llama_1b() {
  train::RunConfig config;
  layers::ModelConfig& m = config.model;
  m.architecture = layers::Architecture::Llama;
  m.qk_norm = false;
  m.vocab_size = 32000;
  m.hidden_size = 2048;
  m.num_layers = 20;
  m.num_heads = 16;
  m.num_kv_heads = 4;
  m.head_dim = 128;
  m.intermediate_size = 5632;
  m.max_seq_len = 2048;
  m.tie_embeddings = false;
  return config;
}

void generate(const std::string& dir) {
  const train::RunConfig config = llama_1b();
  layers::Transformer model(config.model_config(), 1);
  std::filesystem::create_directories(dir);
  io::write_file_durable(dir + "/config.json", train::hf::config_json(config, DType::BF16));
  const auto params = model.master_parameters();
  const size_t shards = 4, per_shard = (params.size() + shards - 1) / shards;
  json::Json map = json::Json::object();
  int64_t bytes = 0;
  for (size_t s = 0; s < shards; ++s) {
    const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards);
    safetensors::NamedTensors tensors;
    for (size_t i = s * per_shard; i < std::min(params.size(), (s + 1) * per_shard); ++i) {
      tensors.emplace_back(params[i].first, params[i].second.to(DType::BF16));
      bytes += tensors.back().second.nbytes();
      map[params[i].first] = name;
    }
    safetensors::save(dir + "/" + name, tensors, {{"format", "pt"}});
  }
  json::Json index = {{"metadata", {{"total_size", bytes}}}, {"weight_map", map}};
  io::write_file_durable(dir + "/model.safetensors.index.json", index.dump(2) + "\n");
  std::printf("generated %s: %lld parameters, %.2f GB of bf16 weights in %zu shards\n", dir.c_str(),
              static_cast<long long>(model.parameter_count()), static_cast<double>(bytes) / 1e9, shards);
}

void measure(const std::string& dir, bool whole) {
  const train::hf::ModelInfo info = train::hf::read_config(dir);
  train::RunConfig config;
  config.model = info.model;
  layers::Transformer model(config.model_config(), 1);
  const int64_t construction_peak_kb = status_kb("VmHWM");
  // The pool keeps every freed block; what construction freed (the per-module parameter tensors the
  // flat buffer replaced) would otherwise be reused by the import and hide its growth.
  Allocator& pool = cpu_allocator();
  const size_t cached_after_construction = pool.stats().cached_bytes;
  pool.empty_cache();
  ::malloc_trim(0);
  const int64_t model_kb = status_kb("VmRSS");
  {
    std::ofstream reset("/proc/self/clear_refs");
    reset << "5";  // resets VmHWM to the current RSS
  }
  const int64_t base_kb = status_kb("VmHWM");
  pool.reset_peak();
  const size_t base_bytes = pool.stats().current_bytes;
  const auto start = std::chrono::steady_clock::now();
  if (whole) {
    model.load_parameters(train::hf::read_weights(dir, info.model.tie_embeddings), dir);
  } else {
    const auto weights = train::hf::WeightSource::model_dir(dir, info.model.tie_embeddings);
    weights.load_into(model);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t peak_kb = status_kb("VmHWM");
  const size_t peak_bytes = pool.stats().peak_bytes;
  // The largest tensor, for the "model plus one tensor" bound.
  int64_t largest = 0;
  for (const auto& [name, p] : model.master_parameters()) largest = std::max<int64_t>(largest, p.numel());
  std::printf("import %s (%s), %lld parameters: tensors held by the model %.2f GB (peak RSS while building it %.2f GB; "
              "%.2f GB cached by the pool after construction, released first); during the import, tensor bytes +%.3f GB at peak, peak RSS +%.3f GB "
              "over the model's %.2f GB; largest tensor %.3f GB in bf16 / %.3f GB in f32; %.1f s\n",
              dir.c_str(), whole ? "every tensor as F32 first" : "streaming, one tensor at a time",
              static_cast<long long>(model.parameter_count()), static_cast<double>(base_bytes) / 1e9,
              static_cast<double>(construction_peak_kb) / 1e6, static_cast<double>(cached_after_construction) / 1e9, static_cast<double>(peak_bytes - base_bytes) / 1e9,
              static_cast<double>(peak_kb - base_kb) / 1e6, static_cast<double>(model_kb) / 1e6,
              static_cast<double>(largest) * 2 / 1e9, static_cast<double>(largest) * 4 / 1e9, seconds);
}

}  // namespace
}  // namespace kvroute

int main(int argc, char** argv) {
  CLI::App app("peak memory of importing a Hugging Face checkpoint");
  std::string gen_dir, measure_dir;
  bool whole = false;
  app.add_option("--generate", gen_dir, "write a Llama-shaped ~1B-parameter bf16 model directory here");
  app.add_option("--measure", measure_dir, "import this model directory and report the peak RSS");
  app.add_flag("--whole", whole, "import by reading every tensor as F32 first (the old path)");
  CLI11_PARSE(app, argc, argv);
  try {
    if (!gen_dir.empty()) kvroute::generate(gen_dir);
    if (!measure_dir.empty()) kvroute::measure(measure_dir, whole);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvroute_bench_import: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
