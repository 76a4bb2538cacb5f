// What the subcommands share: the --threads and --device/--precision options, running a command on
// every rank (a failure on one ends them all), writing result files. Each subcommand lives in its
// own file (cmd_*.cpp) and registers itself through commands.h.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>

#include "distributed/communicator.h"
#include "kernels/ops.h"
#include "layers/transformer.h"
#include "train/config.h"

namespace kvroute::cli {

// A number in [lo, hi], checked on the text before conversion: NaN, inf and trailing characters are
// refused (CLI::Range lets NaN through, std::stoi accepts "1x"). Works for integer options too.
CLI::Validator bounded(double lo, double hi);

// A comma-separated list of layer indices ("0,3,7"), every item a whole number in [0, 4096).
std::vector<int> parse_layer_list(const std::string& flag, const std::string& text);
// The validator of such a list: no empty item, no layer twice ("0,1,1" is a typo, not a set).
CLI::Validator layer_list();
// A comma-separated list of numbers, each in [lo, hi]: no empty item ("0.5,,1"), no NaN; for an
// option taken as text (repeatable) and split with split_numbers, so every item is checked as
// given (CLI11's own delimiter drops empty items).
CLI::Validator number_list(double lo, double hi, bool integers = false);
std::vector<double> split_numbers(const std::vector<std::string>& texts);
// A byte size ("5GB", "512MiB", "1e9"; core/text.h).
CLI::Validator byte_size();
// A value that must not be empty (a path given as '').
CLI::Validator non_empty();
// An input path that exists (a file or a directory): a usage error when it does not.
CLI::Validator existing_path();
// A bad combination of flags found after parsing: a usage error (exit 2) like a bad value.
[[noreturn]] void usage_error(const std::string& flag, const std::string& why);

// --threads N (0: all cores; at most 1024), applied by the command itself.
void add_threads_option(CLI::App* cmd, int& threads);
// For commands that train: --threads N > 0 becomes the override train.threads=N.
void add_threads_override(std::vector<std::string>& overrides, int threads);
// Refuses a section.key given twice among a command line's overrides (one error line naming both).
void check_distinct_overrides(const std::vector<std::string>& overrides);

// Where an inference command runs the model: --device cpu|cuda, --precision fp32|bf16.
struct Placement {
  Device::Kind device = Device::Kind::CPU;
  train::Precision precision = train::Precision::FP32;
};
void add_placement_options(CLI::App* cmd, Placement& placement);
// Moves the model to the GPU of this local rank and to the precision asked for (or leaves it on
// the CPU in fp32); one-line errors for bf16 on the CPU and for a missing GPU. On a GPU, attention
// runs with the kernel the run was configured with (train.attention).
void place_model(layers::Transformer& model, const Placement& placement, int local_rank,
                 ops::AttentionKernel attention);

// Runs fn on this rank. A failure prints "kvroute: error: ..." ("kvroute: error: rank R: ..." under
// mpirun) and, under mpirun, ends every rank at once (MPI_Abort), so none waits forever in a
// collective.
int on_all_ranks(dist::Communicator& comm, const std::function<int()>& fn);

// Writes `text` to `path` atomically (a temporary file renamed into place); a one-line error names
// the path when it fails.
void write_file(const std::string& path, const std::string& text);

}  // namespace kvroute::cli
