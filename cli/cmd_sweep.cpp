// `kvroute sweep STUDY.yaml`: a grid of training runs x retention evaluations (eval/sweep.h).
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/sweep.h"

namespace kvroute::cli {

namespace {

struct Args {
  std::string study;
  int threads = 0;
  bool report_only = false;
};

int run(const Args& a) {
  eval::Study study = eval::load_study(a.study);
  if (a.report_only) {
    eval::report_study(study);
    return 0;
  }
  add_threads_override(study.overrides, a.threads);
  std::unique_ptr<dist::Communicator> comm = dist::make_communicator(dist::Backend::Auto);
  return on_all_ranks(*comm, [&] {
    return eval::run_study(study, *comm) ? 0 : 130;  // 130: interrupted, as `kvroute train`
  });
}

}  // namespace

void add_sweep_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("sweep", "run a study: a grid of training runs x retention evaluations");
  cmd->add_option("study", args->study, "study file (YAML), e.g. experiments/quickstart.yaml")->required();
  add_threads_option(cmd, args->threads);
  cmd->add_flag("--report-only", args->report_only,
                "rewrite report.md and plot.png from the study's results.csv (no training or evaluation)");
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace kvroute::cli
