// safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}}, then the raw
// little-endian data. Used for checkpoints (Hugging Face loads them as is) and test fixtures.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "core/io.h"
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

// One tensor's place in a file: its dtype, shape and bytes [begin, begin + nbytes) of the data section.
struct Entry {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0, nbytes = 0;
};

// A safetensors file opened for reading tensor by tensor: the constructor reads and validates the
// header only (as load() does); read() fetches one tensor with positioned reads, so a caller that
// converts and drops each tensor holds one at a time, whatever the file's size. Not mapped: a file
// truncated while it is read gives an error naming it, not a SIGBUS.
class Reader {
 public:
  explicit Reader(const std::string& path);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<Entry>& entries() const { return entries_; }  // in header order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const Entry* find(const std::string& name) const;  // null when absent
  Tensor read(const Entry& entry) const;             // a host tensor of the entry's dtype and shape

 private:
  void read_exactly(uint64_t offset, void* out, uint64_t nbytes) const;
  void parse_header(const std::string& bytes, uint64_t file_size);

  std::string path_;
  int fd_ = -1;
  uint64_t data_start_ = 0;
  std::vector<Entry> entries_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file tensor by tensor: the header (every name, dtype and shape, in the
// order given) at construction, then each tensor's data by write(), in that order, so a writer
// holds one tensor at a time. close() fsyncs; a writer destroyed before close() leaves an
// incomplete file (callers write into a staging directory). Names must be unique.
class Writer {
 public:
  Writer(const std::string& path, std::vector<Entry> entries, const std::map<std::string, std::string>& metadata = {});
  // The next entry's tensor (any device/strides; stored contiguous): its dtype and shape must match.
  void write(const Tensor& tensor);
  void close();  // after the last entry

 private:
  std::string path_;
  std::vector<Entry> entries_;
  size_t next_ = 0;
  io::OutputFile out_;
};

// Reads and validates a whole regular file: header length (<= 100 MiB) and JSON (bounded nesting,
// no duplicate names), known dtypes, shapes whose sizes do not overflow, offsets inside the data
// section, size = numel x element size, and tensors that tile the data section exactly (no
// overlap, gap or trailing bytes). Every problem is an error naming the file.
File load(const std::string& path);

}  // namespace kvroute::safetensors
