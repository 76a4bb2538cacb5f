// Helpers shared by the fuzz targets: the parsers under test read paths, so the fuzz input becomes
// a file. A memfd keeps every iteration in memory (no disk traffic); /proc/self/fd/N names it.
#pragma once

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

namespace kvroute::fuzz {

[[noreturn]] inline void die(const char* what) {
  std::perror(what);
  std::abort();
}

// KVROUTE_FUZZ_VERBOSE=1 prints why each input was rejected (to check seeds, or replay a crash file).
inline void rejected(const std::exception& e) {
  static const bool verbose = std::getenv("KVROUTE_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
}

inline void write_all(int fd, const uint8_t* data, size_t size) {
  if (::ftruncate(fd, 0) != 0) die("fuzz: ftruncate");
  for (size_t done = 0; done < size;) {
    const ssize_t n = ::pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (n <= 0) die("fuzz: pwrite");
    done += static_cast<size_t>(n);
  }
}

// One in-memory regular file, rewritten with each input.
class MemFile {
 public:
  MemFile() {
    fd_ = ::memfd_create("kvroute-fuzz", 0);
    if (fd_ < 0) die("fuzz: memfd_create");
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  ~MemFile() { ::close(fd_); }
  MemFile(const MemFile&) = delete;
  MemFile& operator=(const MemFile&) = delete;

  const std::string& write(const uint8_t* data, size_t size) {
    write_all(fd_, data, size);
    return path_;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

// A private directory (on tmpfs when /dev/shm exists) for parsers that take a directory.
class TempDir {
 public:
  TempDir() {
    const char* base =
        ::access("/dev/shm", W_OK) == 0 ? "/dev/shm" : (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp");
    std::string tmpl = std::string(base) + "/kvroute-fuzz-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) die("fuzz: mkdtemp");
    path_ = tmpl;
  }
  ~TempDir() {
    for (const std::string& f : files_) ::unlink((path_ + "/" + f).c_str());
    ::rmdir(path_.c_str());
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  void write(const std::string& name, std::string_view bytes) {
    const std::string file = path_ + "/" + name;
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) die("fuzz: open");
    write_all(fd, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
    ::close(fd);
    for (const std::string& f : files_)
      if (f == name) return;
    files_.push_back(name);
  }

 private:
  std::string path_;
  std::vector<std::string> files_;
};

}  // namespace kvroute::fuzz
