#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/safetensors.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

using testing::expect_error;

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("kvroute_test_" + name + "_" + std::to_string(::getpid()))).string();
}

void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  uint64_t n = header.size();
  out.write(reinterpret_cast<const char*>(&n), 8);
  out << header << data;
}

TEST(Safetensors, RoundTripsEveryDtypeAndMetadata) {
  const std::string path = temp_path("roundtrip.safetensors");
  Tensor f = testing::random_tensor({3, 4}, 1);
  Tensor strided = f.transpose(0, 1);  // saved contiguous
  Tensor b = f.to(DType::BF16);
  Tensor i = Tensor::from_vector<int32_t>({-1, 2, 3}, {3});
  Tensor u16 = Tensor::from_vector<uint16_t>({65535, 0}, {2});
  Tensor u32 = Tensor::from_vector<uint32_t>({4000000000u}, {1});
  Tensor scalar = Tensor::scalar(2.5f);
  safetensors::save(path, {{"f", f}, {"t", strided}, {"b", b}, {"i", i}, {"u16", u16}, {"u32", u32}, {"s", scalar}},
                    {{"format", "pt"}});
  safetensors::File file = safetensors::load(path);
  EXPECT_EQ(file.metadata.at("format"), "pt");
  ASSERT_EQ(file.tensors.size(), 7u);
  EXPECT_EQ(file.tensors[0].first, "f");  // file order = save order
  EXPECT_EQ(file.get("f").to_vector<float>(), f.to_vector<float>());
  EXPECT_EQ(file.get("t").shape(), (Shape{4, 3}));
  EXPECT_EQ(file.get("t").to_vector<float>(), strided.contiguous().to_vector<float>());
  EXPECT_EQ(file.get("b").dtype(), DType::BF16);
  EXPECT_EQ(file.get("b").to(DType::F32).to_vector<float>(), b.to(DType::F32).to_vector<float>());
  EXPECT_EQ(file.get("i").to_vector<int32_t>(), i.to_vector<int32_t>());
  EXPECT_EQ(file.get("u16").to_vector<uint16_t>(), u16.to_vector<uint16_t>());
  EXPECT_EQ(file.get("u32").to_vector<uint32_t>(), u32.to_vector<uint32_t>());
  EXPECT_EQ(file.get("s").dim(), 0);
  EXPECT_EQ(file.get("s").item(), 2.5);
  expect_error([&] { (void)file.get("missing"); }, {path, "'missing'"});
  expect_error([&] { safetensors::save(path, {{"a", f}, {"a", f}}); }, {"duplicate", "'a'"});
  std::remove(path.c_str());
}

// The streaming reader: the header is read at open, each tensor when asked (as load() gives it),
// and a file cut short after opening is an error naming it, not a crash.
TEST(Safetensors, ReaderReadsOneTensorAtATimeAndSurvivesTruncation) {
  const std::string path = temp_path("reader.safetensors");
  Tensor a = testing::random_tensor({64, 32}, 2), b = testing::random_tensor({5}, 3).to(DType::BF16);
  safetensors::save(path, {{"a", a}, {"b", b}}, {{"format", "pt"}});
  {
    safetensors::Reader reader(path);
    EXPECT_EQ(reader.metadata().at("format"), "pt");
    ASSERT_EQ(reader.entries().size(), 2u);
    ASSERT_NE(reader.find("b"), nullptr);
    EXPECT_EQ(reader.find("missing"), nullptr);
    EXPECT_EQ(reader.find("b")->dtype, DType::BF16);
    EXPECT_EQ(reader.find("a")->shape, (Shape{64, 32}));
    EXPECT_EQ(reader.read(*reader.find("a")).to_vector<float>(), a.to_vector<float>());
    EXPECT_EQ(reader.read(*reader.find("b")).to(DType::F32).to_vector<float>(), b.to(DType::F32).to_vector<float>());
    // Cut the data section after the header was validated: the next read fails cleanly.
    ASSERT_EQ(::truncate(path.c_str(), static_cast<off_t>(std::filesystem::file_size(path) - 100)), 0);
    expect_error([&] { (void)reader.read(*reader.find("a")); }, {path, "ended at byte", "truncated"});
  }
  std::remove(path.c_str());
}

TEST(Safetensors, WriterWritesTheHeaderFirstAndChecksEveryTensor) {
  const std::string path = temp_path("writer.safetensors");
  Tensor a = testing::random_tensor({4, 3}, 4), b = testing::random_tensor({2}, 5).to(DType::BF16);
  {
    safetensors::Writer writer(path, {{"a", DType::F32, {4, 3}}, {"b", DType::BF16, {2}}}, {{"format", "pt"}});
    writer.write(a.transpose(0, 1).contiguous().transpose(0, 1));  // strided: stored contiguous
    expect_error([&] { writer.write(a); }, {path, "'b'", "bf16[2]"});  // not the next entry's dtype/shape
    expect_error([&] { writer.close(); }, {path, "1 of the header's 2"});
    writer.write(b);
    expect_error([&] { writer.write(b); }, {path, "more tensors"});
    writer.close();
  }
  safetensors::File file = safetensors::load(path);
  EXPECT_EQ(file.get("a").to_vector<float>(), a.to_vector<float>());
  EXPECT_EQ(file.get("b").to(DType::F32).to_vector<float>(), b.to(DType::F32).to_vector<float>());
  EXPECT_EQ(file.metadata.at("format"), "pt");
  std::remove(path.c_str());
}

TEST(Safetensors, CorruptFilesGiveErrorsNamingTheFile) {
  const std::string path = temp_path("corrupt.safetensors");
  expect_error([&] { (void)safetensors::load(temp_path("does_not_exist")); }, {"does_not_exist", "cannot open"});
  { std::ofstream(path, std::ios::binary) << "abc"; }
  expect_error([&] { (void)safetensors::load(path); }, {path, "shorter than the 8-byte header"});
  write_raw(path, "{\"a\": ", "");
  expect_error([&] { (void)safetensors::load(path); }, {path, "invalid JSON"});
  {
    std::ofstream out(path, std::ios::binary);
    uint64_t n = 1u << 30;
    out.write(reinterpret_cast<const char*>(&n), 8);
  }
  expect_error([&] { (void)safetensors::load(path); }, {path, "header length"});
  write_raw(path, R"({"w": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]}})", std::string(8, '\0'));
  expect_error([&] { (void)safetensors::load(path); }, {path, "'w'", "unsupported dtype", "F64"});
  write_raw(path, R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", std::string(8, '\0'));
  expect_error([&] { (void)safetensors::load(path); }, {path, "'w'", "outside the 8-byte data section"});
  write_raw(path, R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", std::string(8, '\0'));
  expect_error([&] { (void)safetensors::load(path); }, {path, "'w'", "needs 12 bytes", "span 8"});
  write_raw(path, R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", std::string(4, '\0'));
  expect_error([&] { (void)safetensors::load(path); }, {path, "'w'", "bad dimension"});
  write_raw(path, R"({"w": {"dtype": "F32"}})", "");
  expect_error([&] { (void)safetensors::load(path); }, {path, "'w'", "exactly dtype, shape and data_offsets"});
  std::remove(path.c_str());
}

TEST(Safetensors, HostileHeadersAreRefusedNotTrusted) {
  const std::string path = temp_path("hostile.safetensors");
  auto expect_load_error = [&](const std::string& header, const std::string& data,
                               const std::vector<std::string>& fragments) {
    write_raw(path, header, data);
    std::vector<std::string> all = fragments;
    all.push_back(path);
    expect_error([&] { (void)safetensors::load(path); }, all);
  };
  const std::string eight(8, '\0');
  // Two tensors over the same bytes, a gap, trailing bytes: the data section must be tiled exactly.
  expect_load_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                        "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", eight, {"overlap"});
  expect_load_error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", eight, {"gap"});
  expect_load_error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", eight, {"cover 4 bytes", "has 8"});
  // A shape whose element count overflows 64 bits, or exceeds the file.
  expect_load_error(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 8]}})", eight,
                    {"'a'", "more elements"});
  // A 100,000-deep dtype: refused while parsing (no recursion anywhere).
  expect_load_error(R"({"a": {"dtype": )" + std::string(100000, '[') + std::string(100000, ']') + "}}", eight,
                    {"nested deeper"});
  // Duplicate names, extra fields.
  expect_load_error(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                        "a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", eight, {"duplicate key", "a"});
  expect_load_error(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "x": 1}})", eight, {"exactly"});
  // The dtype a caller expects is checked: F32 bytes labelled I32 are not converted.
  write_raw(path, R"({"a": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}})", eight);
  safetensors::File f = safetensors::load(path);
  expect_error([&] { (void)f.get("a", DType::F32); }, {path, "'a'", "i32", "expected f32"});
  std::remove(path.c_str());
  // Not a regular file: a directory, a FIFO (which would block a plain open forever).
  expect_error([&] { (void)safetensors::load(std::filesystem::temp_directory_path().string()); }, {"a directory"});
  ASSERT_EQ(::mkfifo(path.c_str(), 0600), 0);
  expect_error([&] { (void)safetensors::load(path); }, {path, "a FIFO"});
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvroute
