// kvroute checkpoints out as Hugging Face model directories (kvroute export).
#pragma once

#include <cstdint>
#include <string>

#include "core/dtype.h"

namespace kvroute::train::hf {

struct ExportOptions {
  DType dtype = DType::F32;  // F32, BF16 or F16
  int64_t shard_bytes = int64_t{5} << 30;
  bool overwrite = false;
};

// Writes CHECKPOINT's model as a Hugging Face directory OUT: config.json, generation_config.json,
// model.safetensors (or shards + index), and the tokenizer files of data.tokenizer when they
// exist. Written to OUT.tmp and renamed; an existing OUT is replaced only with `overwrite`.
// Returns a one-line summary.
std::string export_checkpoint(const std::string& checkpoint_dir, const std::string& out_dir,
                              const ExportOptions& options);

}  // namespace kvroute::train::hf
