// Files from users and files we must not lose. Inputs are read only from regular files (a FIFO
// would block forever, /dev/zero never ends, a directory is not data) with a size bound; outputs
// that matter (checkpoints, shards, run metadata) are written durably: data fsynced before the
// rename that publishes it, the directory fsynced after, so a crash or power loss leaves either
// the old file or the new one, never a torn one.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kvroute::io {

// Whether `path` exists (any kind of file), false when it cannot be told (no exception).
bool exists(const std::string& path);


inline constexpr uint64_t kMaxTextFile = uint64_t{1} << 30;  // 1 GiB: configs, JSON, tokenizer files

// Opens `path` for reading and checks it is a regular file (not a FIFO, device or directory);
// returns the descriptor and sets `size`. Errors name the path.
int open_regular(const std::string& path, uint64_t& size);

// The whole content of a regular file of at most `max_bytes`; errors name the path.
std::string read_file(const std::string& path, uint64_t max_bytes = kMaxTextFile);

// Writes `data` to `path` (created or truncated) and fsyncs it; errors name the path and errno
// (a full disk or a file-size limit is an error, not a short file).
void write_file_durable(const std::string& path, std::string_view data);

// write_file_durable to a private temporary file beside `path`, then rename over `path` and fsync
// the directory. Refuses (check_output_file) a `path` that is not a regular file.
void write_file_atomic(const std::string& path, std::string_view data);

// A file inside a StagedDirectory: written (errors name the path) but not fsynced one by one;
// publish() makes every file of the directory durable with one syncfs, so a directory of many
// small files (shards) costs one sync, not one per file.
void write_file_staged(const std::string& path, std::string_view data);

// An output must never write into or replace what is not of its kind: these refuse an existing
// `path` that is not a regular file (a FIFO, device, socket, directory or symbolic link), resp.
// not a directory (a symbolic link to one included: replacing the link would strand its target).
// Absent is fine. Errors name the path and what it is.
void check_output_file(const std::string& path);
void check_output_directory(const std::string& path);

// A directory written in full, then published under `target` in one rename: the one protocol for
// prepared data, checkpoints and exports. The staging directory is private and beside `target`
// (same file system); publish() syncs what was written into it (syncfs) and the directory,
// swaps the staging directory into place (one atomic RENAME_EXCHANGE where the file system has it,
// else the old copy is moved aside first), fsyncs the parent and removes the old copy, so at every
// moment `target` is the complete old copy or the complete new one (or, without the exchange,
// briefly absent). An unpublished
// staging directory is removed by the destructor (a failed or interrupted write leaves nothing).
class StagedDirectory {
 public:
  explicit StagedDirectory(const std::string& target);  // check_output_directory(target); parent must exist
  ~StagedDirectory();
  StagedDirectory(const StagedDirectory&) = delete;
  StagedDirectory& operator=(const StagedDirectory&) = delete;
  const std::string& path() const { return staging_; }
  void publish();

 private:
  std::string target_, staging_;
  bool published_ = false;
};

// True for the names StagedDirectory and write_file_atomic give their temporary and set-aside
// copies (a process killed mid-write leaves them; their owner may remove them).
bool is_staging_name(const std::string& name);

// A file written with write(2): no user-space buffer to lose, every failure (a full disk, a
// file-size limit) an error naming the path. `sync()` makes what was written durable.
class OutputFile {
 public:
  enum class Mode { Truncate, Append };
  OutputFile() = default;
  OutputFile(const std::string& path, Mode mode);
  ~OutputFile();
  OutputFile(OutputFile&& other) noexcept;
  OutputFile& operator=(OutputFile&& other) noexcept;
  OutputFile(const OutputFile&) = delete;
  OutputFile& operator=(const OutputFile&) = delete;
  bool is_open() const { return fd_ >= 0; }
  void write(const void* data, size_t n);
  void write(std::string_view text) { write(text.data(), text.size()); }
  void write_at(uint64_t offset, const void* data, size_t n);  // pwrite: e.g. a header once its count is known
  void sync();   // fsync
  void close(bool sync = true);  // (sync +) close; errors name the path

 private:
  std::string path_;
  int fd_ = -1;
};

// fsyncs a file or a directory (its entries: creations, renames, removals).
void fsync_path(const std::string& path);

// The directory part of a path ("." for a bare name).
std::string parent_dir(const std::string& path);

}  // namespace kvroute::io
