#include "cli/common.h"

#include <cstdio>
#include <fstream>
#include <vector>

#include "core/device_runtime.h"
#include "core/error.h"

namespace kvroute::cli {

void add_threads_option(CLI::App* cmd, int& threads) {
  cmd->add_option("--threads", threads, "worker threads (0: all cores)")->check(CLI::NonNegativeNumber);
}

void add_threads_override(std::vector<std::string>& overrides, int threads) {
  if (threads > 0) overrides.push_back(fmt::format("train.threads={}", threads));
}

namespace {

// A flag whose value is one of an enum's names: the config's names, so flags and YAML agree.
template <class E>
void add_enum_option(CLI::App* cmd, const std::string& flag, E& target, std::vector<E> values, const char* (*name)(E),
                     const std::string& help) {
  std::vector<std::string> names;
  for (E e : values) names.push_back(name(e));
  cmd->add_option_function<std::string>(
         flag,
         [&target, values, name](const std::string& v) {
           for (E e : values)
             if (v == name(e)) target = e;
         },
         help)
      ->check(CLI::IsMember(names));
}

}  // namespace

void add_placement_options(CLI::App* cmd, Placement& p) {
  add_enum_option(cmd, "--device", p.device, {Device::Kind::CPU, Device::Kind::CUDA}, train::device_kind_name,
                  "cpu | cuda (one GPU per rank under mpirun)");
  add_enum_option(cmd, "--precision", p.precision, {train::Precision::FP32, train::Precision::BF16},
                  train::precision_name, "fp32 | bf16 (bf16 needs --device cuda)");
}

void place_model(layers::Transformer& model, const Placement& p, int local_rank, ops::AttentionKernel attention) {
  KV_CHECK(p.device == Device::Kind::CUDA || p.precision == train::Precision::FP32,
           "--precision {}: bf16 needs --device cuda", train::precision_name(p.precision));
  if (p.device == Device::Kind::CPU) return;
  ops::set_attention_kernel(attention);
  model.to(device_runtime::select_cuda_device(local_rank, "--device cuda"), train::compute_dtype(p.precision));
}

int on_all_ranks(dist::Communicator& comm, const std::function<int()>& fn) {
  try {
    return fn();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvroute: error (rank %d): %s\n", comm.rank(), e.what());
    std::fflush(stderr);
    if (comm.world_size() > 1) comm.abort(1);
    return 1;
  }
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  KV_CHECK(out.good(), "{}: write failed", path);
}

}  // namespace kvroute::cli
