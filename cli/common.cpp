#include "cli/common.h"

#include <cstdio>
#include <fstream>

#include "core/device_runtime.h"
#include "core/error.h"

namespace kvroute::cli {

void add_threads_option(CLI::App* cmd, int& threads) {
  cmd->add_option("--threads", threads, "worker threads (0: all cores)")->check(CLI::NonNegativeNumber);
}

void add_placement_options(CLI::App* cmd, Placement& p) {
  cmd->add_option("--device", p.device, "cpu | cuda (one GPU per rank under mpirun)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  cmd->add_option("--precision", p.precision, "fp32 | bf16 (bf16 needs --device cuda)")
      ->check(CLI::IsMember({"fp32", "bf16"}));
}

void place_model(layers::Transformer& model, const Placement& p, int local_rank, ops::AttentionKernel attention) {
  const Device::Kind kind = train::parse_device_kind(p.device);
  const train::Precision precision = train::parse_precision(p.precision);
  KV_CHECK(kind == Device::Kind::CUDA || precision == train::Precision::FP32, "--precision {}: bf16 needs --device cuda",
           p.precision);
  if (kind == Device::Kind::CPU) return;
  ops::set_attention_kernel(attention);
  model.to(device_runtime::select_cuda_device(local_rank, "--device cuda"), train::compute_dtype(precision));
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
