// The kvroute executable: one binary, one subcommand per file (cmd_*.cpp, registered through
// commands.h). Every failure ends in a one-line "kvroute: error: ..." on stderr and a non-zero exit.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>

#include "cli/commands.h"
#include "core/error.h"
#include "core/threading.h"
#include "distributed/communicator.h"

namespace {

// The subcommand the user named (for the --help hint), or nothing.
std::string subcommand_name(const CLI::App& app) {
  for (const CLI::App* sub : app.get_subcommands()) {
    std::string name = sub->get_name();
    for (const CLI::App* nested : sub->get_subcommands()) name += " " + nested->get_name();
    return name;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  kvroute::bound_openmp_spin(argv);  // may re-execute the program once, before anything else runs
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
  add_export_command(app, exit_code);
  add_memory_command(app, exit_code);
  try {
    app.parse(argc, argv);  // runs the chosen command's callback
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);  // --help: the usage text, exit 0
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // A bad flag or value: one line in the common format, exit 2 (the usual code for bad usage).
    if (kvroute::dist::launcher_rank() == 0)
      kvroute::print_error(fmt::format("{} (see kvroute {} --help)", e.what(), subcommand_name(app)));
    return 2;
  } catch (const std::exception& e) {
    // Before a communicator exists (a config or flag error): every rank read the same command line
    // and files, so under mpirun only rank 0 prints the line (mpirun reports the other exits).
    if (kvroute::dist::launcher_rank() == 0) kvroute::print_error(kvroute::error_text(e));
    return 1;
  }
  return exit_code;
}
