// Token shards in llm.c's format: a header of 256 little-endian int32 ([0] magic, [1] version,
// [2] token count), then the tokens: magic 20240520 / version 1 with uint16 tokens, or magic
// 20240801 / version 7 with uint32 tokens (vocabularies over 65536). Readers validate the header
// and the file size and memory-map the tokens.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvroute::data {

inline constexpr int32_t kShardMagicU16 = 20240520, kShardVersionU16 = 1;
inline constexpr int32_t kShardMagicU32 = 20240801, kShardVersionU32 = 7;
inline constexpr size_t kShardHeaderInts = 256;

// Token width for a vocabulary: 2 bytes when every id fits in uint16, else 4.
int token_width_for_vocab(int64_t vocab_size);

// The bytes of a shard holding `tokens` (header + little-endian ids); errors name `path`.
std::string shard_bytes(const std::string& path, const std::vector<int32_t>& tokens, int token_width);
// The 1024-byte header of a shard of `count` tokens of `token_width` bytes.
std::string shard_header(const std::string& path, int64_t count, int token_width);
// Tokens as a shard's payload bytes (uint16 or int32), appended to `out`; errors name `path`.
void append_shard_tokens(const std::string& path, const int32_t* tokens, size_t n, int token_width, std::string& out);
// Writes `tokens` to path atomically (io::write_file_atomic: a crash never leaves a half shard).
void write_shard(const std::string& path, const std::vector<int32_t>& tokens, int token_width);

// A validated, memory-mapped shard.
class Shard {
 public:
  explicit Shard(const std::string& path);
  ~Shard();
  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&&) = delete;
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  int64_t size() const { return count_; }
  int token_width() const { return width_; }
  const std::string& path() const { return path_; }
  int32_t at(int64_t i) const {
    return width_ == 2 ? static_cast<const uint16_t*>(tokens_)[i] : static_cast<int32_t>(static_cast<const uint32_t*>(tokens_)[i]);
  }
  // Copies tokens [begin, begin + n) into out (as int32).
  void read(int64_t begin, int64_t n, int32_t* out) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t map_bytes_ = 0;
  const void* tokens_ = nullptr;
  int64_t count_ = 0;
  int width_ = 2;
};

// Shards in DIR named PREFIX_NNNNNN.bin, sorted; an error naming DIR when there are none.
std::vector<std::string> list_shards(const std::string& dir, const std::string& prefix);

}  // namespace kvroute::data
