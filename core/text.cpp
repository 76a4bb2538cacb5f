#include "core/text.h"

#include <cmath>
#include <cstdlib>
#include <utility>

#include "core/error.h"

namespace kvroute {

std::string excerpt(std::string_view value, size_t max_chars) {
  std::string out;
  size_t shown = 0;
  for (size_t i = 0; i < value.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(value[i]);
    if (shown == max_chars && (c & 0xc0) != 0x80) return out + "...";  // cut only before a character
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
    // A UTF-8 sequence counts as one character: continuation bytes are not counted.
    if ((c & 0xc0) != 0x80) ++shown;
  }
  return out;
}

int64_t parse_byte_size(const std::string& what, const std::string& text) {
  const std::string hint = fmt::format("{} '{}': expected a size such as 5GB, 512MiB or 1e9", what, excerpt(text));
  const char* begin = text.c_str();
  char* end = nullptr;
  const double value = text.empty() || std::isspace(static_cast<unsigned char>(text[0])) ? NAN : std::strtod(begin, &end);
  KV_CHECK(end != nullptr && end != begin && std::isfinite(value), "{}", hint);
  const std::string unit(end);
  double scale = 0;
  for (const auto& [name, s] : {std::pair<const char*, double>{"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
                                {"TB", 1e12}, {"KiB", 1024.0}, {"MiB", 1048576.0}, {"GiB", 1073741824.0},
                                {"TiB", 1099511627776.0}}) {
    if (unit == name) scale = s;
  }
  KV_CHECK(scale > 0 && value * scale >= 1 && value * scale <= 1e15, "{}", hint);
  return static_cast<int64_t>(value * scale);
}

}  // namespace kvroute
