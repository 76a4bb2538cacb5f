// The kvroute executable: one binary, one subcommand per file (cmd_*.cpp, registered through
// commands.h). Every failure ends in a one-line "kvroute: error: ..." on stderr and a non-zero exit.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  using namespace kvroute::cli;
  CLI::App app{"kvroute: training with Stochastic KV Routing (R-CLA)"};
  app.require_subcommand(1);
  int exit_code = 0;
  add_tokenizer_command(app, exit_code);
  add_prepare_command(app, exit_code);
  add_train_command(app, exit_code);
  add_eval_command(app, exit_code);
  add_generate_command(app, exit_code);
  add_sweep_command(app, exit_code);
  add_bench_command(app, exit_code);
  try {
    app.parse(argc, argv);  // runs the chosen command's callback
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kvroute: error: %s\n", e.what());
    return 1;
  }
  return exit_code;
}
