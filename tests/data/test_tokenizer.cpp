#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/rng.h"
#include "data/tokenizer.h"
#include "tests/test_util.h"

namespace kvroute::data {
namespace {

namespace fs = std::filesystem;

const std::string kGpt2Dir = std::string(KVROUTE_SOURCE_DIR) + "/data/raw/gpt2";

const Tokenizer& gpt2() {
  static const Tokenizer tok = [] {
    if (!fs::exists(kGpt2Dir + "/encoder.json")) {
      throw std::runtime_error("GPT-2 tokenizer files missing: run scripts/fetch_data.sh --tokenizer-only");
    }
    return Tokenizer::load(kGpt2Dir);
  }();
  return tok;
}

TEST(Tokenizer, MatchesTheJavaScriptGpt2EncoderOnFixtureStrings) {
  std::ifstream in(std::string(KVROUTE_SOURCE_DIR) + "/tests/data/gpt2_cases.json");
  ASSERT_TRUE(in.good());
  nlohmann::json cases = nlohmann::json::parse(in);
  ASSERT_GE(cases.size(), 300u);
  const Tokenizer& tok = gpt2();
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.eot_id(), 50256);
  EncodeCache cache;
  int mismatches = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"];
    std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> ids = tok.encode(text, &cache);
    if (ids != expected && ++mismatches <= 5) {
      ADD_FAILURE() << "text '" << text << "': got " << fmt::format("{}", ids) << " expected "
                    << fmt::format("{}", expected);
    }
    EXPECT_EQ(tok.decode(ids), text);
    EXPECT_EQ(tok.encode(text), ids);  // with and without the cache
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(Tokenizer, RoundTripsRandomBytesIncludingInvalidUtf8) {
  const Tokenizer& tok = gpt2();
  Philox rng(3);
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes(static_cast<size_t>(rng.uniform_int(200)), '\0');
    for (char& c : bytes) c = static_cast<char>(rng.uniform_int(256));
    std::vector<int32_t> ids = tok.encode(bytes);
    ASSERT_EQ(tok.decode(ids), bytes) << "trial " << trial;
  }
  // Truncated multi-byte sequences, lone continuation bytes, overlong forms.
  for (std::string s : {std::string("\xe2\x82"), std::string("a\x80" "b"), std::string("\xc0\xaf"),
                        std::string("\xff\xfe text"), std::string("caf\xc3")}) {
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
}

void corpus(const std::function<void(std::string_view)>& emit) {
  for (int i = 0; i < 50; ++i) {
    emit(fmt::format("The whale number {} swam past the ship. It's the {}th whale; don't forget it!\n", i, i * 7));
    emit("Call me Ishmael. Some years ago - never mind how long precisely - having little or no money...\n");
    emit("naïve café, Zürich, 日本語 text and emoji 🙂\n");
  }
}

TEST(Tokenizer, TrainingIsDeterministicAndRoundTrips) {
  Tokenizer a = Tokenizer::train(corpus, 400);
  Tokenizer b = Tokenizer::train(corpus, 400);
  EXPECT_EQ(a.vocab_size(), 400);
  EXPECT_EQ(a.eot_id(), 399);
  const std::string da = testing::temp_dir("bpe_a"), db = testing::temp_dir("bpe_b");
  a.save(da);
  b.save(db);
  for (const char* file : {"/encoder.json", "/vocab.bpe"}) {
    std::ifstream fa(da + file), fb(db + file);
    std::string sa((std::istreambuf_iterator<char>(fa)), {}), sb((std::istreambuf_iterator<char>(fb)), {});
    EXPECT_EQ(sa, sb) << file;
    EXPECT_GT(sa.size(), 100u);
  }
  Tokenizer loaded = Tokenizer::load(da);
  const std::string text = "The whale number 12 swam past the ship. Call me Ishmael! naïve 🙂";
  EXPECT_EQ(loaded.encode(text), a.encode(text));
  EXPECT_EQ(loaded.decode(loaded.encode(text)), text);
  EXPECT_LT(a.encode(text).size(), text.size() / 2);  // merges compress
  // The most frequent pair of this corpus comes first: ' ' + 'w'... (a space-prefixed pair).
  std::ifstream merges(da + "/vocab.bpe");
  std::string header, first;
  std::getline(merges, header);
  std::getline(merges, first);
  EXPECT_EQ(header, "#version: 0.2");
  EXPECT_FALSE(first.empty());
}

TEST(Tokenizer, BadFilesGiveErrorsNamingTheFile) {
  const std::string dir = testing::temp_dir("bad_tok");
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {dir + "/encoder.json", "no such file"});
  { std::ofstream(dir + "/encoder.json") << "{\"a\": 0, "; }
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {dir + "/encoder.json", "invalid JSON"});
  Tokenizer small = Tokenizer::train(corpus, 300);
  small.save(dir);
  { std::ofstream(dir + "/vocab.bpe", std::ios::app) << "onlyone\n"; }
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {dir + "/vocab.bpe:", "expected 'LEFT RIGHT'"});
  testing::expect_error([] { (void)Tokenizer::train(corpus, 100); }, {"--vocab", "257", "100"});
}

}  // namespace
}  // namespace kvroute::data
