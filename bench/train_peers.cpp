#include "bench/train_peers.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

namespace kvroute::bench {

namespace {

// Runs a shell command and returns its last stdout line ("" on failure).
std::string last_line_of(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof buf, pipe) != nullptr) out += buf;
  const int rc = pclose(pipe);
  if (rc != 0) return "";
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const size_t nl = out.rfind('\n');
  return nl == std::string::npos ? out : out.substr(nl + 1);
}

double tokens_per_second_of(const std::string& line) {
  const size_t pos = line.find(" tok/s");
  if (pos == std::string::npos) return 0.0;
  size_t start = line.rfind(' ', pos - 1);
  return std::atof(line.substr(start + 1, pos - start - 1).c_str());
}

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

}  // namespace

std::string cpu_description() {
  std::FILE* f = std::fopen("/proc/cpuinfo", "r");
  if (f == nullptr) return "unknown CPU";
  std::string model, flags;
  char line[8192];
  while (std::fgets(line, sizeof line, f) != nullptr && (model.empty() || flags.empty())) {
    const std::string l(line);
    const size_t colon = l.find(':');
    if (colon == std::string::npos) continue;
    std::string value = l.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ')) value.erase(value.begin());
    while (!value.empty() && (value.back() == '\n' || value.back() == ' ')) value.pop_back();
    if (model.empty() && l.rfind("model name", 0) == 0) model = value;
    if (flags.empty() && l.rfind("flags", 0) == 0) flags = " " + value + " ";
  }
  std::fclose(f);
  std::vector<std::string> isa;
  for (const auto& [flag, name] : {std::pair<const char*, const char*>{" avx2 ", "AVX2"}, {" avx512f ", "AVX-512"},
                                   {" avx512_bf16 ", "AVX512-BF16"}, {" amx_bf16 ", "AMX-BF16"}}) {
    if (flags.find(flag) != std::string::npos) isa.push_back(name);
  }
  std::string out = model.empty() ? "unknown CPU" : model;
  out += " (";
  for (size_t k = 0; k < isa.size(); ++k) out += (k ? ", " : "") + isa[k];
  return out + (isa.empty() ? "no AVX2)" : ")");
}

std::string peer_shape_args(const train::RunConfig& config, int64_t global_batch_tokens) {
  const layers::ModelConfig& m = config.model;
  const double share_prob =
      config.router.config.policy == layers::RouterConfig::Policy::Stochastic ? config.router.config.share_prob : 0.0;
  return fmt::format(
      "--batch {} --seq {} --share-prob {} --vocab {} --hidden {} --layers {} --heads {} --kv-heads {} --head-dim {} "
      "--ffn {}",
      global_batch_tokens / config.train.seq_len, config.train.seq_len, share_prob, m.vocab_size, m.hidden_size,
      m.num_layers, m.num_heads, m.num_kv_heads, m.head_dim, m.intermediate_size);
}

void run_training_peers(const train::RunConfig& config, int64_t steps, int64_t global_batch_tokens, int threads,
                        double kvroute_tok_s) {
  const bool gpu = config.train.device == Device::Kind::CUDA;
  const std::string python = env_or("KVROUTE_PYTHON", "/usr/bin/python3");
  if (std::system((python + " -c 'import torch' > /dev/null 2>&1").c_str()) != 0) {
    std::printf("peer: %s cannot import torch (KVROUTE_EXTRA_PACKAGES=python3-torch scripts/setup.sh, or set "
                "KVROUTE_PYTHON)\n",
                python.c_str());
    return;
  }
  // From the source tree this binary was built in, or KVROUTE_SOURCE_DIR (a binary carried to
  // another machine, next to a checkout at another path).
  const std::string source = env_or("KVROUTE_SOURCE_DIR", KVROUTE_SOURCE_DIR);
  const layers::ModelConfig& m = config.model;
  const std::string dims = fmt::format("--steps {} {}", steps, peer_shape_args(config, global_batch_tokens));
  std::vector<std::pair<std::string, std::string>> peers;
  if (gpu) {
    const std::string base = fmt::format("{} {}/bench/peer_gpu_train_step.py {} --rope-theta {} --peak-tflops {}",
                                         python, source, dims, m.rope_theta,
                                         config.train.peak_tflops > 0 ? config.train.peak_tflops : 989.0);
    peers = {{"eager", base + " --mode eager"}, {"torch.compile", base + " --mode compile"}};
  } else {
    const std::string base = fmt::format("{} {}/bench/peer_train_step.py --threads {} {}", python, source, threads, dims);
    peers = {{"as is", base}, {"OMP_WAIT_POLICY=PASSIVE", "OMP_WAIT_POLICY=PASSIVE " + base}};
    // On a CPU with bf16 instructions PyTorch's best configuration includes bf16 autocast.
    const std::string cpu = cpu_description();
    if (cpu.find("AVX512-BF16") != std::string::npos || cpu.find("AMX-BF16") != std::string::npos) {
      peers.push_back({"bf16 autocast", base + " --autocast bf16"});
      peers.push_back({"bf16 autocast, PASSIVE", "OMP_WAIT_POLICY=PASSIVE " + base + " --autocast bf16"});
    }
  }
  double best = 0;
  for (const auto& [label, cmd] : peers) {
    std::string line = last_line_of(cmd);
    std::printf("%s%s\n", line.empty() ? "peer failed: " : "", line.empty() ? cmd.c_str() : line.c_str());
    const double peer_tok_s = tokens_per_second_of(line);
    if (peer_tok_s > 0) std::printf("kvroute / PyTorch %s tokens/s: %.2fx\n", label.c_str(), kvroute_tok_s / peer_tok_s);
    best = std::max(best, peer_tok_s);
  }
  if (!gpu && best > 0) std::printf("kvroute / best PyTorch tokens/s: %.2fx\n", kvroute_tok_s / best);
}

}  // namespace kvroute::bench
