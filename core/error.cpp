#include "core/error.h"

#include <cstdio>
#include <new>

namespace kvroute {

void throw_error(const char* /*file*/, int /*line*/, std::string message) {
  // The source location is deliberately not part of the message: users see the op and the shapes;
  // developers get the location from a debugger breakpoint on this function.
  throw Error(std::move(message));
}

void print_error(std::string_view message, int rank, int world_size) {
  std::string line = "kvroute: error: ";
  if (world_size > 1) line += fmt::format("rank {}: ", rank);
  constexpr size_t kMaxChars = 4096;
  for (size_t i = 0; i < message.size() && i < kMaxChars; ++i) {
    const unsigned char c = static_cast<unsigned char>(message[i]);
    if (c == '\n') line += "\\n";
    else if (c < 0x20 || c == 0x7f) line += fmt::format("\\x{:02x}", c);
    else line += static_cast<char>(c);
  }
  if (message.size() > kMaxChars) line += "...";
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

std::string error_text(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) return "out of memory (an allocation failed)";
  return e.what();
}

}  // namespace kvroute

namespace kvroute {

void throw_message(const char* message) { throw Error(message); }

void throw_library_error(const char* library, const char* call, const char* detail, long code) {
  throw Error(fmt::format("{} error in {}: {} ({})", library, call, detail, code));
}

}  // namespace kvroute
