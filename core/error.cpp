#include "core/error.h"

namespace kvroute {

void throw_error(const char* /*file*/, int /*line*/, std::string message) {
  // The source location is deliberately not part of the message: users see the op and the shapes;
  // developers get the location from a debugger breakpoint on this function.
  throw Error(std::move(message));
}

}  // namespace kvroute

namespace kvroute {

void throw_message(const char* message) { throw Error(message); }

void throw_library_error(const char* library, const char* call, const char* detail, long code) {
  throw Error(fmt::format("{} error in {}: {} ({})", library, call, detail, code));
}

}  // namespace kvroute
