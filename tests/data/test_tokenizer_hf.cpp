// Hugging Face tokenizer.json loading: cl100k_base parity with js-tiktoken (tests/data/cl100k_cases.json,
// data/raw/cl100k/tokenizer.json from scripts/fetch_data.sh --tokenizer-only), GPT-2's files through
// the tokenizer.json path, hand-written tokenizers (NFC, added tokens, ignore_merges, holes, eos),
// and the errors every malformed file gives.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"
#include "data/tokenizer.h"
#include "tests/test_util.h"

namespace kvroute::data {
namespace {

namespace fs = std::filesystem;
using OJson = nlohmann::ordered_json;

const std::string kSource = KVROUTE_SOURCE_DIR;
const std::string kCl100kDir = kSource + "/data/raw/cl100k";

// ---- GPT-2's bytes_to_unicode, written out again for the test ------------------------------------------

std::vector<int> byte_order() {
  std::vector<int> bs;
  for (int b = '!'; b <= '~'; ++b) bs.push_back(b);
  for (int b = 0xA1; b <= 0xAC; ++b) bs.push_back(b);
  for (int b = 0xAE; b <= 0xFF; ++b) bs.push_back(b);
  for (int b = 0; b < 256; ++b) {
    if (std::find(bs.begin(), bs.end(), b) == bs.end()) bs.push_back(b);
  }
  return bs;  // GPT-2's id order of the byte tokens; the i-th one is spelled as code point cs[i]
}

std::string spell(std::string_view raw) {
  static const std::vector<int> order = byte_order();
  static const std::vector<uint32_t> cp = [] {
    std::vector<uint32_t> m(256);
    int n = 0;
    for (size_t i = 0; i < order.size(); ++i) {
      const int b = order[i];
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      m[static_cast<size_t>(b)] = printable ? static_cast<uint32_t>(b) : static_cast<uint32_t>(256 + n++);
    }
    return m;
  }();
  std::string out;
  for (unsigned char c : raw) {
    const uint32_t u = cp[c];
    if (u < 0x80) {
      out += static_cast<char>(u);
    } else {
      out += static_cast<char>(0xC0 | (u >> 6));
      out += static_cast<char>(0x80 | (u & 0x3F));
    }
  }
  return out;
}

int32_t byte_id(unsigned char b) {
  static const std::vector<int> order = byte_order();
  return static_cast<int32_t>(std::find(order.begin(), order.end(), b) - order.begin());
}

std::vector<int32_t> byte_ids(std::string_view s) {
  std::vector<int32_t> ids;
  for (unsigned char c : s) ids.push_back(byte_id(c));
  return ids;
}

// ---- cl100k_base: parity with js-tiktoken -----------------------------------------------------------------

nlohmann::json read_cases(const std::string& name) {
  std::ifstream in(kSource + "/tests/data/" + name);
  EXPECT_TRUE(in.good()) << name;
  return nlohmann::json::parse(in);
}

const Tokenizer* cl100k() {
  static const std::unique_ptr<Tokenizer> tok = []() -> std::unique_ptr<Tokenizer> {
    if (!fs::exists(kCl100kDir + "/tokenizer.json")) return nullptr;
    const auto t0 = std::chrono::steady_clock::now();
    auto t = std::make_unique<Tokenizer>(Tokenizer::load(kCl100kDir));
    std::printf("cl100k tokenizer.json loaded in %.2f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return t;
  }();
  return tok.get();
}

#define REQUIRE_CL100K()                                                                                   \
  if (cl100k() == nullptr) {                                                                               \
    GTEST_SKIP() << kCl100kDir << "/tokenizer.json missing: run scripts/fetch_data.sh --tokenizer-only"; \
  }

TEST(HfTokenizer, Cl100kMatchesJsTiktokenOnFixtureStrings) {
  REQUIRE_CL100K();
  const Tokenizer& tok = *cl100k();
  EXPECT_EQ(tok.format(), "hf");
  EXPECT_EQ(tok.files(), std::vector<std::string>{kCl100kDir + "/tokenizer.json"});
  EXPECT_EQ(tok.vocab_size(), 100277);  // ranks 0..100255, special tokens up to 100276
  EXPECT_EQ(tok.eot_id(), 100257);
  const nlohmann::json cases = read_cases("cl100k_cases.json");
  ASSERT_GE(cases.size(), 300u);
  EncodeCache cache;
  int mismatches = 0;
  size_t bytes = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const std::vector<int32_t> expected = c["ids"].get<std::vector<int32_t>>();
    const std::vector<int32_t> ids = tok.encode(text);
    bytes += text.size();
    if (ids != expected && ++mismatches <= 5) {
      ADD_FAILURE() << "text " << nlohmann::json(text).dump() << ": got " << fmt::format("{}", ids) << " expected "
                    << fmt::format("{}", expected);
    }
    EXPECT_EQ(tok.decode(ids), text);
    EXPECT_EQ(tok.encode(text, &cache), ids);  // with and without the cache
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("cl100k: %d of %zu cases differ from js-tiktoken; %zu bytes encoded (x2) and decoded in %.3f s\n",
              mismatches, cases.size(), bytes, seconds);
  EXPECT_EQ(mismatches, 0);
}

// Letters and digits of Unicode 15 and 16 (CJK Extensions H and I, Kawi, Nag Mundari, Garay, ...)
// and U+180E, against ids from Hugging Face's Rust tokenizers (tests/data/make_unicode_cases.js):
// its \p{L}, \p{N} and \s are Unicode 16.0's, PCRE2 10.42's are Unicode 14's (54 of these 119
// strings differed before the pattern rewrite, unicode16_pattern).
TEST(HfTokenizer, Cl100kMatchesTheRustLibraryOnUnicode16Characters) {
  REQUIRE_CL100K();
  const Tokenizer& tok = *cl100k();
  const nlohmann::json cases = read_cases("unicode_cases.json");
  ASSERT_GE(cases.size(), 100u);
  int mismatches = 0;
  for (const auto& c : cases) {
    const std::string text = c["text"];
    const std::vector<int32_t> ids = tok.encode(text);
    if (ids != c["ids"].get<std::vector<int32_t>>() && ++mismatches <= 5) {
      ADD_FAILURE() << "text " << nlohmann::json(text).dump() << ": got " << fmt::format("{}", ids) << " expected "
                    << fmt::format("{}", c["ids"].get<std::vector<int32_t>>());
    }
    EXPECT_EQ(tok.decode(ids), text);
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(HfTokenizer, Unicode16RewriteKeepsEscapesAndClasses) {
  // Outside a class a bracket is added; inside, the ranges join the class; other escapes stay.
  const std::string p = unicode16_pattern(R"(\p{L}+|[^\s\p{N}]|\S|\\p{L}|[\]\p{L}]|\d)");
  EXPECT_EQ(p.find(R"([\p{L}\x{1c89}-\x{1c8a})"), 0u) << p;      // a class around \p{L} and its ranges
  EXPECT_NE(p.find(R"([^\t-\r\x{20})"), std::string::npos) << p;  // \s inside [^...], no extra bracket
  EXPECT_NE(p.find(R"(\p{N}\x{10d40})"), std::string::npos) << p;  // \p{N}'s ranges join the class
  EXPECT_NE(p.find(R"(|\\p{L}|)"), std::string::npos) << p;        // an escaped backslash stays
  EXPECT_NE(p.find(R"([\]\p{L}\x{1c89})"), std::string::npos) << p; // an escaped ']' does not end the class
  EXPECT_NE(p.find(R"(|\d)"), std::string::npos) << p;
  // U+180E is not whitespace to Hugging Face: it stays with the word before it.
  const PreTokenizer ws(R"(\s+|\S+)");
  std::vector<std::string> pieces;
  ws.split("x\u180E y", [&](std::string_view piece) { pieces.emplace_back(piece); });
  EXPECT_EQ(pieces, (std::vector<std::string>{"x\u180E", " ", "y"}));
}

// tiktoken's pattern (case-insensitive group, possessive quantifiers), the spelling Llama 3's and
// Hugging Face's converted files use, and js-tiktoken's (case variants spelled out) split alike.
TEST(HfTokenizer, Cl100kPatternSpellingsSplitAlike) {
  const PreTokenizer tiktoken(
      R"('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+)");
  const PreTokenizer llama3(
      R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)");
  const PreTokenizer js(
      R"(('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)");
  auto pieces = [](const PreTokenizer& p, std::string_view text) {
    std::vector<std::string> out;
    p.split(text, [&](std::string_view s) { out.emplace_back(s); });
    return out;
  };
  std::vector<std::string> texts;
  for (const auto& c : read_cases("cl100k_cases.json")) texts.push_back(c["text"]);
  texts.push_back("a\xff'S\xc3 \n\xe2\x82 12345");  // not UTF-8
  for (const std::string& text : texts) {
    const auto expected = pieces(tiktoken, text);
    EXPECT_EQ(pieces(llama3, text), expected) << nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    EXPECT_EQ(pieces(js, text), expected);
  }
  // Where they differ: the case-insensitive 's also matches 'ſ (U+017F, which folds to s), as in
  // tiktoken's Rust regex; js-tiktoken's spelled-out variants do not (the fixture leaves it out).
  EXPECT_EQ(pieces(tiktoken, "it'\xc5\xbf" "a"), (std::vector<std::string>{"it", "'\xc5\xbf", "a"}));
  EXPECT_EQ(pieces(js, "it'\xc5\xbf" "a"), (std::vector<std::string>{"it", "'\xc5\xbf" "a"}));
}

TEST(HfTokenizer, Cl100kAddedTokensHolesAndRandomBytes) {
  REQUIRE_CL100K();
  const Tokenizer& tok = *cl100k();
  // Special tokens in the text are matched before splitting, wherever they are.
  EXPECT_EQ(tok.encode("<|endoftext|>"), std::vector<int32_t>{100257});
  const std::vector<int32_t> ids = tok.encode("a<|fim_prefix|>b<|endofprompt|><|endoftext|>");
  EXPECT_EQ(ids, (std::vector<int32_t>{64, 100258, 65, 100276, 100257}));
  EXPECT_EQ(tok.decode(ids), "a<|fim_prefix|>b<|endofprompt|><|endoftext|>");
  for (int32_t id : tok.encode("<|endoftext")) EXPECT_LT(id, 100256);  // not a match: plain text
  // Ids no token uses (100256, 100261..100275) are holes.
  testing::expect_error([&] { (void)tok.decode({100256}); }, {"tokenizer.decode", "100256", "not a token"});
  EXPECT_FALSE(tok.is_token(100256));
  EXPECT_FALSE(tok.is_token(100270));
  EXPECT_TRUE(tok.is_token(100255));
  EXPECT_TRUE(tok.is_token(100276));
  EXPECT_FALSE(tok.is_token(100277));
  testing::expect_error([&] { (void)tok.decode({100277}); }, {"tokenizer.decode", "100277", "outside"});
  Philox rng(5);
  for (int trial = 0; trial < 200; ++trial) {
    std::string bytes(static_cast<size_t>(rng.uniform_int(300)), '\0');
    for (char& c : bytes) c = static_cast<char>(rng.uniform_int(trial % 2 ? 256 : 128));
    ASSERT_EQ(tok.decode(tok.encode(bytes)), bytes) << "trial " << trial;
  }
  for (std::string s : {std::string("\xe2\x82"), std::string("a\x80" "b"), std::string("\xc0\xaf"),
                        std::string("\xed\xa0\x80 surrogate"), std::string("\xff\xfe text"), std::string("caf\xc3")}) {
    EXPECT_EQ(tok.decode(tok.encode(s)), s);
  }
  // Long runs: the pattern's JIT matching copes (a JIT stack overflow would fall back, not cut).
  const std::string spaces(1 << 20, ' ');
  EXPECT_EQ(tok.decode(tok.encode(spaces + "x")), spaces + "x");
  const std::string letters(1 << 18, 'q');
  EXPECT_EQ(tok.decode(tok.encode(letters)), letters);
}

// ---- GPT-2's files as a tokenizer.json: the same ids through the Hugging Face path ----------------------

TEST(HfTokenizer, Gpt2AsTokenizerJsonMatchesTheJavaScriptEncoder) {
  const std::string gpt2 = kSource + "/data/raw/gpt2";
  if (!fs::exists(gpt2 + "/encoder.json")) GTEST_SKIP() << "GPT-2 files missing: run scripts/fetch_data.sh --tokenizer-only";
  std::ifstream bpe(gpt2 + "/vocab.bpe");
  OJson merges = OJson::array();
  std::string line;
  std::getline(bpe, line);  // #version
  while (std::getline(bpe, line)) {
    if (!line.empty()) merges.push_back(line);
  }
  OJson j = {{"version", "1.0"},
             {"added_tokens", OJson::array({{{"id", 50256}, {"content", "<|endoftext|>"}, {"single_word", false},
                                             {"lstrip", false}, {"rstrip", false}, {"normalized", true}, {"special", true}}})},
             {"normalizer", nullptr},
             {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
             {"post_processor", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", false}, {"use_regex", true}}},
             {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
             {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", ""},
                        {"end_of_word_suffix", ""}, {"fuse_unk", false}, {"byte_fallback", false}, {"vocab", "@VOCAB@"},
                        {"merges", merges}}}};
  // encoder.json spliced in as text (an ordered_json object of 50k keys builds in quadratic time).
  std::string text = j.dump();
  text.replace(text.find("\"@VOCAB@\""), 9, testing::read_file(gpt2 + "/encoder.json"));
  const std::string dir = testing::temp_dir("hf_gpt2");
  { std::ofstream(dir + "/tokenizer.json") << text; }
  const Tokenizer tok = Tokenizer::load(dir);
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.eot_id(), 50256);
  int mismatches = 0, checked = 0;
  for (const auto& c : read_cases("gpt2_cases.json")) {
    const std::string text = c["text"];
    if (text.find("<|endoftext|>") != std::string::npos) continue;  // an added token here, plain text there
    ++checked;
    const std::vector<int32_t> ids = tok.encode(text);
    if (ids != c["ids"].get<std::vector<int32_t>>() && ++mismatches <= 5) ADD_FAILURE() << "text '" << text << "'";
    EXPECT_EQ(tok.decode(ids), text);
  }
  EXPECT_GE(checked, 300);
  EXPECT_EQ(mismatches, 0);
}

// ---- Hand-written tokenizers ------------------------------------------------------------------------------

// 256 byte tokens (GPT-2's order), then " t" (256), "he" (257), " the" (258), "é" (259, C3 A9) by
// merges and "abc" (260) without one; added tokens <|endoftext|> (300), <b> (301), <b><i> (302).
OJson small_tokenizer() {
  OJson vocab = OJson::object();
  const std::vector<int> order = byte_order();
  for (size_t i = 0; i < order.size(); ++i) vocab[spell(std::string(1, static_cast<char>(order[i])))] = i;
  vocab[spell(" t")] = 256;
  vocab[spell("he")] = 257;
  vocab[spell(" the")] = 258;
  vocab[spell("\xc3\xa9")] = 259;
  vocab[spell("abc")] = 260;
  OJson merges = OJson::array({spell(" ") + " t", OJson::array({"h", "e"}), spell(" t") + " he",
                               OJson::array({spell("\xc3"), spell("\xa9")})});
  auto added = [](int id, const char* content, bool special) {
    return OJson{{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                 {"normalized", !special}, {"special", special}};
  };
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", OJson::array({added(300, "<|endoftext|>", true), added(301, "<b>", false),
                                         added(302, "<b><i>", false)})},
          {"normalizer", nullptr},
          {"pre_tokenizer",
           {{"type", "Sequence"},
            {"pretokenizers", OJson::array({{{"type", "Split"}, {"pattern", {{"Regex", kGpt2Pattern}}},
                                             {"behavior", "Isolated"}, {"invert", false}},
                                            {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", false},
                                             {"use_regex", false}}})}}},
          {"post_processor", nullptr},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                     {"ignore_merges", false}, {"vocab", vocab}, {"merges", merges}}}};
}

std::string write_tokenizer(const std::string& name, const OJson& j, const OJson& config = nullptr) {
  const std::string dir = testing::temp_dir(name);
  { std::ofstream(dir + "/tokenizer.json") << j.dump(); }
  if (!config.is_null()) std::ofstream(dir + "/tokenizer_config.json") << config.dump();
  return dir;
}

std::vector<int32_t> concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

TEST(HfTokenizer, SmallTokenizerMergesAddedTokensAndHoles) {
  const std::string dir = write_tokenizer("hf_small", small_tokenizer());
  const Tokenizer tok = Tokenizer::load(dir);
  EXPECT_EQ(tok.format(), "hf");
  EXPECT_EQ(tok.files(), std::vector<std::string>{dir + "/tokenizer.json"});
  EXPECT_EQ(tok.vocab_size(), 303);
  EXPECT_EQ(tok.eot_id(), 300);
  EXPECT_EQ(tok.num_merges(), 4u);
  EXPECT_EQ(tok.encode(" the"), std::vector<int32_t>{258});
  EXPECT_EQ(tok.encode("he the"), (std::vector<int32_t>{257, 258}));
  EXPECT_EQ(tok.encode("abc"), byte_ids("abc"));  // no merge makes "abc", and ignore_merges is off
  // Added tokens: longest first, anywhere (inside words too), special or not.
  EXPECT_EQ(tok.encode("<b><i>x<b>y<|endoftext|>"),
            concat({{302}, byte_ids("x"), {301}, byte_ids("y"), {300}}));
  EXPECT_EQ(tok.encode("the<b>"), concat({byte_ids("t"), {257}, {301}}));
  EXPECT_EQ(tok.decode({302, 301, 258, 300}), "<b><i><b> the<|endoftext|>");
  // Without NFC, a decomposed é stays two characters.
  EXPECT_EQ(tok.encode("\xc3\xa9"), std::vector<int32_t>{259});
  EXPECT_EQ(tok.encode("e\xcc\x81"), byte_ids("e\xcc\x81"));
  testing::expect_error([&] { (void)tok.decode({261}); }, {"tokenizer.decode", "261", "not a token"});
  testing::expect_error([&] { tok.save(testing::temp_dir("hf_save")); }, {"tokenizer save", "copied"});
}

TEST(HfTokenizer, IgnoreMergesEmitsAPieceThatIsATokenWhole) {
  OJson j = small_tokenizer();
  j["model"]["ignore_merges"] = true;
  const Tokenizer tok = Tokenizer::load(write_tokenizer("hf_ignore", j));
  EXPECT_EQ(tok.encode("abc"), std::vector<int32_t>{260});
  EXPECT_EQ(tok.encode("abcd"), byte_ids("abcd"));  // not a token: merges as usual
  EXPECT_EQ(tok.encode(" the abc"), concat({{258}, byte_ids(" abc")}));  // " abc" is a piece, not a token
}

TEST(HfTokenizer, NfcNormalizesValidUtf8AndKeepsOtherBytes) {
  OJson j = small_tokenizer();
  j["normalizer"] = {{"type", "NFC"}};
  j["added_tokens"].push_back({{"id", 303}, {"content", "\xc3\xa9!"}, {"normalized", true}, {"special", false}});
  const Tokenizer tok = Tokenizer::load(write_tokenizer("hf_nfc", j));
  EXPECT_EQ(tok.encode("e\xcc\x81"), std::vector<int32_t>{259});  // e + U+0301 -> é before splitting
  EXPECT_EQ(tok.encode("\xc3\xa9"), std::vector<int32_t>{259});
  EXPECT_EQ(tok.decode(tok.encode("cafe\xcc\x81")), "caf\xc3\xa9");
  EXPECT_EQ(tok.encode("e\xcc\x81!"), std::vector<int32_t>{303});  // a normalised added token matches after NFC
  // Bytes that are not UTF-8 are kept; the valid text around them is normalised.
  EXPECT_EQ(tok.decode(tok.encode("\xff" "e\xcc\x81\xc3")), "\xff\xc3\xa9\xc3");
  Philox rng(9);
  for (int trial = 0; trial < 100; ++trial) {
    std::string bytes(static_cast<size_t>(rng.uniform_int(100)), '\0');
    for (char& c : bytes) c = static_cast<char>(0x80 + rng.uniform_int(128));  // mostly not UTF-8
    const std::string back = tok.decode(tok.encode(bytes));
    EXPECT_EQ(tok.decode(tok.encode(back)), back);  // NFC is idempotent
  }
  const std::string invalid = "\x80\x81\xfe\xff\xc0\xaf";
  EXPECT_EQ(tok.decode(tok.encode(invalid)), invalid);
  // A sequence of normalizers that holds only NFC is the same.
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", OJson::array({{{"type", "NFC"}}})}};
  EXPECT_EQ(Tokenizer::load(write_tokenizer("hf_nfc_seq", j)).encode("e\xcc\x81"), std::vector<int32_t>{259});
}

TEST(HfTokenizer, StringSplitByteLevelRegexAndMergePairs) {
  OJson j = small_tokenizer();
  // Split on a literal (with regex metacharacters), then ByteLevel's own GPT-2 regex.
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", OJson::array({{{"type", "Split"}, {"pattern", {{"String", ".*"}}},
                                                         {"behavior", "Isolated"}, {"invert", false}},
                                                        {{"type", "ByteLevel"}, {"add_prefix_space", false}}})}};
  const Tokenizer tok = Tokenizer::load(write_tokenizer("hf_string", j));
  EXPECT_EQ(tok.encode("he.* the"), concat({{257}, byte_ids(".*"), {258}}));
  EXPECT_EQ(tok.encode("he.*he"), concat({{257}, byte_ids(".*"), {257}}));
  // A bare ByteLevel without its regex splits nothing: " the the" is one piece.
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"use_regex", false}};
  EXPECT_EQ(Tokenizer::load(write_tokenizer("hf_noregex", j)).encode(" the the"), (std::vector<int32_t>{258, 258}));
}

TEST(HfTokenizer, EndOfTextFromTokenizerConfigOrFallbacks) {
  OJson j = small_tokenizer();
  std::string dir = write_tokenizer("hf_eos1", j, {{"eos_token", "<b>"}});
  Tokenizer tok = Tokenizer::load(dir);
  EXPECT_EQ(tok.eot_id(), 301);
  EXPECT_EQ(tok.files(), (std::vector<std::string>{dir + "/tokenizer.json", dir + "/tokenizer_config.json"}));
  EXPECT_EQ(Tokenizer::load(write_tokenizer("hf_eos2", j, {{"eos_token", {{"content", " the"}, {"lstrip", false}}}})).eot_id(),
            258);  // a vocabulary token
  EXPECT_EQ(Tokenizer::load(write_tokenizer("hf_eos3", j, {{"eos_token", nullptr}})).eot_id(), 300);
  j["added_tokens"][0]["content"] = "</s>";
  EXPECT_EQ(Tokenizer::load(write_tokenizer("hf_eos4", j)).eot_id(), 300);
  j["added_tokens"].push_back({{"id", 310}, {"content", "<|end_of_text|>"}, {"special", true}});
  EXPECT_EQ(Tokenizer::load(write_tokenizer("hf_eos5", j)).eot_id(), 310);  // before </s>
  j["added_tokens"][0]["content"] = "<|im_end|>";
  j["added_tokens"].erase(3);
  dir = write_tokenizer("hf_eos6", j);
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {dir + "/tokenizer.json", "no end-of-text token"});
  dir = write_tokenizer("hf_eos7", j, {{"eos_token", "<|nope|>"}});
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {dir + "/tokenizer_config.json", "eos_token", "<|nope|>"});
  dir = write_tokenizer("hf_eos8", j, {{"eos_token", 7}});
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {dir + "/tokenizer_config.json", "eos_token", "7"});
  dir = write_tokenizer("hf_eos9", j);
  { std::ofstream(dir + "/tokenizer_config.json") << "{\"eos_token\": "; }
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {dir + "/tokenizer_config.json", "invalid JSON"});
}

// Each malformed tokenizer.json gives one error naming the file and the key.
TEST(HfTokenizer, BadTokenizerJsonGivesErrorsNamingFileAndKey) {
  struct Case {
    const char* name;
    std::function<void(OJson&)> mutate;
    std::vector<std::string> fragments;
  };
  const std::string big = std::to_string(int64_t{1} << 24);
  const std::vector<Case> cases = {
      {"root", [](OJson& j) { j = OJson::array(); }, {"expected a JSON object"}},
      {"no-model", [](OJson& j) { j.erase("model"); }, {"model: missing"}},
      {"model-type", [](OJson& j) { j["model"]["type"] = "WordPiece"; }, {"model.type", "\"WordPiece\"", "BPE"}},
      {"model-type-int", [](OJson& j) { j["model"]["type"] = 3; }, {"model.type", "expected a string"}},
      {"vocab-array", [](OJson& j) { j["model"]["vocab"] = OJson::array(); }, {"model.vocab", "expected an object"}},
      {"vocab-empty", [](OJson& j) { j["model"]["vocab"] = OJson::object(); }, {"model.vocab", "1 to 2^24"}},
      {"vocab-id-string", [](OJson& j) { j["model"]["vocab"]["abc"] = "7"; }, {"model.vocab[\"abc\"]", "\"7\""}},
      {"vocab-id-negative", [](OJson& j) { j["model"]["vocab"]["abc"] = -1; }, {"model.vocab[\"abc\"]", "-1"}},
      {"vocab-id-huge", [big](OJson& j) { j["model"]["vocab"]["abc"] = int64_t{1} << 24; }, {"model.vocab[\"abc\"]", big}},
      {"vocab-id-float", [](OJson& j) { j["model"]["vocab"]["abc"] = 1.5; }, {"model.vocab[\"abc\"]", "1.5"}},
      {"vocab-duplicate-id", [](OJson& j) { j["model"]["vocab"]["abc"] = 258; }, {"model.vocab", "both have id 258"}},
      {"vocab-not-byte-level", [](OJson& j) { j["model"]["vocab"]["\xe4\xb8\x80"] = 270; },
       {"model.vocab[\"\xe4\xb8\x80\"]", "byte-level"}},
      {"vocab-no-byte", [](OJson& j) { j["model"]["vocab"].erase("a"); }, {"model.vocab", "no token for byte 0x61"}},
      {"merges-missing", [](OJson& j) { j["model"].erase("merges"); }, {"model.merges: missing"}},
      {"merges-object", [](OJson& j) { j["model"]["merges"] = OJson::object(); }, {"model.merges", "expected an array"}},
      {"merge-one-word", [](OJson& j) { j["model"]["merges"][1] = "he"; }, {"model.merges[1]", "LEFT RIGHT"}},
      {"merge-three-words", [](OJson& j) { j["model"]["merges"][1] = "h e x"; }, {"model.merges[1]", "LEFT RIGHT"}},
      {"merge-number", [](OJson& j) { j["model"]["merges"][2] = 5; }, {"model.merges[2]", "[LEFT, RIGHT]"}},
      {"merge-pair-of-three", [](OJson& j) { j["model"]["merges"][1] = OJson::array({"h", "e", "x"}); },
       {"model.merges[1]", "[LEFT, RIGHT]"}},
      {"merge-unknown", [](OJson& j) { j["model"]["merges"].push_back("x yz"); },
       {"model.merges[4]", "\"x yz\"", "missing from model.vocab"}},
      {"merge-no-result", [](OJson& j) { j["model"]["merges"].push_back("x y"); },
       {"model.merges[4]", "missing from model.vocab"}},
      {"dropout", [](OJson& j) { j["model"]["dropout"] = 0.1; }, {"model.dropout", "0.1", "not supported"}},
      {"byte-fallback", [](OJson& j) { j["model"]["byte_fallback"] = true; }, {"model.byte_fallback", "true"}},
      {"prefix", [](OJson& j) { j["model"]["continuing_subword_prefix"] = "##"; }, {"model.continuing_subword_prefix", "##"}},
      {"suffix", [](OJson& j) { j["model"]["end_of_word_suffix"] = "</w>"; }, {"model.end_of_word_suffix", "</w>"}},
      {"ignore-merges-int", [](OJson& j) { j["model"]["ignore_merges"] = 1; }, {"model.ignore_merges", "true or false"}},
      {"normalizer-nfkc", [](OJson& j) { j["normalizer"] = {{"type", "NFKC"}}; }, {"normalizer.type", "\"NFKC\"", "NFC"}},
      {"normalizer-seq", [](OJson& j) { j["normalizer"] = {{"type", "Sequence"}, {"normalizers", OJson::array({{{"type", "Lowercase"}}})}}; },
       {"normalizer.normalizers[0].type", "\"Lowercase\""}},
      {"normalizer-string", [](OJson& j) { j["normalizer"] = "NFC"; }, {"normalizer", "expected an object"}},
      {"pre-missing", [](OJson& j) { j["pre_tokenizer"] = nullptr; }, {"pre_tokenizer", "missing"}},
      {"pre-metaspace", [](OJson& j) { j["pre_tokenizer"] = {{"type", "Metaspace"}}; }, {"pre_tokenizer.type", "\"Metaspace\""}},
      {"pre-seq-empty", [](OJson& j) { j["pre_tokenizer"]["pretokenizers"] = OJson::array(); }, {"pre_tokenizer.pretokenizers", "1 to 16"}},
      {"split-removed", [](OJson& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Removed"; },
       {"pre_tokenizer.pretokenizers[0].behavior", "\"Removed\"", "Isolated"}},
      {"split-invert", [](OJson& j) { j["pre_tokenizer"]["pretokenizers"][0]["invert"] = true; },
       {"pre_tokenizer.pretokenizers[0].invert", "true"}},
      {"split-bad-regex", [](OJson& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(ab|c"; },
       {"pre_tokenizer.pretokenizers[0].pattern.Regex", "\"(ab|c\"", "missing closing parenthesis", "offset 5"}},
      {"split-bad-pattern", [](OJson& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Glob", "*"}}; },
       {"pre_tokenizer.pretokenizers[0].pattern", "Regex"}},
      {"split-empty-string", [](OJson& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"String", ""}}; },
       {"pre_tokenizer.pretokenizers[0].pattern.String", "empty"}},
      {"split-last", [](OJson& j) { j["pre_tokenizer"]["pretokenizers"].erase(1); },
       {"pre_tokenizer.pretokenizers[0].type", "ByteLevel"}},
      {"bytelevel-first", [](OJson& j) { auto& p = j["pre_tokenizer"]["pretokenizers"]; std::swap(p[0], p[1]); },
       {"pre_tokenizer.pretokenizers[0].type", "last"}},
      {"prefix-space", [](OJson& j) { j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true; },
       {"pre_tokenizer.pretokenizers[1].add_prefix_space", "true"}},
      {"decoder", [](OJson& j) { j["decoder"] = {{"type", "WordPiece"}}; }, {"decoder.type", "\"WordPiece\""}},
      {"added-not-array", [](OJson& j) { j["added_tokens"] = OJson::object(); }, {"added_tokens", "expected an array"}},
      {"added-no-id", [](OJson& j) { j["added_tokens"][1].erase("id"); }, {"added_tokens[1].id", "missing"}},
      {"added-huge-id", [big](OJson& j) { j["added_tokens"][1]["id"] = int64_t{1} << 40; }, {"added_tokens[1].id", "1099511627776"}},
      {"added-empty", [](OJson& j) { j["added_tokens"][1]["content"] = ""; }, {"added_tokens[1].content", "empty"}},
      {"added-lstrip", [](OJson& j) { j["added_tokens"][1]["lstrip"] = true; }, {"added_tokens[1].lstrip", "true"}},
      {"added-single-word", [](OJson& j) { j["added_tokens"][2]["single_word"] = true; }, {"added_tokens[2].single_word"}},
      {"added-collides", [](OJson& j) { j["added_tokens"][1]["id"] = 258; }, {"added_tokens[1].id", "258", "already"}},
      {"added-twice", [](OJson& j) { j["added_tokens"][2]["content"] = "<b>"; }, {"added_tokens[2].content", "\"<b>\""}},
      {"added-same-id", [](OJson& j) { j["added_tokens"][2]["id"] = 301; }, {"added_tokens[2].id", "301", "already"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    OJson j = small_tokenizer();
    c.mutate(j);
    const std::string dir = write_tokenizer(std::string("hf_bad_") + c.name, j);
    std::vector<std::string> fragments = c.fragments;
    fragments.push_back(dir + "/tokenizer.json: ");
    testing::expect_error([&] { (void)Tokenizer::load(dir); }, fragments);
    fs::remove_all(dir);
  }
  // Files that are not JSON, JSON too deep, duplicate keys, not a regular file.
  const std::string dir = testing::temp_dir("hf_bad_files");
  const std::string file = dir + "/tokenizer.json";
  { std::ofstream(file) << "{\"model\": {"; }
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {file, "invalid JSON"});
  { std::ofstream(file) << std::string(100, '[') << std::string(100, ']'); }
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {file, "invalid JSON", "nested deeper"});
  { std::ofstream(file) << "{\"model\": {\"type\": \"BPE\", \"type\": \"BPE\"}}"; }
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {file, "duplicate key \"type\""});
  fs::remove(file);
  fs::create_directory(file);
  testing::expect_error([&] { (void)Tokenizer::load(dir); }, {file});
}

}  // namespace
}  // namespace kvroute::data
