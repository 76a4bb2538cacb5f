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

void add_placement_options(CLI::App* cmd, Placement& p) {
  // The names are the config's (train.device, train.precision), so flags and YAML agree.
  std::vector<std::string> devices, precisions;
  for (Device::Kind k : {Device::Kind::CPU, Device::Kind::CUDA}) devices.push_back(train::device_kind_name(k));
  for (train::Precision x : {train::Precision::FP32, train::Precision::BF16}) precisions.push_back(train::precision_name(x));
  cmd->add_option_function<std::string>(
         "--device",
         [&p](const std::string& v) {
           p.device = v == train::device_kind_name(Device::Kind::CUDA) ? Device::Kind::CUDA : Device::Kind::CPU;
         },
         "cpu | cuda (one GPU per rank under mpirun)")
      ->check(CLI::IsMember(devices));
  cmd->add_option_function<std::string>(
         "--precision",
         [&p](const std::string& v) {
           p.precision = v == train::precision_name(train::Precision::BF16) ? train::Precision::BF16 : train::Precision::FP32;
         },
         "fp32 | bf16 (bf16 needs --device cuda)")
      ->check(CLI::IsMember(precisions));
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
