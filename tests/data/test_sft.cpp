// Supervised fine-tuning data (data/sft.h): the JSONL template and its seeded order, the sft_*.bin
// round trip and its validation, rows with prompt and padding targets ignored, and the loaders
// drawing one example per row.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/rng.h"
#include "data/loader.h"
#include "data/sft.h"
#include "tests/test_util.h"

namespace kvroute::data {
namespace {

namespace fs = std::filesystem;
using testing::expect_error;

TEST(Sft, TemplateOrderIsSeededPerExampleAndPromptResponseIsAsIs) {
  const std::string line = R"({"context": "The code is 42.", "question": "What is the code?", "answer": "42"})";
  int context_first = 0;
  for (uint64_t i = 0; i < 200; ++i) {
    const SftText t = parse_sft_line(line, "x.jsonl:1", 7, i);
    EXPECT_EQ(t.response, " 42");
    const bool cf = t.prompt == "Context: The code is 42.\nQuestion: What is the code?\nAnswer:";
    const bool qf = t.prompt == "Question: What is the code?\nContext: The code is 42.\nAnswer:";
    EXPECT_TRUE(cf || qf) << t.prompt;
    context_first += cf;
    EXPECT_EQ(t.prompt, parse_sft_line(line, "x.jsonl:1", 7, i).prompt);  // deterministic
  }
  EXPECT_GT(context_first, 60);  // both orders occur, about half each
  EXPECT_LT(context_first, 140);
  const SftText pr = parse_sft_line(R"({"prompt": "Say hi.", "response": " hi"})", "x.jsonl:2", 7, 0);
  EXPECT_EQ(pr.prompt, "Say hi.");
  EXPECT_EQ(pr.response, " hi");
  expect_error([] { parse_sft_line(R"({"prompt": "a"})", "f.jsonl:3", 1, 0); }, {"f.jsonl:3", "response"});
  expect_error([] { parse_sft_line(R"({"context": "a", "question": 5, "answer": "b"})", "f.jsonl:4", 1, 0); },
               {"f.jsonl:4", "question"});
  expect_error([] { parse_sft_line(R"({"prompt": "a", "response": "b", "answer": "c"})", "f.jsonl:5", 1, 0); },
               {"f.jsonl:5", "mixes"});
  expect_error([] { parse_sft_line("[1, 2]", "f.jsonl:6", 1, 0); }, {"f.jsonl:6", "JSON object"});
  expect_error([] { parse_sft_line("{\"prompt\": ", "f.jsonl:7", 1, 0); }, {"f.jsonl:7"});
}

TEST(Sft, RowsScoreOnlyTheResponseAndCutThePromptFromTheLeft) {
  const SftExample e{{0, 11, 12, 13}, {21, 22, 0}};  // <eot> p p p | r r <eot>
  std::vector<int32_t> in(8), tg(8);
  sft_row(e, 8, 0, -100, in.data(), tg.data());
  EXPECT_EQ(in, (std::vector<int32_t>{0, 11, 12, 13, 21, 22, 0, 0}));
  // Target t predicts token t+1: 21 (after 13), 22, <eot>; the prompt and the padding are ignored.
  EXPECT_EQ(tg, (std::vector<int32_t>{-100, -100, -100, 21, 22, 0, -100, -100}));
  // A row too short for the whole example: prompt tokens go from the left, after <eot>.
  std::vector<int32_t> in4(4), tg4(4);
  sft_row(e, 4, 0, -100, in4.data(), tg4.data());
  EXPECT_EQ(in4, (std::vector<int32_t>{0, 13, 21, 22}));
  EXPECT_EQ(tg4, (std::vector<int32_t>{-100, 21, 22, 0}));
  // A response longer than the row keeps its beginning.
  std::vector<int32_t> in2(2), tg2(2);
  sft_row(e, 2, 0, -100, in2.data(), tg2.data());
  EXPECT_EQ(in2, (std::vector<int32_t>{0, 21}));
  EXPECT_EQ(tg2, (std::vector<int32_t>{21, 22}));
}

// Packed rows: best fit in decreasing order puts every example in exactly one row, never over the
// row, deterministically, and in fewer rows than one per example.
TEST(Sft, PackingFillsRowsWithEveryExampleOnce) {
  Philox rng(3);
  std::vector<int64_t> lengths;
  for (int i = 0; i < 300; ++i) lengths.push_back(1 + static_cast<int64_t>(rng.uniform_int(64)));
  const auto rows = pack_sft_rows(lengths, 64);
  EXPECT_EQ(rows, pack_sft_rows(lengths, 64));
  std::vector<int> seen(lengths.size(), 0);
  int64_t total = 0;
  for (const auto& row : rows) {
    int64_t used = 0;
    for (int64_t e : row) {
      ++seen[static_cast<size_t>(e)];
      used += lengths[static_cast<size_t>(e)];
    }
    EXPECT_LE(used, 64);
    EXPECT_TRUE(std::is_sorted(row.begin(), row.end()));
    total += used;
  }
  EXPECT_EQ(seen, std::vector<int>(lengths.size(), 1));
  // Close to the bound: the rows hold at least 95% of what the fewest rows possible would.
  const int64_t fewest = (total + 63) / 64;
  EXPECT_LE(static_cast<double>(rows.size()), fewest / 0.95) << total;
  expect_error([&] { pack_sft_rows({3, 65}, 64); }, {"example 1 takes 65 positions"});
}

// A packed row holds each example as sft_row scores it (inputs, targets), with positions from 0 and
// key_begin at the example's start; the padding is a sequence of its own with no targets.
TEST(Sft, PackedRowsScoreEachExampleAsItsOwnRow) {
  const SftExample a{{0, 11, 12}, {21, 0}}, b{{0, 13}, {22, 23, 0}};  // 4 and 4 positions
  std::vector<int32_t> in(10), tg(10), pos(10), kb(10);
  EXPECT_EQ(sft_packed_length(a, 10), 4);
  sft_packed_row({&a, &b}, 10, 0, -100, in.data(), tg.data(), pos.data(), kb.data());
  EXPECT_EQ(in, (std::vector<int32_t>{0, 11, 12, 21, 0, 13, 22, 23, 0, 0}));
  EXPECT_EQ(tg, (std::vector<int32_t>{-100, -100, 21, 0, -100, 22, 23, 0, -100, -100}));
  EXPECT_EQ(pos, (std::vector<int32_t>{0, 1, 2, 3, 0, 1, 2, 3, 0, 1}));
  EXPECT_EQ(kb, (std::vector<int32_t>{0, 0, 0, 0, 4, 4, 4, 4, 8, 8}));
  // The scored targets of each example equal sft_row's.
  std::vector<int32_t> in1(10), tg1(10);
  sft_row(b, 10, 0, -100, in1.data(), tg1.data());
  EXPECT_EQ(std::vector<int32_t>(tg1.begin(), tg1.begin() + 4), std::vector<int32_t>(tg.begin() + 4, tg.begin() + 8));
  expect_error([&] { sft_packed_row({&a, &b, &a}, 10, 0, -100, in.data(), tg.data(), pos.data(), kb.data()); },
               {"more than 10 positions"});
}

TEST(Sft, FilesRoundTripAndBadFilesAreOneError) {
  const std::string dir = testing::temp_dir("sft_files");
  const std::vector<SftExample> examples = {{{5, 6, 7}, {8, 1}}, {{5}, {300, 1}}, {{5, 9}, {1}}};
  write_sft_file(dir + "/a.bin", examples, 2);
  const std::vector<SftExample> back = read_sft_file(dir + "/a.bin", 301);
  ASSERT_EQ(back.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(back[i].prompt, examples[i].prompt);
    EXPECT_EQ(back[i].response, examples[i].response);
  }
  write_sft_file(dir + "/b.bin", examples, 4);
  EXPECT_EQ(read_sft_file(dir + "/b.bin").size(), 3u);
  expect_error([&] { read_sft_file(dir + "/a.bin", 300); }, {dir + "/a.bin", "example 1", "token 300"});
  const std::string good = testing::read_file(dir + "/a.bin");
  auto write = [&](const std::string& bytes) { std::ofstream(dir + "/c.bin", std::ios::binary) << bytes; };
  write(good.substr(0, good.size() - 1));
  expect_error([&] { read_sft_file(dir + "/c.bin"); }, {dir + "/c.bin", "truncated"});
  write(good + "x");
  expect_error([&] { read_sft_file(dir + "/c.bin"); }, {dir + "/c.bin", "trailing"});
  std::string bad_magic = good;
  bad_magic[0] ^= 1;
  write(bad_magic);
  expect_error([&] { read_sft_file(dir + "/c.bin"); }, {dir + "/c.bin", "magic"});
  std::string zero_len = good;
  std::memset(zero_len.data() + 32, 0, 4);  // example 0's prompt length
  write(zero_len);
  expect_error([&] { read_sft_file(dir + "/c.bin"); }, {dir + "/c.bin", "example 0"});
  std::string huge_count = good;
  const int32_t count = 0x7fffffff;
  std::memcpy(huge_count.data() + 12, &count, 4);
  write(huge_count);
  expect_error([&] { read_sft_file(dir + "/c.bin"); }, {dir + "/c.bin", "truncated"});
  write("");
  expect_error([&] { read_sft_file(dir + "/c.bin"); }, {dir + "/c.bin", "header"});
  fs::remove_all(dir);
}

TEST(Sft, LoadersDrawOneExamplePerRow) {
  const std::string dir = testing::temp_dir("sft_loader");
  std::vector<SftExample> train, val;
  for (int i = 0; i < 12; ++i) train.push_back({{0, 10 + i}, {20 + i, 0}});
  for (int i = 0; i < 3; ++i) val.push_back({{0, 40 + i}, {50 + i, 0}});
  write_sft_file(dir + "/sft_train.bin", train, 2);
  write_sft_file(dir + "/sft_val.bin", val, 2);
  std::ofstream(dir + "/data.json") << R"({"format": "sft", "vocab_size": 64, "eot_id": 0, "token_bytes": 2})";
  DataLoader::Options o;
  o.dir = dir;
  o.batch_size = 4;
  o.seq_len = 6;
  o.prefetch = false;
  o.vocab_size = 64;
  DataLoader loader(o);
  EXPECT_EQ(loader.windows(), 12);
  std::vector<int> seen(12, 0);
  for (int b = 0; b < 3; ++b) {  // one epoch: every example once
    Batch batch = loader.next();
    for (int r = 0; r < 4; ++r) {
      const int32_t* in = batch.inputs.data<int32_t>() + r * 6;
      const int32_t* tg = batch.targets.data<int32_t>() + r * 6;
      const int i = in[1] - 10;
      ASSERT_GE(i, 0);
      ++seen[static_cast<size_t>(i)];
      EXPECT_EQ(std::vector<int32_t>(in, in + 6), (std::vector<int32_t>{0, 10 + i, 20 + i, 0, 0, 0}));
      EXPECT_EQ(std::vector<int32_t>(tg, tg + 6), (std::vector<int32_t>{-100, 20 + i, 0, -100, -100, -100}));
    }
  }
  EXPECT_EQ(seen, std::vector<int>(12, 1));
  ValidationLoader v(dir, 2, 6, 0, 1, 64);
  Batch batch;
  int rows = 0;
  while (v.next(batch)) rows += static_cast<int>(batch.inputs.size(0));
  EXPECT_EQ(rows, 3);
  // Packed: the 12 examples (3 positions each) fill 6-position rows two at a time; every example
  // once per epoch, each with its positions and key_begin; validation rows stay one per example.
  o.pack = true;
  o.batch_size = 2;
  DataLoader packed(o);
  EXPECT_EQ(packed.windows(), 6);
  std::vector<int> seen_packed(12, 0);
  for (int b = 0; b < 3; ++b) {
    Batch batch = packed.next();
    ASSERT_TRUE(batch.positions.defined() && batch.key_begin.defined());
    for (int r = 0; r < 2; ++r) {
      const int32_t* in = batch.inputs.data<int32_t>() + r * 6;
      EXPECT_EQ(std::vector<int32_t>(batch.positions.data<int32_t>() + r * 6, batch.positions.data<int32_t>() + r * 6 + 6),
                (std::vector<int32_t>{0, 1, 2, 0, 1, 2}));
      EXPECT_EQ(std::vector<int32_t>(batch.key_begin.data<int32_t>() + r * 6, batch.key_begin.data<int32_t>() + r * 6 + 6),
                (std::vector<int32_t>{0, 0, 0, 3, 3, 3}));
      for (int e = 0; e < 2; ++e) ++seen_packed[static_cast<size_t>(in[3 * e + 1] - 10)];
    }
  }
  EXPECT_EQ(seen_packed, std::vector<int>(12, 1));
  o.vocab_size = 30;  // tokens 30.. are outside: the file and the example are named
  o.pack = false;
  expect_error([&] { DataLoader l(o); }, {dir + "/sft_train.bin", "outside the model's vocabulary"});
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kvroute::data
