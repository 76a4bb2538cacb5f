// The streaming prepare: the same shards whatever its chunk size (one document at a time, or the
// whole corpus at once: what prepare did before it streamed), the same from gzip- and
// zstd-compressed JSONL and from another text field as from plain files, and errors naming the
// file for corrupt or truncated compressed input, a missing text field and a changed input.
#include <gtest/gtest.h>
#include <zlib.h>
#include <zstd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/io.h"
#include "core/rng.h"
#include "data/corpus.h"
#include "data/prepare.h"
#include "data/tokenizer.h"
#include "tests/test_util.h"

namespace kvroute::data {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

std::vector<std::string> documents() {
  Philox rng(5);
  const std::vector<std::string> words = {"the", "cache", "layer", "routes", "keys", "values", "é", "日本", "of", "a"};
  std::vector<std::string> docs;
  for (int d = 0; d < 240; ++d) {
    std::string text;
    const int64_t n = 1 + rng.uniform_int(60);
    for (int64_t w = 0; w < n; ++w) text += words[static_cast<size_t>(rng.uniform_int(words.size()))] + (w % 9 == 8 ? "\n" : " ");
    docs.push_back(text);
  }
  return docs;
}

std::string jsonl(const std::vector<std::string>& docs, const std::string& key) {
  std::string out;
  for (size_t i = 0; i < docs.size(); ++i) {
    out += nlohmann::json{{key, docs[i]}, {"id", i}}.dump() + "\n";
    if (i % 50 == 7) out += "  \n";  // blank lines are skipped
  }
  return out;
}

void write_gzip(const std::string& path, const std::string& data) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(gzwrite(f, data.data(), static_cast<unsigned>(data.size())), static_cast<int>(data.size()));
  gzclose(f);
}

void write_zstd(const std::string& path, const std::string& data) {
  std::string out(ZSTD_compressBound(data.size()), '\0');
  const size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 3);
  ASSERT_FALSE(ZSTD_isError(n));
  out.resize(n);
  std::ofstream(path, std::ios::binary) << out;
}

// Every file of a prepared directory, by name.
std::map<std::string, std::string> files_of(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out[e.path().filename().string()] = io::read_file(e.path().string());
  return out;
}

struct Fixture {
  std::string root = testing::temp_dir("prepare_stream");
  std::string tokenizer = root + "/tok";
  std::vector<std::string> docs = documents();
  Fixture() {
    const auto docs_copy = docs;
    Tokenizer::train([&](const std::function<void(std::string_view)>& fn) { for (const auto& d : docs_copy) fn(d); }, 300)
        .save(tokenizer);
  }
  PrepareSummary run(const std::vector<std::string>& inputs, const std::string& out, int64_t chunk_bytes = 64 << 20,
                     const std::string& key = "text") {
    PrepareOptions o;
    o.inputs = inputs;
    o.tokenizer_dir = tokenizer;
    o.out_dir = out;
    o.val_fraction = 0.1;
    o.shard_tokens = 1500;  // several shards
    o.progress = false;
    o.chunk_bytes = chunk_bytes;
    o.text_key = key;
    return prepare(o);
  }
};

TEST(Prepare, ShardsDoNotDependOnTheChunkSizeNorOnCompression) {
  Fixture f;
  // Text files (one document each) in a directory, and the same documents as JSONL.
  const std::string txt = f.root + "/txt";
  fs::create_directories(txt);
  for (size_t i = 0; i < f.docs.size(); ++i) std::ofstream(fmt::format("{}/{:04d}.txt", txt, i)) << f.docs[i];
  const std::string plain = f.root + "/docs.jsonl";
  std::ofstream(plain) << jsonl(f.docs, "text");

  const PrepareSummary whole = f.run({txt}, f.root + "/whole");  // one chunk: the corpus at once
  EXPECT_EQ(whole.documents, 240);
  EXPECT_GT(whole.train_shards, 1);
  EXPECT_GT(whole.val_documents, 0);
  const auto want = files_of(f.root + "/whole");
  f.run({txt}, f.root + "/one", 1);  // a chunk per document
  EXPECT_EQ(files_of(f.root + "/one"), want);
  f.run({plain}, f.root + "/jsonl", 700);
  EXPECT_EQ(files_of(f.root + "/jsonl"), want);

  const std::string body = jsonl(f.docs, "content");
  write_gzip(f.root + "/docs.jsonl.gz", body);
  write_zstd(f.root + "/docs.jsonl.zst", body);
  f.run({f.root + "/docs.jsonl.gz"}, f.root + "/gz", 1000, "content");
  EXPECT_EQ(files_of(f.root + "/gz"), want);
  f.run({f.root + "/docs.jsonl.zst"}, f.root + "/zst", 1 << 20, "content");
  EXPECT_EQ(files_of(f.root + "/zst"), want);
  EXPECT_EQ(count_documents({f.root + "/docs.jsonl.zst", txt}), 480);
}

TEST(Prepare, CompressedAndMalformedInputsFailNamingTheFile) {
  Fixture f;
  const std::string body = jsonl(f.docs, "text");
  // Truncated and corrupt streams.
  std::string gz_path = f.root + "/cut.jsonl.gz", zst_path = f.root + "/cut.jsonl.zst";
  write_gzip(gz_path, body);
  write_zstd(zst_path, body);
  for (const std::string& path : {gz_path, zst_path}) {
    const std::string bytes = io::read_file(path);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
    expect_error([&] { f.run({path}, f.root + "/out"); }, {path});
    std::string garbage = bytes;
    for (size_t i = 20; i < garbage.size(); i += 7) garbage[i] = static_cast<char>(garbage[i] ^ 0x5a);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << garbage;
    expect_error([&] { f.run({path}, f.root + "/out"); }, {path});
  }
  // A missing text field names the key, the file and the line.
  const std::string plain = f.root + "/docs.jsonl";
  std::ofstream(plain) << body;
  expect_error([&] { f.run({plain}, f.root + "/out", 1 << 20, "body"); }, {plain + ":1", "\"body\""});
  // Nothing that looks finished is left behind by a failed run.
  EXPECT_FALSE(fs::exists(f.root + "/out/data.json"));
}

}  // namespace
}  // namespace kvroute::data
