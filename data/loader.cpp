#include "data/loader.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "core/error.h"
#include "core/rng.h"
#include "data/prepare.h"
#include "data/sft.h"

namespace kvroute::data {

TokenStream::TokenStream(const std::string& dir, const std::string& split, int64_t vocab_size) : vocab_size_(vocab_size) {
  for (const std::string& path : list_shards(dir, split)) {
    starts_.push_back(total_);
    shards_.emplace_back(path);
    total_ += shards_.back().size();
  }
}

void TokenStream::read(int64_t begin, int64_t n, int32_t* out) const {
  KV_CHECK(begin >= 0 && begin + n <= total_, "data: read [{}, {}) past the end of {} tokens", begin, begin + n, total_);
  size_t s = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), begin) - starts_.begin()) - 1;
  while (n > 0) {
    const int64_t local = begin - starts_[s];
    const int64_t take = std::min(n, shards_[s].size() - local);
    shards_[s].read(local, take, out);
    if (vocab_size_ > 0) {
      for (int64_t i = 0; i < take; ++i) {
        KV_CHECK(out[i] >= 0 && out[i] < vocab_size_,
                 "{}: token {} at position {} is outside the model's vocabulary [0, {}) (shards prepared with another "
                 "tokenizer?)", shards_[s].path(), out[i], local + i, vocab_size_);
      }
    }
    out += take;
    begin += take;
    n -= take;
    ++s;
  }
}

namespace {

class WindowSource final : public RowSource {
 public:
  WindowSource(const std::string& dir, const std::string& split, int64_t seq_len, int64_t vocab_size)
      : stream_(dir, split, vocab_size), seq_len_(seq_len), dir_(dir), split_(split) {}
  int64_t rows() const override { return stream_.size() > 0 ? (stream_.size() - 1) / seq_len_ : 0; }
  int64_t seq_len() const override { return seq_len_; }
  void read_row(int64_t i, int32_t* inputs, int32_t* targets, int32_t*, int32_t*) const override {
    std::vector<int32_t> window(static_cast<size_t>(seq_len_ + 1));
    stream_.read(i * seq_len_, seq_len_ + 1, window.data());
    std::copy(window.begin(), window.end() - 1, inputs);
    std::copy(window.begin() + 1, window.end(), targets);
  }
  std::string describe() const override {
    return fmt::format("{}: the {} split has {} tokens = {} windows of {}+1", dir_, split_, stream_.size(), rows(),
                       seq_len_);
  }

 private:
  TokenStream stream_;
  int64_t seq_len_;
  std::string dir_, split_;
};

class ExampleSource final : public RowSource {
 public:
  ExampleSource(const std::string& path, int64_t seq_len, int64_t vocab_size, int32_t pad, bool pack)
      : examples_(read_sft_file(path, vocab_size)), seq_len_(seq_len), pad_(pad), path_(path) {
    if (!pack) return;
    std::vector<int64_t> lengths;
    lengths.reserve(examples_.size());
    for (const SftExample& e : examples_) lengths.push_back(sft_packed_length(e, seq_len));
    packs_ = pack_sft_rows(lengths, seq_len);
    packed_ = true;
  }
  int64_t rows() const override {
    return static_cast<int64_t>(packed_ ? packs_.size() : examples_.size());
  }
  int64_t seq_len() const override { return seq_len_; }
  bool packed() const override { return packed_; }
  void read_row(int64_t i, int32_t* inputs, int32_t* targets, int32_t* positions, int32_t* key_begin) const override {
    if (!packed_) {
      sft_row(examples_[static_cast<size_t>(i)], seq_len_, pad_, kIgnoreIndex, inputs, targets);
      return;
    }
    std::vector<const SftExample*> group;
    for (int64_t e : packs_[static_cast<size_t>(i)]) group.push_back(&examples_[static_cast<size_t>(e)]);
    sft_packed_row(group, seq_len_, pad_, kIgnoreIndex, inputs, targets, positions, key_begin);
  }
  std::string describe() const override {
    return packed_ ? fmt::format("{}: {} examples packed into {} rows of {}", path_, examples_.size(), packs_.size(),
                                 seq_len_)
                   : fmt::format("{}: {} examples", path_, examples_.size());
  }

 private:
  std::vector<SftExample> examples_;
  int64_t seq_len_;
  int32_t pad_;
  std::string path_;
  bool packed_ = false;
  std::vector<std::vector<int64_t>> packs_;  // packed rows: example indices
};

Batch read_rows(const RowSource& source, const std::vector<int64_t>& ids) {
  const int64_t rows = static_cast<int64_t>(ids.size()), seq_len = source.seq_len();
  Batch batch;
  batch.inputs = Tensor::empty({rows, seq_len}, DType::I32);
  batch.targets = Tensor::empty({rows, seq_len}, DType::I32);
  if (source.packed()) {
    batch.positions = Tensor::empty({rows, seq_len}, DType::I32);
    batch.key_begin = Tensor::empty({rows, seq_len}, DType::I32);
  }
  auto row_of = [&](Tensor& t, int64_t r) { return t.defined() ? t.data<int32_t>() + r * seq_len : nullptr; };
  for (int64_t r = 0; r < rows; ++r) {
    source.read_row(ids[static_cast<size_t>(r)], row_of(batch.inputs, r), row_of(batch.targets, r),
                    row_of(batch.positions, r), row_of(batch.key_begin, r));
  }
  return batch;
}

}  // namespace

std::unique_ptr<RowSource> make_row_source(const std::string& dir, const std::string& split, int64_t seq_len,
                                           int64_t vocab_size, bool pack) {
  KV_CHECK(seq_len > 0, "data loader: seq_len {} must be > 0", seq_len);
  std::error_code ec;
  if (std::filesystem::exists(dir + "/data.json", ec)) {
    const DataInfo info = read_data_info(dir);
    if (info.format == "sft") {
      return std::make_unique<ExampleSource>(dir + "/sft_" + split + ".bin", seq_len, vocab_size,
                                             static_cast<int32_t>(info.eot_id), pack);
    }
  }
  KV_CHECK(!pack, "data.pack: {} holds token shards, which are already full rows; packing is for supervised "
           "examples (a directory prepared with --format sft)", dir);
  return std::make_unique<WindowSource>(dir, split, seq_len, vocab_size);
}


DataLoader::DataLoader(const Options& options) : options_(options) {
  KV_CHECK(options.batch_size > 0 && options.seq_len > 0, "data loader: batch_size {} and seq_len {} must be > 0",
           options.batch_size, options.seq_len);
  source_ = make_row_source(options.dir, "train", options.seq_len, options.vocab_size, options.pack);
  KV_CHECK(options.world_size > 0 && options.rank >= 0 && options.rank < options.world_size,
           "data loader: rank {} outside world size {}", options.rank, options.world_size);
  windows_ = source_->rows();
  const int64_t global = options.batch_size * options.world_size;
  steps_per_epoch_ = windows_ / global;
  KV_CHECK(steps_per_epoch_ > 0 && windows_ <= INT32_MAX, "{}, fewer than one global batch of {} x {} ranks",
           source_->describe(), options.batch_size, options.world_size);
  if (options_.prefetch) start_prefetch();
}

DataLoader::~DataLoader() { stop_prefetch(); }

const std::vector<int32_t>& DataLoader::permutation(int64_t epoch) const {
  // Called with perm_mutex_ held. Fisher-Yates with Philox(seed, stream = epoch): identical on
  // every rank and machine.
  if (perm_epoch_ != epoch) {
    Philox rng(options_.seed, static_cast<uint64_t>(epoch));
    perm_ = shuffled_indices<int32_t>(windows_, rng);
    perm_epoch_ = epoch;
  }
  return perm_;
}

Batch DataLoader::read_batch(const LoaderCursor& cursor) const {
  std::vector<int64_t> ids(static_cast<size_t>(options_.batch_size));
  {
    std::lock_guard<std::mutex> lock(perm_mutex_);
    const std::vector<int32_t>& perm = permutation(cursor.epoch);
    const int64_t base = cursor.position + options_.rank * options_.batch_size;
    for (int64_t j = 0; j < options_.batch_size; ++j) ids[static_cast<size_t>(j)] = perm[static_cast<size_t>(base + j)];
  }
  Batch batch = read_rows(*source_, ids);
  batch.cursor = cursor;
  return batch;
}

LoaderCursor DataLoader::advance(const LoaderCursor& cursor) const {
  LoaderCursor next = cursor;
  const int64_t global = options_.batch_size * options_.world_size;
  next.position += global;
  if (next.position + global > steps_per_epoch_ * global) {
    ++next.epoch;
    next.position = 0;
  }
  return next;
}

void DataLoader::start_prefetch() {
  stop_ = false;
  worker_error_ = nullptr;
  worker_ = std::thread([this] {
    LoaderCursor at;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      at = cursor_;
    }
    try {
      while (true) {
        Batch batch = read_batch(at);
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [this] { return stop_ || queue_.size() < 3; });
        if (stop_) return;
        queue_.push_back(std::move(batch));
        cv_.notify_all();
        at = advance(at);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      worker_error_ = std::current_exception();
      cv_.notify_all();
    }
  });
}

void DataLoader::stop_prefetch() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
    cv_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
  queue_.clear();
}

Batch DataLoader::next() {
  if (!options_.prefetch) {
    Batch batch = read_batch(cursor_);
    cursor_ = advance(cursor_);
    return batch;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [this] { return !queue_.empty() || worker_error_; });
  if (queue_.empty() && worker_error_) std::rethrow_exception(worker_error_);
  Batch batch = std::move(queue_.front());
  queue_.pop_front();
  cv_.notify_all();
  cursor_ = advance(batch.cursor);
  return batch;
}

LoaderCursor DataLoader::cursor() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return cursor_;
}

void DataLoader::set_cursor(const LoaderCursor& cursor) {
  const int64_t global = options_.batch_size * options_.world_size;
  KV_CHECK(cursor.epoch >= 0 && cursor.position >= 0 && cursor.position % global == 0 &&
               cursor.position + global <= steps_per_epoch_ * global,
           "data loader: cursor (epoch {}, position {}) is not a batch boundary of this data ({} windows, global batch {})",
           cursor.epoch, cursor.position, windows_, global);
  stop_prefetch();
  cursor_ = cursor;
  if (options_.prefetch) start_prefetch();
}

double validation_window_position(int64_t window) {
  // frac(w phi) in exact integer arithmetic: floor(2^64 / phi) as a 64-bit fixed-point fraction,
  // so the interleave is identical on every machine and never drifts with w.
  const uint64_t step = 0x9E3779B97F4A7C15ull;
  return static_cast<double>(static_cast<uint64_t>(window) * step) / 18446744073709551616.0;
}

ValidationLoader::ValidationLoader(const std::string& dir, int64_t batch_size, int64_t seq_len, int rank,
                                   int world_size, int64_t vocab_size, ValidationPart part)
    : source_(make_row_source(dir, "val", seq_len, vocab_size)),
      batch_size_(batch_size),
      seq_len_(seq_len),
      rank_(rank),
      world_size_(world_size) {
  const int64_t all = source_->rows();
  KV_CHECK(all > 0, "{}, not one row", source_->describe());
  KV_CHECK(part.begin >= 0 && part.begin < part.end && part.end <= 1, "validation part [{}, {}): not a part of [0, 1)",
           part.begin, part.end);
  for (int64_t w = 0; w < all; ++w) {
    const double u = validation_window_position(w);
    if (part.whole() || (u >= part.begin && u < part.end)) rows_.push_back(w);
  }
  windows_ = static_cast<int64_t>(rows_.size());
  KV_CHECK(windows_ > 0, "{}: the validation part [{:g}, {:g}) of its {} rows holds none (a larger validation split "
           "or another split fraction)", source_->describe(), part.begin, part.end, all);
}

bool ValidationLoader::next(Batch& batch) {
  const int64_t first_global = step_ * batch_size_ * world_size_;
  if (first_global >= windows_) return false;
  const int64_t begin = first_global + rank_ * batch_size_;
  const int64_t end = std::min(windows_, begin + batch_size_);
  std::vector<int64_t> ids;
  for (int64_t w = begin; w < end; ++w) ids.push_back(rows_[static_cast<size_t>(w)]);
  batch = read_rows(*source_, ids);
  batch.cursor = {0, first_global};
  ++step_;
  return true;
}

}  // namespace kvroute::data
