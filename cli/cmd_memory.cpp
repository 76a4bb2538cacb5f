// `kvroute memory CONFIG [overrides...] [--world-size N] [--device cpu|h100|h200]`: the bytes a
// training run needs per rank (weights, master weights, gradients, optimizer state, activations
// with and without recomputation, KV cache), whether it fits the device and, if not, which
// setting would make it fit (train/memory_plan.h). Nothing is allocated, so it answers for models
// far larger than the machine. Named "memory", not "plan": plans here are routing plans.
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "train/init_from.h"
#include "train/memory_plan.h"

namespace kvroute::cli {

namespace {

struct Args {
  std::string config;
  std::vector<std::string> overrides;
  int world_size = 1;
  std::string device;  // empty: the config's train.device (cpu, or h100 for cuda)
};

int run(const Args& a) {
  check_distinct_overrides(a.overrides);
  const train::RunConfig config = train::load_run_config(a.config, a.overrides);
  const std::string device =
      !a.device.empty() ? a.device : (config.train.device == Device::Kind::CUDA ? "h100" : "cpu");
  const train::MemoryDevice target = train::memory_device(device);
  const train::MemoryPlan plan = train::plan_memory(config, a.world_size);
  std::printf("%s", train::format_memory_plan(plan, config, target).c_str());
  return 0;
}

}  // namespace

void add_memory_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("memory", "the memory a training run needs per rank, and whether it fits a device");
  cmd->add_option("config", args->config, "run config (YAML)")->required();
  cmd->add_option("overrides", args->overrides, "section.key=value overrides");
  cmd->add_option("--world-size", args->world_size, "data-parallel ranks (default 1)")->check(bounded(1, 1 << 20));
  cmd->add_option("--device", args->device, "cpu (this machine), h100 or h200 (default: h100 for train.device cuda)")
      ->check(CLI::IsMember({"cpu", "h100", "h200"}));
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace kvroute::cli
