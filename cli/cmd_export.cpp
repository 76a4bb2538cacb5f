// `kvroute export CHECKPOINT --out DIR [--dtype f32|bf16|f16] [--shard-size 5GB] [--overwrite]`: a
// checkpoint as a Hugging Face model directory that transformers' from_pretrained of the model's
// architecture (Qwen3/Llama/Mistral) loads unchanged (train/export.h, train/hf.h).
#include <cmath>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "core/text.h"
#include "core/error.h"
#include "train/export.h"

namespace kvroute::cli {

namespace {

struct Args {
  std::string checkpoint, out, dtype = "f32", shard_size = "5GB";
  bool overwrite = false;
};

int run(const Args& a) {
  train::hf::ExportOptions options;
  KV_CHECK(a.dtype == "f32" || a.dtype == "bf16" || a.dtype == "f16", "--dtype '{}': expected f32, bf16 or f16",
           kvroute::excerpt(a.dtype, 60));
  options.dtype = parse_dtype(a.dtype);
  options.shard_bytes = parse_byte_size("--shard-size", a.shard_size);
  options.overwrite = a.overwrite;
  std::printf("%s\n", train::hf::export_checkpoint(a.checkpoint, a.out, options).c_str());
  return 0;
}

}  // namespace

void add_export_command(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<Args>();
  auto* cmd = app.add_subcommand("export", "write a checkpoint as a Hugging Face model directory");
  cmd->add_option("checkpoint", args->checkpoint, "checkpoint directory (runs/NAME/checkpoints/step_N)")->required();
  cmd->add_option("--out", args->out, "output directory")->required()->check(non_empty());
  cmd->add_option("--dtype", args->dtype, "weight dtype: f32 (default), bf16 or f16")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  cmd->add_option("--shard-size", args->shard_size, "largest safetensors file, e.g. 5GB (default), 500MB, 2GiB")
      ->check(byte_size());
  cmd->add_flag("--overwrite", args->overwrite, "replace an existing --out directory");
  cmd->callback([args, &exit_code] { exit_code = run(*args); });
}

}  // namespace kvroute::cli
