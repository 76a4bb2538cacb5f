#include "core/io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"

namespace kvroute::io {

bool exists(const std::string& path) {
  std::error_code ec;
  return std::filesystem::exists(path, ec);
}


namespace {

const char* kind_of(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

void write_all(int fd, const std::string& path, std::string_view data) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    KV_CHECK(n > 0, "{}: write failed: {}", path, std::strerror(n < 0 ? errno : ENOSPC));
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

int open_regular(const std::string& path, uint64_t& size) {
  // O_NONBLOCK: opening a FIFO for reading must not wait for a writer; it is refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  KV_CHECK(fd >= 0, "{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    KV_FAIL("{}: cannot stat: {}", path, std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    KV_FAIL("{}: is {}, expected a regular file", path, kind_of(st.st_mode));
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  size = static_cast<uint64_t>(st.st_size);
  return fd;
}

std::string read_file(const std::string& path, uint64_t max_bytes) {
  uint64_t size = 0;
  const int fd = open_regular(path, size);
  if (size > max_bytes) {
    ::close(fd);
    KV_FAIL("{}: {} bytes is larger than the {}-byte limit for this kind of file", path, size, max_bytes);
  }
  std::string text(static_cast<size_t>(size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      KV_FAIL("{}: read failed: {}", path, std::strerror(err));
    }
    if (n == 0) break;  // the file shrank while we read it
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  text.resize(got);
  return text;
}

void write_file_durable(const std::string& path, std::string_view data) {
  OutputFile out(path, OutputFile::Mode::Truncate);
  out.write(data);
  out.close();
}

void write_file_staged(const std::string& path, std::string_view data) {
  OutputFile out(path, OutputFile::Mode::Truncate);
  out.write(data);
  out.close(false);
}

namespace {

// A private name beside `path`: <path>.<what>-XXXXXX, made by mkstemp/mkdtemp.
constexpr const char* kStagingMarks[] = {".staging-", ".aside-"};

const char* file_kind(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

}  // namespace

bool is_staging_name(const std::string& name) {
  for (const char* mark : kStagingMarks) {
    const size_t at = name.rfind(mark);
    if (at != std::string::npos && name.size() == at + std::strlen(mark) + 6) return true;
  }
  return false;
}

void check_output_file(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;  // absent (or unreadable: opening it will say why)
  KV_CHECK(S_ISREG(st.st_mode), "{}: exists and is {}, not a regular file; refusing to write over it", path,
           file_kind(st.st_mode));
}

void check_output_directory(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return;
  KV_CHECK(S_ISDIR(st.st_mode), "{}: exists and is {}, not a directory; refusing to replace it", path,
           file_kind(st.st_mode));
}

void write_file_atomic(const std::string& path, std::string_view data) {
  check_output_file(path);
  std::string tmp = path + kStagingMarks[0] + "XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  KV_CHECK(fd >= 0, "{}: cannot create a temporary file beside it: {}", path, std::strerror(errno));
  ::close(fd);
  try {
    write_file_durable(tmp, data);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  ::chmod(tmp.c_str(), 0644);  // mkstemp's 0600 is not what a plain output file gets
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    KV_FAIL("{}: cannot rename {} into place: {}", path, tmp, std::strerror(err));
  }
  fsync_path(parent_dir(path));
}

StagedDirectory::StagedDirectory(const std::string& target) : target_(target) {
  while (target_.size() > 1 && target_.back() == '/') target_.pop_back();
  check_output_directory(target_);
  staging_ = target_ + kStagingMarks[0] + "XXXXXX";
  KV_CHECK(::mkdtemp(staging_.data()) != nullptr, "{}: cannot create a staging directory beside it: {}", target_,
           std::strerror(errno));
  ::chmod(staging_.c_str(), 0755);  // mkdtemp's 0700 is not what a plain output directory gets
}

StagedDirectory::~StagedDirectory() {
  if (published_) return;
  std::error_code ec;
  std::filesystem::remove_all(staging_, ec);
}

void StagedDirectory::publish() {
  KV_CHECK(!published_, "{}: published twice", target_);
  {
    const int fd = ::open(staging_.c_str(), O_RDONLY | O_CLOEXEC);
    KV_CHECK(fd >= 0, "{}: cannot open to sync: {}", staging_, std::strerror(errno));
    const int rc = ::syncfs(fd);  // every file written into it, in one call (write-back errors included)
    const int err = errno;
    ::close(fd);
    KV_CHECK(rc == 0, "{}: sync failed: {}", staging_, std::strerror(err));
  }
  fsync_path(staging_);
  check_output_directory(target_);  // it may have appeared since
  std::error_code ec;
  std::string aside;
  const bool replacing = std::filesystem::exists(target_, ec);
  if (replacing && ::renameat2(AT_FDCWD, staging_.c_str(), AT_FDCWD, target_.c_str(), RENAME_EXCHANGE) == 0) {
    // One atomic swap: `target` is never absent; the staging name now holds the old copy.
    published_ = true;
    fsync_path(parent_dir(target_));
    std::filesystem::remove_all(staging_, ec);
    return;
  }
  if (replacing) {  // a file system without RENAME_EXCHANGE: move the old copy aside first
    aside = target_ + kStagingMarks[1] + "XXXXXX";
    KV_CHECK(::mkdtemp(aside.data()) != nullptr, "{}: cannot move the previous copy aside: {}", target_,
             std::strerror(errno));
    if (::rename(target_.c_str(), aside.c_str()) != 0) {  // onto the empty directory mkdtemp made
      const int err = errno;
      ::rmdir(aside.c_str());
      KV_FAIL("{}: cannot move the previous copy aside: {}", target_, std::strerror(err));
    }
  }
  if (::rename(staging_.c_str(), target_.c_str()) != 0) {
    const int err = errno;
    if (!aside.empty()) ::rename(aside.c_str(), target_.c_str());  // put the previous copy back
    KV_FAIL("{}: cannot rename the finished directory into place: {}", target_, std::strerror(err));
  }
  published_ = true;
  fsync_path(parent_dir(target_));
  if (!aside.empty()) std::filesystem::remove_all(aside, ec);
}

OutputFile::OutputFile(const std::string& path, Mode mode) : path_(path) {
  check_output_file(path);
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (mode == Mode::Append ? O_APPEND : O_TRUNC);
  fd_ = ::open(path.c_str(), flags, 0644);
  KV_CHECK(fd_ >= 0, "{}: cannot open for writing: {}", path, std::strerror(errno));
}

OutputFile::~OutputFile() {
  if (fd_ >= 0) ::close(fd_);
}

OutputFile::OutputFile(OutputFile&& other) noexcept : path_(std::move(other.path_)), fd_(other.fd_) { other.fd_ = -1; }

OutputFile& OutputFile::operator=(OutputFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

void OutputFile::write(const void* data, size_t n) {
  KV_CHECK(fd_ >= 0, "{}: write to a closed file", path_);
  write_all(fd_, path_, std::string_view(static_cast<const char*>(data), n));
}

void OutputFile::write_at(uint64_t offset, const void* data, size_t n) {
  KV_CHECK(fd_ >= 0, "{}: write to a closed file", path_);
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::pwrite(fd_, p, n, static_cast<off_t>(offset));
    if (w < 0 && errno == EINTR) continue;
    KV_CHECK(w > 0, "{}: write failed: {}", path_, std::strerror(errno));
    p += w;
    n -= static_cast<size_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

void OutputFile::sync() {
  KV_CHECK(fd_ >= 0, "{}: fsync of a closed file", path_);
  KV_CHECK(::fsync(fd_) == 0, "{}: fsync failed: {}", path_, std::strerror(errno));
}

void OutputFile::close(bool sync_first) {
  if (fd_ < 0) return;
  if (sync_first) sync();
  const int fd = fd_;
  fd_ = -1;
  KV_CHECK(::close(fd) == 0, "{}: close failed: {}", path_, std::strerror(errno));
}

void fsync_path(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  KV_CHECK(fd >= 0, "{}: cannot open to fsync: {}", path, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  KV_CHECK(rc == 0, "{}: fsync failed: {}", path, std::strerror(err));
}

std::string parent_dir(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace kvroute::io
