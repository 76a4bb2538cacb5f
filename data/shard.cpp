#include "data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/io.h"

namespace kvroute::data {

int token_width_for_vocab(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

std::string shard_header(const std::string& path, int64_t count, int token_width) {
  KV_CHECK(token_width == 2 || token_width == 4, "write_shard {}: token width must be 2 or 4, got {}", path,
           token_width);
  KV_CHECK(count >= 0 && count <= INT32_MAX, "write_shard {}: {} tokens do not fit the header", path, count);
  int32_t header[kShardHeaderInts] = {};
  header[0] = token_width == 2 ? kShardMagicU16 : kShardMagicU32;
  header[1] = token_width == 2 ? kShardVersionU16 : kShardVersionU32;
  header[2] = static_cast<int32_t>(count);
  return std::string(reinterpret_cast<const char*>(header), sizeof header);
}

void append_shard_tokens(const std::string& path, const int32_t* tokens, size_t n, int token_width, std::string& out) {
  const size_t at = out.size();
  out.resize(at + n * static_cast<size_t>(token_width));
  char* dst = out.data() + at;
  if (token_width == 2) {
    for (size_t i = 0; i < n; ++i) {
      KV_CHECK(tokens[i] >= 0 && tokens[i] < 65536, "write_shard {}: token {} does not fit uint16", path, tokens[i]);
      const uint16_t v = static_cast<uint16_t>(tokens[i]);
      std::memcpy(dst + 2 * i, &v, 2);
    }
  } else {
    std::memcpy(dst, tokens, n * 4);
  }
}

std::string shard_bytes(const std::string& path, const std::vector<int32_t>& tokens, int token_width) {
  std::string bytes = shard_header(path, static_cast<int64_t>(tokens.size()), token_width);
  append_shard_tokens(path, tokens.data(), tokens.size(), token_width, bytes);
  return bytes;
}

void write_shard(const std::string& path, const std::vector<int32_t>& tokens, int token_width) {
  io::write_file_atomic(path, shard_bytes(path, tokens, token_width));
}

Shard::Shard(const std::string& path) : path_(path) {
  uint64_t size = 0;
  const int fd = io::open_regular(path, size);  // a FIFO or device is an error, not a hang
  const size_t file_size = static_cast<size_t>(size);
  if (file_size < kShardHeaderInts * 4) {
    ::close(fd);
    KV_FAIL("{}: corrupt shard: {} bytes, shorter than the {}-byte header", path, file_size, kShardHeaderInts * 4);
  }
  map_ = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  KV_CHECK(map_ != MAP_FAILED, "{}: cannot map shard: {}", path, std::strerror(errno));
  map_bytes_ = file_size;
  const auto* header = static_cast<const int32_t*>(map_);
  auto fail = [&](const std::string& what) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    KV_FAIL("{}: corrupt shard: {}", path, what);
  };
  if (header[0] == kShardMagicU16) {
    if (header[1] != kShardVersionU16)
      fail(fmt::format("magic {} (uint16 tokens) needs version {}, found {}", header[0], kShardVersionU16, header[1]));
    width_ = 2;
  } else if (header[0] == kShardMagicU32) {
    if (header[1] != kShardVersionU32)
      fail(fmt::format("magic {} (uint32 tokens) needs version {}, found {}", header[0], kShardVersionU32, header[1]));
    width_ = 4;
  } else {
    fail(fmt::format("bad magic {} (expected {} or {})", header[0], kShardMagicU16, kShardMagicU32));
  }
  if (header[2] < 0) fail(fmt::format("negative token count {}", header[2]));
  count_ = header[2];
  const size_t expected = kShardHeaderInts * 4 + static_cast<size_t>(count_) * static_cast<size_t>(width_);
  if (expected != file_size) {
    fail(fmt::format("header says {} tokens x {} bytes = {} bytes with the header, but the file has {} bytes", count_,
                     width_, expected, file_size));
  }
  tokens_ = static_cast<const char*>(map_) + kShardHeaderInts * 4;
}

Shard::~Shard() {
  if (map_ != nullptr) ::munmap(map_, map_bytes_);
}

Shard::Shard(Shard&& other) noexcept
    : path_(std::move(other.path_)),
      map_(other.map_),
      map_bytes_(other.map_bytes_),
      tokens_(other.tokens_),
      count_(other.count_),
      width_(other.width_) {
  other.map_ = nullptr;
}

void Shard::read(int64_t begin, int64_t n, int32_t* out) const {
  if (width_ == 2) {
    const auto* p = static_cast<const uint16_t*>(tokens_) + begin;
    for (int64_t i = 0; i < n; ++i) out[i] = p[i];
  } else {
    std::memcpy(out, static_cast<const uint32_t*>(tokens_) + begin, static_cast<size_t>(n) * 4);
  }
}

std::vector<std::string> list_shards(const std::string& dir, const std::string& prefix) {
  std::error_code ec;
  KV_CHECK(std::filesystem::is_directory(dir, ec), "{}: no such data directory", dir);
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && name.rfind(prefix + "_", 0) == 0 && name.size() > 4 &&
        name.substr(name.size() - 4) == ".bin") {
      paths.push_back(entry.path().string());
    }
  }
  std::sort(paths.begin(), paths.end());
  KV_CHECK(!paths.empty(), "{}: no {}_*.bin shards (run kvroute prepare)", dir, prefix);
  return paths;
}

}  // namespace kvroute::data
