// The subcommands of `kvroute`. Each add_*_command declares its options on `app` and a callback
// that runs the command when it was given; the callback stores the process exit code in
// `exit_code` and reports failures by throwing kvroute::Error (main prints the one-line error).
#pragma once

#include <CLI/CLI.hpp>

namespace kvroute::cli {

void add_tokenizer_command(CLI::App& app, int& exit_code);  // tokenizer train | encode
void add_prepare_command(CLI::App& app, int& exit_code);
void add_train_command(CLI::App& app, int& exit_code);
void add_eval_command(CLI::App& app, int& exit_code);
void add_generate_command(CLI::App& app, int& exit_code);
void add_sweep_command(CLI::App& app, int& exit_code);
void add_bench_command(CLI::App& app, int& exit_code);  // bench train | generate
void add_export_command(CLI::App& app, int& exit_code);
void add_memory_command(CLI::App& app, int& exit_code);  // memory CONFIG: bytes per rank, fits or not

}  // namespace kvroute::cli
