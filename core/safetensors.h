// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the raw
// little-endian data. Used for checkpoints (Hugging Face loads them as is) and test fixtures.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace kvroute::safetensors {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct File {
  NamedTensors tensors;  // in file order
  std::map<std::string, std::string> metadata;
  std::string path;

  // The tensor called `name`; an error naming the file when it is missing.
  const Tensor& get(const std::string& name) const;
  // ... and an error naming the file when it is not of `dtype`.
  const Tensor& get(const std::string& name, DType dtype) const;
};

// Writes `tensors` (any device/strides; stored contiguous, in the given order) and fsyncs the file.
// Throws an error naming the file on any I/O failure (a full disk included). Names must be unique.
void save(const std::string& path, const NamedTensors& tensors, const std::map<std::string, std::string>& metadata = {});

// Reads and validates a whole regular file: header length (<= 100 MiB) and JSON (bounded nesting,
// no duplicate names), known dtypes, shapes whose sizes do not overflow, offsets inside the data
// section, size = numel x element size, and tensors that tile the data section exactly (no
// overlap, gap or trailing bytes). Every problem is an error naming the file.
File load(const std::string& path);

}  // namespace kvroute::safetensors
