// Quoting bad values (excerpt) and byte sizes (core/text.h).
#include <gtest/gtest.h>

#include "core/error.h"
#include "core/text.h"

namespace kvroute {
namespace {

TEST(Text, ExcerptCutsEscapesAndKeepsUtf8Whole) {
  EXPECT_EQ(excerpt("abc"), "abc");
  EXPECT_EQ(excerpt(std::string(70, 'x')), std::string(60, 'x') + "...");
  EXPECT_EQ(excerpt("a\nb\tc\x1b[31m"), "a\\nb\\tc\\x1b[31m");  // one line, no terminal escapes
  EXPECT_EQ(excerpt("\xc3\xa9\xc3\xa9\xc3\xa9", 2), "\xc3\xa9\xc3\xa9...");  // characters, not bytes
  EXPECT_EQ(excerpt(""), "");
}

TEST(Text, ByteSizesInDecimalAndBinaryUnits) {
  EXPECT_EQ(parse_byte_size("--x", "5GB"), 5'000'000'000);
  EXPECT_EQ(parse_byte_size("--x", "512MiB"), 512LL << 20);
  EXPECT_EQ(parse_byte_size("--x", "1e9"), 1'000'000'000);
  EXPECT_EQ(parse_byte_size("--x", "1.5KB"), 1500);
  EXPECT_EQ(parse_byte_size("--x", "1TiB"), 1LL << 40);
  for (const char* bad : {"", "abc", "5XB", "-1GB", "0", "0.5", "nan", "inf", "1e30", " 5GB", "5 GB", "GB"}) {
    try {
      (void)parse_byte_size("--shard-size", bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--shard-size '"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace kvroute
