// Text the project reads from users and quotes back to them: one way to show a bad value in an
// error line (excerpt), and one parser for byte sizes ("5GB", "512MiB", "1e9").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace kvroute {

// `value` as an error line shows it: at most `max_chars` characters (then "..."), control
// characters and invalid bytes escaped (\n, \x1b), so a bad value never breaks the one-line error.
std::string excerpt(std::string_view value, size_t max_chars = 60);

// A byte count: a number (decimal, or with an exponent) and an optional unit B, KB, MB, GB, TB
// (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), as transformers' max_shard_size reads
// them. At least 1 byte and at most 1e15; anything else throws an Error naming `what` and the value.
int64_t parse_byte_size(const std::string& what, const std::string& text);

}  // namespace kvroute
