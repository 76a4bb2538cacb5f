#include "data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"

namespace kvroute::data {

namespace fs = std::filesystem;

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (fs::is_directory(input, ec)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::recursive_directory_iterator(input)) {
        if (entry.is_regular_file() && entry.path().filename().string().front() != '.') found.push_back(entry.path().string());
      }
      std::sort(found.begin(), found.end());
      KV_CHECK(!found.empty(), "{}: directory has no files", input);
      files.insert(files.end(), found.begin(), found.end());
    } else {
      KV_CHECK(fs::is_regular_file(input, ec), "{}: no such file or directory", input);
      files.push_back(input);
    }
  }
  return files;
}

namespace {

constexpr uint64_t kMaxDocument = uint64_t{64} << 30;  // one text file, or one JSONL line
constexpr size_t kChunk = size_t{1} << 20;

// A file's bytes, decompressed where it is .gz (zlib) or .zst (libzstd); errors name the file.
class ByteSource {
 public:
  explicit ByteSource(const std::string& path)
      : path_(path), zstd_(path.ends_with(".zst")), gzip_(path.ends_with(".gz")) {
    std::error_code ec;
    KV_CHECK(fs::is_regular_file(path, ec), "{}: not a regular file", path);  // a FIFO would block
    if (!zstd_ && !gzip_) {
      fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      KV_CHECK(fd_ >= 0, "{}: cannot open: {}", path, std::strerror(errno));
    } else if (zstd_) {
      file_ = std::fopen(path.c_str(), "rb");
      KV_CHECK(file_ != nullptr, "{}: cannot open: {}", path, std::strerror(errno));
      stream_ = ZSTD_createDStream();
      KV_CHECK(stream_ != nullptr, "{}: cannot create a zstd stream", path);
      ZSTD_initDStream(stream_);
      in_buffer_.resize(ZSTD_DStreamInSize());
    } else {
      gz_ = gzopen(path.c_str(), "rb");
      KV_CHECK(gz_ != nullptr, "{}: cannot open: {}", path, std::strerror(errno));
      gzbuffer(gz_, 128 * 1024);
    }
  }
  ~ByteSource() {
    if (fd_ >= 0) ::close(fd_);
    if (gz_ != nullptr) gzclose(gz_);
    if (stream_ != nullptr) ZSTD_freeDStream(stream_);
    if (file_ != nullptr) std::fclose(file_);
  }
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  bool plain() const { return fd_ >= 0; }
  // Up to n bytes into buf; 0 at the end of the file.
  size_t read(char* buf, size_t n) {
    if (fd_ >= 0) {
      for (;;) {
        const ssize_t got = ::read(fd_, buf, n);
        if (got < 0 && errno == EINTR) continue;
        KV_CHECK(got >= 0, "{}: read failed: {}", path_, std::strerror(errno));
        return static_cast<size_t>(got);
      }
    }
    if (gzip_) {
      const int got = gzread(gz_, buf, static_cast<unsigned>(std::min<size_t>(n, 1u << 30)));
      if (got < 0) {
        int code = 0;
        const char* message = gzerror(gz_, &code);
        KV_FAIL("{}: not a readable gzip file: {}", path_, message != nullptr ? message : "read error");
      }
      if (got == 0) {  // the end, or a truncated stream
        int code = 0;
        const char* message = gzerror(gz_, &code);
        KV_CHECK(code == Z_OK || code == Z_STREAM_END, "{}: not a readable gzip file: {}", path_,
                 message != nullptr ? message : "truncated");
      }
      return static_cast<size_t>(got);
    }
    ZSTD_outBuffer out{buf, n, 0};
    while (out.pos == 0) {
      if (in_.pos == in_.size) {
        if (eof_) {
          KV_CHECK(frame_done_, "{}: truncated zstd stream", path_);
          return 0;
        }
        const size_t got = std::fread(in_buffer_.data(), 1, in_buffer_.size(), file_);
        KV_CHECK(!std::ferror(file_), "{}: read failed", path_);
        if (got == 0) {
          eof_ = true;
          continue;
        }
        in_ = ZSTD_inBuffer{in_buffer_.data(), got, 0};
      }
      const size_t rc = ZSTD_decompressStream(stream_, &out, &in_);
      KV_CHECK(!ZSTD_isError(rc), "{}: not a readable zstd file: {}", path_, ZSTD_getErrorName(rc));
      frame_done_ = rc == 0;
    }
    return out.pos;
  }

 private:
  std::string path_;
  bool zstd_ = false, gzip_ = false;
  int fd_ = -1;
  gzFile gz_ = nullptr;
  std::FILE* file_ = nullptr;
  ZSTD_DStream* stream_ = nullptr;
  std::vector<char> in_buffer_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  bool eof_ = false, frame_done_ = true;
};

// Lines of a ByteSource, without their newline; the last line may lack one.
class LineReader {
 public:
  LineReader(ByteSource& source, const std::string& path, std::vector<char>& buffer)
      : source_(source), path_(path), buffer_(buffer) {}
  bool next(std::string& line) {
    line.clear();
    for (;;) {
      if (pos_ == end_) {
        end_ = source_.read(buffer_.data(), buffer_.size());
        pos_ = 0;
        if (end_ == 0) return !line.empty();
      }
      const char* begin = buffer_.data() + pos_;
      const void* nl = std::memchr(begin, '\n', end_ - pos_);
      const size_t take = nl != nullptr ? static_cast<size_t>(static_cast<const char*>(nl) - begin) : end_ - pos_;
      line.append(begin, take);
      KV_CHECK(line.size() <= kMaxDocument, "{}: a line longer than {} bytes", path_, kMaxDocument);
      pos_ += take;
      if (nl != nullptr) {
        ++pos_;
        return true;
      }
    }
  }

 private:
  ByteSource& source_;
  const std::string& path_;
  std::vector<char>& buffer_;  // shared by the files of one call: no fresh megabyte per file
  size_t pos_ = 0, end_ = 0;
};

// Whether a file holds JSONL, by its name without the compression suffix: x.jsonl.zst is JSONL.
bool is_jsonl(std::string path) {
  if (path.ends_with(".gz")) path.resize(path.size() - 3);
  if (path.ends_with(".zst")) path.resize(path.size() - 4);
  return path.ends_with(".jsonl");
}

}  // namespace

bool blank_line(std::string_view line) { return line.find_first_not_of(" \t\r") == std::string_view::npos; }

int64_t count_documents(const std::vector<std::string>& inputs) {
  int64_t n = 0;
  std::vector<char> buffer(kChunk);
  for (const std::string& path : expand_inputs(inputs)) {
    if (!is_jsonl(path)) {
      ByteSource check(path);  // opens it (a regular, readable file); its text is one document
      ++n;
      continue;
    }
    ByteSource source(path);
    LineReader lines(source, path, buffer);
    std::string line;
    while (lines.next(line)) n += !blank_line(line);
  }
  return n;
}

void for_each_document(const std::vector<std::string>& inputs, const std::function<void(std::string_view)>& fn,
                       const std::string& text_key) {
  std::vector<char> buffer(kChunk);
  for (const std::string& path : expand_inputs(inputs)) {
    ByteSource source(path);
    if (is_jsonl(path)) {
      LineReader lines(source, path, buffer);
      std::string line;
      for (int64_t line_no = 1; lines.next(line); ++line_no) {
        if (blank_line(line)) continue;
        const json::Json j = json::parse(line, fmt::format("{}:{}", path, line_no));
        KV_CHECK(j.is_object() && j.contains(text_key) && j[text_key].is_string(),
                 "{}:{}: expected an object with a string field \"{}\"", path, line_no, text_key);
        fn(j[text_key].get_ref<const std::string&>());
      }
    } else {
      std::string text;
      std::error_code ec;
      const auto size = fs::file_size(path, ec);
      if (!ec && source.plain()) text.reserve(static_cast<size_t>(std::min<uintmax_t>(size, kMaxDocument)));
      for (size_t got; (got = source.read(buffer.data(), buffer.size())) > 0;) {
        text.append(buffer.data(), got);
        KV_CHECK(text.size() <= kMaxDocument, "{}: larger than the {}-byte limit for one document", path, kMaxDocument);
      }
      fn(text);
    }
  }
}

}  // namespace kvroute::data
