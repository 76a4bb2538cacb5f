// Errors: every failed check throws kvroute::Error with a one-line message that names the op (or
// file/key) and the values involved, so a user can act on it without a debugger.
#pragma once

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <stdexcept>
#include <string>
#include <string_view>

#include "core/dtype.h"

namespace kvroute {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// An allocation beyond an allocator's budget (Allocator::set_limit).
class MemoryBudgetExceeded : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void throw_error(const char* file, int line, std::string message);

// The one error format of every kvroute program: "kvroute: error: MESSAGE" on stderr, or
// "kvroute: error: rank R: MESSAGE" when world_size > 1, always one line (control characters in
// the message, e.g. from a hostile file name or value, are escaped), cut to a few KB.
void print_error(std::string_view message, int rank = 0, int world_size = 1);
// The text print_error writes for an exception (std::bad_alloc becomes "out of memory").
std::string error_text(const std::exception& e);

}  // namespace kvroute

// KV_CHECK(cond, "op: what is wrong {} {}", values...) throws kvroute::Error when cond is false.
// The message should start with the op name and include the shapes or values involved.
#define KV_CHECK(cond, ...)                                                      \
  do {                                                                           \
    if (!(cond)) [[unlikely]] {                                                  \
      ::kvroute::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__));    \
    }                                                                            \
  } while (0)

#define KV_FAIL(...) ::kvroute::throw_error(__FILE__, __LINE__, ::fmt::format(__VA_ARGS__))

template <>
struct fmt::formatter<kvroute::Device> : fmt::formatter<std::string> {
  auto format(const kvroute::Device& d, format_context& ctx) const {
    return fmt::formatter<std::string>::format(d.str(), ctx);
  }
};

template <>
struct fmt::formatter<kvroute::DType> : fmt::formatter<std::string_view> {
  auto format(kvroute::DType d, format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(kvroute::dtype_name(d), ctx);
  }
};
