#include <gtest/gtest.h>

#include <algorithm>

#include <filesystem>
#include <fstream>
#include <set>

#include "data/loader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "tests/test_util.h"

namespace kvroute::data {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

TEST(Shard, RoundTripsU16AndU32) {
  const std::string dir = testing::temp_dir("shards");
  std::vector<int32_t> small = {0, 1, 65535, 42}, large = {0, 65536, 1 << 30, 7};
  write_shard(dir + "/train_000000.bin", small, 2);
  write_shard(dir + "/train_000001.bin", large, 4);
  Shard a(dir + "/train_000000.bin"), b(dir + "/train_000001.bin");
  EXPECT_EQ(a.size(), 4);
  EXPECT_EQ(a.token_width(), 2);
  EXPECT_EQ(b.token_width(), 4);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(a.at(i), small[i]);
    EXPECT_EQ(b.at(i), large[i]);
  }
  EXPECT_EQ(fs::file_size(dir + "/train_000000.bin"), 1024u + 8);
  EXPECT_EQ(token_width_for_vocab(65536), 2);
  EXPECT_EQ(token_width_for_vocab(65537), 4);
  expect_error([&] { write_shard(dir + "/x.bin", large, 2); }, {"x.bin", "65536", "uint16"});
  EXPECT_EQ(list_shards(dir, "train").size(), 2u);
  expect_error([&] { (void)list_shards(dir, "val"); }, {dir, "val_*.bin"});
}

void write_raw(const std::string& path, std::vector<int32_t> header, size_t payload_bytes) {
  header.resize(256, 0);
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(header.data()), 1024);
  std::string payload(payload_bytes, '\0');
  out.write(payload.data(), static_cast<std::streamsize>(payload.size()));
}

TEST(Shard, EachCorruptHeaderHasItsError) {
  const std::string dir = testing::temp_dir("corrupt_shards");
  const std::string p = dir + "/train_000000.bin";
  { std::ofstream(p) << "short"; }
  expect_error([&] { Shard s(p); }, {p, "corrupt shard", "shorter than the 1024-byte header"});
  write_raw(p, {12345, 1, 4}, 8);
  expect_error([&] { Shard s(p); }, {p, "bad magic 12345"});
  write_raw(p, {20240520, 7, 4}, 8);
  expect_error([&] { Shard s(p); }, {p, "needs version 1, found 7"});
  write_raw(p, {20240801, 1, 4}, 16);
  expect_error([&] { Shard s(p); }, {p, "needs version 7, found 1"});
  write_raw(p, {20240520, 1, 5}, 8);
  expect_error([&] { Shard s(p); }, {p, "5 tokens x 2 bytes", "1034 bytes", "1032 bytes"});
  write_raw(p, {20240520, 1, -3}, 0);
  expect_error([&] { Shard s(p); }, {p, "negative token count"});
  expect_error([&] { Shard s(dir + "/missing.bin"); }, {"missing.bin", "cannot open"});
}

// A dataset whose token at position i is i % 50000, in 3 train shards, so windows are identifiable.
std::string make_dataset(const std::string& name, int64_t tokens) {
  const std::string dir = testing::temp_dir(name);
  std::vector<int32_t> all(static_cast<size_t>(tokens));
  for (int64_t i = 0; i < tokens; ++i) all[static_cast<size_t>(i)] = static_cast<int32_t>(i % 50000);
  const int64_t third = tokens / 3;
  write_shard(dir + "/train_000000.bin", std::vector<int32_t>(all.begin(), all.begin() + third), 2);
  write_shard(dir + "/train_000001.bin", std::vector<int32_t>(all.begin() + third, all.begin() + 2 * third), 2);
  write_shard(dir + "/train_000002.bin", std::vector<int32_t>(all.begin() + 2 * third, all.end()), 2);
  write_shard(dir + "/val_000000.bin", std::vector<int32_t>(all.begin(), all.begin() + 1000), 2);
  return dir;
}

// The window index of each row (row r starts at token window * T).
std::vector<int64_t> window_ids(const Batch& b, int64_t T) {
  std::vector<int64_t> ids;
  for (int64_t r = 0; r < b.inputs.size(0); ++r) {
    const int32_t* row = b.inputs.data<int32_t>() + r * T;
    const int32_t* tgt = b.targets.data<int32_t>() + r * T;
    for (int64_t t = 0; t + 1 < T; ++t) EXPECT_EQ(tgt[t], row[t + 1]);
    ids.push_back(row[0] / T);  // tokens < 50000 in this dataset, windows start at multiples of T
  }
  return ids;
}

TEST(Loader, RanksAreDisjointAndAnEpochCoversEveryWindowOnce) {
  const int64_t T = 16, global_batch = 8;
  const std::string dir = make_dataset("loader", 49000);  // 3062 windows of 16+1 (all token values distinct)
  for (int world : {1, 2, 4}) {
    std::vector<std::unique_ptr<DataLoader>> ranks;
    for (int r = 0; r < world; ++r) {
      DataLoader::Options o{dir, global_batch / world, T, r, world, 99, r % 2 == 0};
      ranks.push_back(std::make_unique<DataLoader>(o));
    }
    const int64_t steps = ranks[0]->steps_per_epoch();
    EXPECT_EQ(steps, ranks[0]->windows() / global_batch);
    std::set<int64_t> seen;
    for (int64_t s = 0; s < steps; ++s) {
      std::set<int64_t> step_ids;
      for (int r = 0; r < world; ++r) {
        Batch b = ranks[r]->next();
        EXPECT_EQ(b.cursor.epoch, 0);
        for (int64_t id : window_ids(b, T)) {
          EXPECT_TRUE(step_ids.insert(id).second) << "window shared by two ranks";
          EXPECT_TRUE(seen.insert(id).second) << "window repeated within an epoch";
        }
      }
    }
    EXPECT_EQ(static_cast<int64_t>(seen.size()), steps * global_batch) << "world " << world;
    EXPECT_EQ(ranks[0]->cursor().epoch, 1);
  }
}

TEST(Loader, GlobalBatchesAreTheSameAtEveryWorldSize) {
  const int64_t T = 16;
  const std::string dir = make_dataset("loader_world", 20000);
  DataLoader one({dir, 8, T, 0, 1, 5, false});
  DataLoader r0({dir, 4, T, 0, 2, 5, true}), r1({dir, 4, T, 1, 2, 5, true});
  for (int s = 0; s < 30; ++s) {
    std::vector<int64_t> global = window_ids(one.next(), T);
    std::vector<int64_t> split = window_ids(r0.next(), T);
    std::vector<int64_t> second = window_ids(r1.next(), T);
    split.insert(split.end(), second.begin(), second.end());
    EXPECT_EQ(global, split);
  }
}

TEST(Loader, RestoringASavedCursorGivesTheIdenticalStream) {
  const int64_t T = 32;
  const std::string dir = make_dataset("loader_resume", 30000);
  DataLoader loader({dir, 4, T, 0, 1, 7, true});
  for (int i = 0; i < 300; ++i) loader.next();  // crosses an epoch boundary (234 steps per epoch)
  LoaderCursor saved = loader.cursor();
  EXPECT_EQ(saved.epoch, 1);
  std::vector<std::vector<int32_t>> expected;
  for (int i = 0; i < 10; ++i) expected.push_back(loader.next().inputs.to_vector<int32_t>());
  DataLoader resumed({dir, 4, T, 0, 1, 7, true});
  resumed.set_cursor(saved);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(resumed.next().inputs.to_vector<int32_t>(), expected[i]) << i;
  // Another seed shuffles differently; epochs differ from each other.
  DataLoader other({dir, 4, T, 0, 1, 8, false});
  EXPECT_NE(window_ids(other.read_batch({0, 0}), T), window_ids(loader.read_batch({0, 0}), T));
  EXPECT_NE(window_ids(loader.read_batch({1, 0}), T), window_ids(loader.read_batch({0, 0}), T));
  expect_error([&] { resumed.set_cursor({0, 3}); }, {"cursor", "position 3"});
  expect_error([&] { DataLoader tiny({dir, 4000, T, 0, 1, 7, false}); }, {dir, "fewer than one global batch"});
}

TEST(Loader, ValidationWalksTheSplitOnceInOrder) {
  const int64_t T = 16;
  const std::string dir = make_dataset("loader_val", 10000);
  ValidationLoader val(dir, 8, T);
  EXPECT_EQ(val.windows(), (1000 - 1) / T);  // 62
  Batch b;
  std::vector<int64_t> ids;
  int batches = 0;
  while (val.next(b)) {
    ++batches;
    for (int64_t id : window_ids(b, T)) ids.push_back(id);
  }
  EXPECT_EQ(batches, 8);  // 7 full batches + 6 windows
  ASSERT_EQ(ids.size(), 62u);
  for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ids[i], static_cast<int64_t>(i));
  val.reset();
  ASSERT_TRUE(val.next(b));
  EXPECT_EQ(window_ids(b, T)[0], 0);
}

// A plan split: the two parts are disjoint, cover the split, hold about f and 1 - f of it, and
// interleave (each has windows in every quarter of the split, so both sample every document).
TEST(Loader, ValidationPartsInterleaveDisjointAndCoverTheSplit) {
  const int64_t T = 16;
  const std::string dir = make_dataset("loader_val_parts", 10000);  // 62 windows
  auto ids_of = [&](ValidationPart part, int world, int rank) {
    ValidationLoader val(dir, 4, T, rank, world, 0, part);
    std::vector<int64_t> ids;
    Batch b;
    while (val.next(b)) {
      for (int64_t id : window_ids(b, T)) ids.push_back(id);
    }
    EXPECT_EQ(static_cast<int64_t>(ids.size()), world == 1 ? val.windows() : static_cast<int64_t>(ids.size()));
    return ids;
  };
  for (double f : {0.25, 0.5, 0.7}) {
    std::vector<int64_t> plan = ids_of({0.0, f}, 1, 0), report = ids_of({f, 1.0}, 1, 0);
    EXPECT_NEAR(static_cast<double>(plan.size()), f * 62, 3) << f;
    std::vector<int64_t> all = plan;
    all.insert(all.end(), report.begin(), report.end());
    std::sort(all.begin(), all.end());
    ASSERT_EQ(all.size(), 62u) << f;
    for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(all[i], static_cast<int64_t>(i)) << f;
    EXPECT_TRUE(std::is_sorted(plan.begin(), plan.end()));
    for (const auto* part : {&plan, &report}) {
      for (int q = 0; q < 4; ++q) {
        EXPECT_TRUE(std::any_of(part->begin(), part->end(), [&](int64_t w) { return w * 4 / 62 == q; }))
            << "f " << f << ": a part has no window in quarter " << q;
      }
    }
    // Two ranks read the same part between them.
    std::vector<int64_t> r0 = ids_of({0.0, f}, 2, 0), r1 = ids_of({0.0, f}, 2, 1);
    r0.insert(r0.end(), r1.begin(), r1.end());
    std::sort(r0.begin(), r0.end());
    EXPECT_EQ(r0, plan) << f;
  }
  EXPECT_EQ(validation_window_position(0), 0.0);
  EXPECT_NEAR(validation_window_position(1), 0.6180339887, 1e-9);
}

TEST(Loader, ATokenOutsideTheModelsVocabularyNamesTheShard) {
  const std::string dir = make_dataset("loader_vocab", 10000);  // ids up to 9999
  ValidationLoader ok(dir, 8, 16, 0, 1, 10000);
  Batch b;
  EXPECT_TRUE(ok.next(b));
  ValidationLoader small(dir, 8, 16, 0, 1, 100);
  expect_error([&] { (void)small.next(b); }, {"val_000000.bin", "token 100 at position 100", "[0, 100)"});
  DataLoader train({dir, 2, 16, 0, 1, 1, false, 100});
  expect_error([&] { (void)train.next(); }, {"train_00000", "outside the model's vocabulary [0, 100)"});
}

TEST(Loader, DataJsonIsValidated) {
  const std::string dir = testing::temp_dir("data_json");
  auto expect_info_error = [&](const std::string& text, const std::vector<std::string>& fragments) {
    std::ofstream(dir + "/data.json") << text;
    std::vector<std::string> all = fragments;
    all.push_back("data.json");
    expect_error([&] { (void)read_data_info(dir); }, all);
  };
  std::ofstream(dir + "/data.json") << R"({"vocab_size": 300, "eot_id": 299, "token_bytes": 2, "tokenizer": "t"})";
  EXPECT_EQ(read_data_info(dir).vocab_size, 300);
  expect_info_error("{}", {"vocab_size: missing"});
  expect_info_error(R"({"vocab_size": 300.5, "eot_id": 1, "token_bytes": 2})", {"vocab_size", "integer"});
  expect_info_error(R"({"vocab_size": 1e308, "eot_id": 1, "token_bytes": 2})", {"vocab_size", "integer"});
  expect_info_error(R"({"vocab_size": 300, "eot_id": 300, "token_bytes": 2})", {"eot_id", "out of range"});
  expect_info_error(R"({"vocab_size": 300, "eot_id": 1, "token_bytes": 4})", {"token_bytes 4", "expected 2"});
  expect_info_error(R"({"vocab_size": 300, "vocab_size": 301, "eot_id": 1, "token_bytes": 2})", {"duplicate key"});
  expect_info_error(std::string(100000, '[') + std::string(100000, ']'), {"nested deeper"});
}

}  // namespace
}  // namespace kvroute::data
