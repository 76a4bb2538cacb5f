// Distributed, resumable data loading over token shards. The train split is cut into windows of
// T+1 tokens (window w starts at token w*T); each epoch visits the windows in an order shuffled by
// Philox(seed, epoch), the same on every rank. A global batch is world x B windows; rank r takes
// rows [r*B, (r+1)*B) of it, so ranks never share a window and no window repeats within an epoch.
// The cursor (epoch, windows consumed) is independent of the world size: a run saved at one
// world size resumes at another with the same global batch. A background thread prefetches.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "data/shard.h"

namespace kvroute::data {

// The train or val shards of a directory read as one token stream.
class TokenStream {
 public:
  // vocab_size > 0: every token read is checked to be below it (an error names the shard and the
  // token's position); 0: unchecked.
  TokenStream(const std::string& dir, const std::string& split, int64_t vocab_size = 0);
  int64_t size() const { return total_; }
  void read(int64_t begin, int64_t n, int32_t* out) const;  // may cross shard boundaries

 private:
  std::vector<Shard> shards_;
  std::vector<int64_t> starts_;  // first token index of each shard
  int64_t total_ = 0;
  int64_t vocab_size_ = 0;
};

// What a loader draws rows from: windows of seq_len + 1 tokens of a token stream (pre-training
// shards), or one supervised example per row (sft_*.bin, data/sft.h; prompt targets and padding
// set to kIgnoreIndex).
inline constexpr int32_t kIgnoreIndex = -100;
class RowSource {
 public:
  virtual ~RowSource() = default;
  virtual int64_t rows() const = 0;
  virtual int64_t seq_len() const = 0;
  // Row i: seq_len inputs and seq_len targets; for packed rows also each token's position in its
  // sequence and its sequence's first position (key_begin), else those two are not written.
  virtual void read_row(int64_t i, int32_t* inputs, int32_t* targets, int32_t* positions, int32_t* key_begin) const = 0;
  virtual bool packed() const { return false; }
  virtual std::string describe() const = 0;  // for errors: "N tokens = M windows of T+1" ...
};
// The rows of DIR's `split` (train | val): sft_<split>.bin when DIR/data.json says "format": "sft",
// else the token shards. vocab_size > 0: every token checked against it. pack: supervised
// examples packed several to a row (data/sft.h); an error for token shards.
std::unique_ptr<RowSource> make_row_source(const std::string& dir, const std::string& split, int64_t seq_len,
                                           int64_t vocab_size = 0, bool pack = false);

struct LoaderCursor {
  int64_t epoch = 0;
  int64_t position = 0;  // global windows already consumed in this epoch
  bool operator==(const LoaderCursor&) const = default;
};

struct Batch {
  Tensor inputs, targets;  // [B, T] i32: targets are inputs shifted by one token (kIgnoreIndex: not scored)
  Tensor positions, key_begin;  // packed rows: [B, T] i32 (layers::Positions); else undefined
  LoaderCursor cursor;      // where this batch was read
};

class DataLoader {
 public:
  struct Options {
    std::string dir;
    int64_t batch_size = 8;  // per rank
    int64_t seq_len = 256;
    int rank = 0;
    int world_size = 1;
    uint64_t seed = 0;
    bool prefetch = true;
    int64_t vocab_size = 0;  // > 0: tokens at or above it are an error naming the shard
    bool pack = false;       // supervised examples packed several to a row (data.pack)
  };
  explicit DataLoader(const Options& options);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  Batch next();
  LoaderCursor cursor() const;          // the cursor of the batch next() returns
  void set_cursor(const LoaderCursor& cursor);
  int64_t windows() const { return windows_; }
  int64_t steps_per_epoch() const { return steps_per_epoch_; }
  // Read one batch at a cursor without moving (used by the prefetch thread and by tests).
  Batch read_batch(const LoaderCursor& cursor) const;
  LoaderCursor advance(const LoaderCursor& cursor) const;

 private:
  const std::vector<int32_t>& permutation(int64_t epoch) const;
  void start_prefetch();
  void stop_prefetch();

  Options options_;
  std::unique_ptr<RowSource> source_;
  int64_t windows_ = 0, steps_per_epoch_ = 0;
  mutable std::mutex perm_mutex_;
  mutable int64_t perm_epoch_ = -1;
  mutable std::vector<int32_t> perm_;

  LoaderCursor cursor_;
  // Prefetch: batches from cursor_ onwards.
  std::thread worker_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Batch> queue_;
  bool stop_ = false;
  std::exception_ptr worker_error_;
};

// A part of the val split: [begin, end) of an interleave of its windows. Window w belongs to the
// part when begin <= frac(w x 0.6180339887...) < end (the golden-ratio sequence, evenly spread at
// every scale), so parts [0, f) and [f, 1) are disjoint, cover the split, hold about f and 1 - f
// of its windows, and both sample every document of it: a split into a first and a second half
// put different sources (speeches, a novel, e-mails) in the two parts, and the planner chose on
// one kind of text what was reported on another.
double validation_window_position(int64_t window);
struct ValidationPart {
  double begin = 0.0, end = 1.0;
  bool whole() const { return begin == 0.0 && end == 1.0; }
};

// Walks the val split (or a part of it) once, in order: batch g of rank r holds windows
// g*world*B + r*B + [0, B) of the part's windows (in split order), fewer (or none) at the end.
class ValidationLoader {
 public:
  ValidationLoader(const std::string& dir, int64_t batch_size, int64_t seq_len, int rank = 0, int world_size = 1,
                   int64_t vocab_size = 0, ValidationPart part = {});
  bool next(Batch& batch);  // false when the split is exhausted
  void reset() { step_ = 0; }
  int64_t windows() const { return windows_; }  // in the part

 private:
  std::unique_ptr<RowSource> source_;
  int64_t batch_size_, seq_len_, windows_;
  std::vector<int64_t> rows_;  // the part's windows, in split order
  int rank_, world_size_;
  int64_t step_ = 0;
};

}  // namespace kvroute::data
