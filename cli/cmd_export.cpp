// `kvroute export CHECKPOINT --out DIR [--dtype f32|bf16|f16] [--shard-size 5GB] [--overwrite]`: a
// checkpoint as a Hugging Face model directory that transformers' from_pretrained of the model's
// architecture (Qwen3/Llama/Mistral) loads unchanged (train/hf.h).
#include <cmath>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/error.h"
#include "train/hf.h"

namespace kvroute::cli {

namespace {

struct Args {
  std::string checkpoint, out, dtype = "f32", shard_size = "5GB";
  bool overwrite = false;
};

// "5GB", "500MB", "2GiB", "1048576": a byte count (decimal and binary units, as transformers
// accepts for max_shard_size).
int64_t parse_size(const std::string& text) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (const std::exception&) {
    KV_FAIL("--shard-size '{}': expected a size such as 5GB, 500MB or 2GiB", text.substr(0, 60));
  }
  const std::string unit = text.substr(pos);
  double scale = 0;
  for (const auto& [name, s] : {std::pair<const char*, double>{"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
                                {"TB", 1e12}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0}}) {
    if (unit == name) scale = s;
  }
  KV_CHECK(scale > 0 && std::isfinite(value) && value > 0 && value * scale <= 1e15,
           "--shard-size '{}': expected a size such as 5GB, 500MB or 2GiB", text.substr(0, 60));
  return static_cast<int64_t>(value * scale);
}

int run(const Args& a) {
  train::hf::ExportOptions options;
  KV_CHECK(a.dtype == "f32" || a.dtype == "bf16" || a.dtype == "f16", "--dtype '{}': expected f32, bf16 or f16",
           a.dtype.substr(0, 60));
  options.dtype = parse_dtype(a.dtype);
  options.shard_bytes = parse_size(a.shard_size);
  options.overwrite = a.overwrite;
  std::printf("%s\n", train::hf::export_checkpoint(a.checkpoint, a.out, options).c_str());
  return 0;
}

}  // namespace

void add_export_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("export", "write a checkpoint as a Hugging Face model directory");
  cmd->add_option("checkpoint", args->checkpoint, "checkpoint directory (runs/NAME/checkpoints/step_N)")->required();
  cmd->add_option("--out", args->out, "output directory")->required();
  cmd->add_option("--dtype", args->dtype, "weight dtype: f32 (default), bf16 or f16");
  cmd->add_option("--shard-size", args->shard_size, "largest safetensors file, e.g. 5GB (default), 500MB, 2GiB");
  cmd->add_flag("--overwrite", args->overwrite, "replace an existing --out directory");
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace kvroute::cli
