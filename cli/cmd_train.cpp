// `kvroute train CONFIG [section.key=value ...] [--resume auto|DIR]`: one run from a YAML config,
// data-parallel under mpirun. Exit code 130 when SIGINT/SIGTERM stopped it (after a checkpoint).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "train/init_from.h"
#include "train/trainer.h"

namespace kvroute::cli {

namespace {

struct Args {
  std::string config;
  std::vector<std::string> overrides;
  std::string resume;
  int threads = 0;
};

int run(const Args& a) {
  check_distinct_overrides(a.overrides);
  std::vector<std::string> all = a.overrides;
  add_threads_override(all, a.threads);
  train::RunConfig config = train::load_run_config(a.config, all);
  std::unique_ptr<dist::Communicator> comm = dist::make_communicator(config.dist.backend);
  return on_all_ranks(*comm, [&] {
    if (comm->rank() == 0) {
      std::printf("kvroute train: %s -> %s (%s, %d rank%s)\n", a.config.c_str(), config.run_dir().c_str(),
                  comm->name().c_str(), comm->world_size(), comm->world_size() == 1 ? "" : "s");
    }
    train::TrainResult result = train::run_training(config, *comm, {a.resume, 0, false});
    return result.interrupted ? 130 : 0;
  });
}

}  // namespace

void add_train_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("train", "train a model from a YAML run config");
  cmd->add_option("config", args->config, "run config (YAML)")->required();
  cmd->add_option("overrides", args->overrides, "section.key=value overrides");
  cmd->add_option("--resume", args->resume, "auto (newest checkpoint of the run) or a checkpoint directory");
  add_threads_option(cmd, args->threads);
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace kvroute::cli
