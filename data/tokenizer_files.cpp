// Tokenizer files (data/tokenizer.h): GPT-2's encoder.json + vocab.bpe and Hugging Face's
// tokenizer.json (byte-level BPE) in, GPT-2's files out; the added-token matcher they build.
#include "data/tokenizer.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <queue>
#include <sstream>
#include <unordered_set>

#include <omp.h>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/text.h"
#include "data/tokenizer_internal.h"

namespace kvroute::data {

// ---- Tokenizer: files --------------------------------------------------------------------------------

namespace {

// Tokenizer files hold objects of 50k-200k keys (the vocabulary). They are parsed into
// nlohmann::json, whose objects are maps: json::Json keeps insertion order in a vector with a
// linear search per key, which is quadratic (seconds for GPT-2's encoder.json, about a minute for a
// 150k vocabulary). The checks are json::parse's: bounded nesting, duplicate keys refused, errors
// "FILE: invalid JSON: ...".
using Doc = nlohmann::json;

Doc parse_tokenizer_json(const std::string& path, int max_depth) {
  return json::parse_unordered(io::read_file(path), path, max_depth);
}

std::string cut(const Doc& value) {
  return kvroute::excerpt(value.dump(-1, ' ', false, Doc::error_handler_t::replace), 60);
}

std::string cut(const std::string& text) { return cut(Doc(kvroute::excerpt(text, 200))); }

// Reads tokenizer.json with the core reader (every error "FILE: KEY.PATH: what is wrong"), plus
// what is particular to tokenizer files: token ids, component types, settings kvroute refuses.
struct HfReader : json::UnorderedReader {
  static bool is_id(const Doc& v) {
    return v.is_number_integer() && (v.is_number_unsigned() ? v.get<uint64_t>() <= kMaxTokenId
                                                            : v.get<int64_t>() >= 0 && v.get<int64_t>() <= kMaxTokenId);
  }
  int32_t id(const Doc& v, const std::string& path) const {
    if (!is_id(v)) fail(path, fmt::format("expected a token id, an integer in [0, {}], got {}", kMaxTokenId, cut(v)));
    return static_cast<int32_t>(v.get<int64_t>());
  }
  // `type` of the component at `path`, which must be one of `supported`.
  std::string type(const Doc& component, const std::string& path, std::initializer_list<std::string_view> supported) const {
    if (!component.is_object()) fail(path, fmt::format("expected an object, got {}", cut(component)));
    const std::string t = string(component, path, "type");
    for (std::string_view s : supported) {
      if (t == s) return t;
    }
    fail(join(path, "type"), fmt::format("unsupported value {} (supported: {})", cut(Doc(t)), fmt::join(supported, ", ")));
  }
  // A setting kvroute does not implement: fine when absent, null or `allowed`, else refused.
  void only(const Doc& parent, const std::string& path, const char* key, const Doc& allowed, const char* why) const {
    const Doc* v = find(parent, key);
    if (v != nullptr && *v != allowed) fail(join(path, key), fmt::format("unsupported value {} ({})", cut(*v), why));
  }
};

// A PCRE2 pattern that matches `literal` exactly (Hugging Face's Split with {"String": ...}).
std::string escape_literal(std::string_view literal) {
  std::string out;
  for (unsigned char c : literal) {
    if (c >= 0x80 || std::isalnum(c)) {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("\\x{{{:02x}}}", c);
    }
  }
  return out;
}

}  // namespace

void Tokenizer::build_tables() {
  std::unordered_map<std::string, int32_t> id_of;
  for (size_t i = 0; i < tokens_.size(); ++i) id_of.emplace(tokens_[i], static_cast<int32_t>(i));
  is_token_.assign(tokens_.size(), true);
  for (int b = 0; b < 256; ++b) {
    auto it = id_of.find(std::string(1, static_cast<char>(b)));
    KV_CHECK(it != id_of.end(), "tokenizer: no token for byte {:#04x}", b);
    byte_ids_[b] = it->second;
  }
  merge_table_.clear();
  for (size_t rank = 0; rank < merges_.size(); ++rank) {
    auto [a, b] = merges_[rank];
    auto it = id_of.find(tokens_[a] + tokens_[b]);
    KV_CHECK(it != id_of.end(), "tokenizer: merge {} has no token for its result", rank);
    merge_table_.emplace(pair_key(a, b), std::make_pair(static_cast<int32_t>(rank), it->second));
  }
  auto eot = id_of.find(kEndOfText);
  eot_id_ = eot == id_of.end() ? -1 : eot->second;
  if (pretokenizers_.empty()) pretokenizers_.push_back(std::make_shared<const PreTokenizer>());
}

Tokenizer Tokenizer::load(const std::string& dir) {
  std::error_code ec;
  if (std::filesystem::exists(dir + "/tokenizer.json", ec)) return load_hf(dir);
  const std::string encoder_path = dir + "/encoder.json", merges_path = dir + "/vocab.bpe";
  KV_CHECK(std::filesystem::exists(encoder_path, ec),
           "{}: no such file (a tokenizer directory holds tokenizer.json, or encoder.json and vocab.bpe)",
           encoder_path);
  // One level: {"token": id, ...}; a deeper file is refused while parsing, not walked.
  const Doc encoder = parse_tokenizer_json(encoder_path, 1);
  KV_CHECK(encoder.is_object() && !encoder.empty() && encoder.size() <= (size_t{1} << 24),
           "{}: expected a JSON object of 1 to 2^24 token -> id entries", encoder_path);
  Tokenizer tok;
  tok.tokens_.assign(encoder.size(), std::string());
  std::vector<bool> seen(encoder.size(), false);
  std::unordered_map<std::string, int32_t> id_of;
  for (const auto& [key, value] : encoder.items()) {
    KV_CHECK(value.is_number_integer(), "{}: token {} has a non-integer id {}", encoder_path, cut(key), cut(value));
    const int64_t id = value.is_number_unsigned() && value.get<uint64_t>() > INT64_MAX ? -1 : value.get<int64_t>();
    KV_CHECK(id >= 0 && id < static_cast<int64_t>(encoder.size()) && !seen[static_cast<size_t>(id)],
             "{}: token {} has id {}, but ids must be unique and in [0, {})", encoder_path, cut(key), cut(value),
             encoder.size());
    std::string raw;
    KV_CHECK(unicode_to_bytes(key, raw), "{}: token {} is not in GPT-2's byte-level alphabet", encoder_path, cut(key));
    seen[static_cast<size_t>(id)] = true;
    tok.tokens_[static_cast<size_t>(id)] = raw;
    id_of[raw] = static_cast<int32_t>(id);
  }
  std::istringstream merges(io::read_file(merges_path));
  std::string line;
  int64_t line_no = 0;
  while (std::getline(merges, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (line_no == 1 && line.rfind("#version", 0) == 0)) continue;
    const size_t space = line.find(' ');
    KV_CHECK(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                 line.find(' ', space + 1) == std::string::npos,
             "{}:{}: expected 'LEFT RIGHT', got '{}'", merges_path, line_no, kvroute::excerpt(line, 60));
    std::string left, right;
    KV_CHECK(unicode_to_bytes(line.substr(0, space), left) && unicode_to_bytes(line.substr(space + 1), right),
             "{}:{}: '{}' is not in GPT-2's byte-level alphabet", merges_path, line_no, kvroute::excerpt(line, 60));
    auto l = id_of.find(left), r = id_of.find(right), m = id_of.find(left + right);
    KV_CHECK(l != id_of.end() && r != id_of.end() && m != id_of.end(),
             "{}:{}: merge '{}' uses or makes a token missing from {}", merges_path, line_no, kvroute::excerpt(line, 60),
             encoder_path);
    tok.merges_.emplace_back(l->second, r->second);
  }
  tok.build_tables();
  KV_CHECK(tok.eot_id_ >= 0, "{}: no {} token", encoder_path, kEndOfText);
  tok.files_ = {encoder_path, merges_path};
  return tok;
}

Tokenizer Tokenizer::load_hf(const std::string& dir) {
  const std::string file = dir + "/tokenizer.json";
  const HfReader r{file};
  const Doc root = parse_tokenizer_json(file, json::kMaxDepth);
  KV_CHECK(root.is_object(), "{}: expected a JSON object (a Hugging Face tokenizer), got {}", file, cut(root));
  Tokenizer tok;
  tok.format_ = "hf";
  tok.hf_merges_ = true;

  // model: byte-level BPE.
  const Doc& model = r.object(root, "", "model");
  r.type(model, "model", {"BPE"});
  r.only(model, "model", "dropout", Doc(), "BPE dropout is not supported");
  r.only(model, "model", "byte_fallback", Doc(false), "byte fallback is not supported");
  r.only(model, "model", "continuing_subword_prefix", Doc(""), "only a byte-level BPE without prefixes is supported");
  r.only(model, "model", "end_of_word_suffix", Doc(""), "only a byte-level BPE without suffixes is supported");
  tok.ignore_merges_ = r.boolean(model, "model", "ignore_merges", false);
  const Doc& vocab = r.object(model, "model", "vocab");
  if (vocab.empty() || vocab.size() > (size_t{1} << 24)) {
    r.fail("model.vocab", fmt::format("expected 1 to 2^24 tokens, got {}", vocab.size()));
  }
  // added_tokens (read first: they extend the id range).
  struct Added {
    int32_t id;
    std::string content;
    bool normalized;
  };
  std::vector<Added> added;
  if (const Doc* list = HfReader::find(root, "added_tokens")) {
    if (!list->is_array() || list->size() > (size_t{1} << 20)) {
      r.fail("added_tokens", fmt::format("expected an array of at most 2^20 tokens, got {}", cut(*list)));
    }
    for (size_t i = 0; i < list->size(); ++i) {
      const Doc& t = (*list)[i];
      const std::string path = fmt::format("added_tokens[{}]", i);
      if (!t.is_object()) r.fail(path, fmt::format("expected an object, got {}", cut(t)));
      const Doc* id = HfReader::find(t, "id");
      if (id == nullptr) r.fail(path + ".id", "missing");
      Added a{r.id(*id, path + ".id"), r.string(t, path, "content"), false};
      if (a.content.empty()) r.fail(path + ".content", "an added token cannot be empty");
      const bool special = r.boolean(t, path, "special", false);
      a.normalized = r.boolean(t, path, "normalized", !special);
      for (const char* key : {"single_word", "lstrip", "rstrip"}) {
        r.only(t, path, key, Doc(false), "added tokens are matched exactly, without word or space rules");
      }
      added.push_back(std::move(a));
    }
  }
  int32_t max_id = 0;
  std::vector<std::pair<int32_t, const std::string*>> entries;  // (id, spelling), sorted below
  entries.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!HfReader::is_id(it.value())) r.id(it.value(), "model.vocab[" + cut(it.key()) + "]");  // throws
    entries.emplace_back(static_cast<int32_t>(it.value().get<int64_t>()), &it.key());
    max_id = std::max(max_id, entries.back().first);
  }
  for (const Added& a : added) max_id = std::max(max_id, a.id);
  tok.tokens_.assign(static_cast<size_t>(max_id) + 1, std::string());
  tok.is_token_.assign(static_cast<size_t>(max_id) + 1, false);
  std::sort(entries.begin(), entries.end());
  auto vocab_ids = std::make_shared<std::unordered_map<std::string, int32_t>>();
  vocab_ids->reserve(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const auto [id, spelling] = entries[i];
    if (i > 0 && entries[i - 1].first == id) {
      r.fail("model.vocab", fmt::format("tokens {} and {} both have id {}", cut(*entries[i - 1].second), cut(*spelling), id));
    }
    std::string raw;
    if (!unicode_to_bytes(*spelling, raw)) {
      r.fail("model.vocab[" + cut(*spelling) + "]", "not in the byte-level alphabet (GPT-2's bytes_to_unicode)");
    }
    tok.tokens_[static_cast<size_t>(id)] = raw;
    tok.is_token_[static_cast<size_t>(id)] = true;
    vocab_ids->emplace(std::move(raw), id);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_ids->find(std::string(1, static_cast<char>(b)));
    if (it == vocab_ids->end()) r.fail("model.vocab", fmt::format("no token for byte {:#04x}", b));
    tok.byte_ids_[b] = it->second;
  }
  std::unordered_map<std::string, int32_t> added_ids;  // content -> id
  for (size_t i = 0; i < added.size(); ++i) {
    const Added& a = added[i];
    const std::string path = fmt::format("added_tokens[{}]", i);
    if (!added_ids.emplace(a.content, a.id).second) {
      r.fail(path + ".content", fmt::format("{} is also added token {}", cut(a.content), added_ids[a.content]));
    }
    std::string& slot = tok.tokens_[static_cast<size_t>(a.id)];
    if (tok.is_token_[static_cast<size_t>(a.id)] && slot != a.content) {
      r.fail(path + ".id", fmt::format("id {} is already the token {}", a.id, cut(slot)));
    }
    slot = a.content;
    tok.is_token_[static_cast<size_t>(a.id)] = true;
  }

  // merges: "LEFT RIGHT" strings or [LEFT, RIGHT] pairs, in rank order.
  const Doc* merges = HfReader::find(model, "merges");
  if (merges == nullptr) r.fail("model.merges", "missing");
  if (!merges->is_array() || merges->size() > (size_t{1} << 24)) {
    r.fail("model.merges", fmt::format("expected an array of at most 2^24 merges, got {}", cut(*merges)));
  }
  tok.merges_.reserve(merges->size());
  tok.merge_table_.reserve(merges->size());
  for (size_t i = 0; i < merges->size(); ++i) {
    const Doc& m = (*merges)[i];
    const std::string path = fmt::format("model.merges[{}]", i);
    std::string left, right;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() || s.find(' ', space + 1) != std::string::npos) {
        r.fail(path, fmt::format("expected \"LEFT RIGHT\", got {}", cut(m)));
      }
      left = s.substr(0, space), right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>(), right = m[1].get<std::string>();
    } else {
      r.fail(path, fmt::format("expected \"LEFT RIGHT\" or [LEFT, RIGHT], got {}", cut(m)));
    }
    std::string lb, rb;
    const bool spelled = unicode_to_bytes(left, lb) && unicode_to_bytes(right, rb);
    auto li = spelled ? vocab_ids->find(lb) : vocab_ids->end();
    auto ri = spelled ? vocab_ids->find(rb) : vocab_ids->end();
    auto mi = spelled ? vocab_ids->find(lb + rb) : vocab_ids->end();
    if (li == vocab_ids->end() || ri == vocab_ids->end() || mi == vocab_ids->end()) {
      r.fail(path, fmt::format("merge {} uses or makes a token missing from model.vocab", cut(m)));
    }
    tok.merges_.emplace_back(li->second, ri->second);
    // A merge listed twice takes its last rank, as Hugging Face's map does.
    tok.merge_table_.insert_or_assign(pair_key(li->second, ri->second),
                                      std::make_pair(static_cast<int32_t>(i), mi->second));
  }
  tok.vocab_ids_ = vocab_ids;

  // normalizer: none or NFC.
  if (const Doc* n = HfReader::find(root, "normalizer")) {
    if (r.type(*n, "normalizer", {"NFC", "Sequence"}) == "NFC") {
      tok.nfc_ = true;
    } else {
      const Doc* list = HfReader::find(*n, "normalizers");
      if (list == nullptr || !list->is_array()) r.fail("normalizer.normalizers", "expected an array");
      for (size_t i = 0; i < list->size(); ++i) r.type((*list)[i], fmt::format("normalizer.normalizers[{}]", i), {"NFC"});
      tok.nfc_ = !list->empty();
    }
  }

  // pre_tokenizer: ByteLevel, or Sequence [Split..., ByteLevel].
  const Doc* pre = HfReader::find(root, "pre_tokenizer");
  if (pre == nullptr) r.fail("pre_tokenizer", "missing (a byte-level BPE needs the ByteLevel pre-tokenizer)");
  std::vector<std::pair<const Doc*, std::string>> steps;  // (component, key path)
  if (r.type(*pre, "pre_tokenizer", {"ByteLevel", "Sequence", "Split"}) == "Sequence") {
    const Doc* list = HfReader::find(*pre, "pretokenizers");
    if (list == nullptr || !list->is_array() || list->empty() || list->size() > 16) {
      r.fail("pre_tokenizer.pretokenizers", "expected an array of 1 to 16 pre-tokenizers");
    }
    for (size_t i = 0; i < list->size(); ++i) steps.emplace_back(&(*list)[i], fmt::format("pre_tokenizer.pretokenizers[{}]", i));
  } else {
    steps.emplace_back(pre, "pre_tokenizer");
  }
  for (size_t i = 0; i < steps.size(); ++i) {
    const auto& [step, path] = steps[i];
    const std::string t = r.type(*step, path, {"ByteLevel", "Split"});
    if (t == "ByteLevel") {
      if (i + 1 != steps.size()) r.fail(path + ".type", "ByteLevel must be the last pre-tokenizer");
      r.only(*step, path, "add_prefix_space", Doc(false), "a prefix space is not supported");
      if (r.boolean(*step, path, "use_regex", true)) {
        tok.pretokenizers_.push_back(std::make_shared<const PreTokenizer>(kGpt2Pattern, file + ": " + path));
      }
      continue;
    }
    if (i + 1 == steps.size()) r.fail(path + ".type", "the last pre-tokenizer must be ByteLevel (a byte-level BPE)");
    const std::string behavior = r.string(*step, path, "behavior");
    if (behavior != "Isolated") r.fail(path + ".behavior", fmt::format("unsupported value {} (supported: Isolated)", cut(Doc(behavior))));
    r.only(*step, path, "invert", Doc(false), "an inverted split is not supported");
    const Doc& pattern = r.object(*step, path, "pattern");
    if (pattern.size() != 1 || !(pattern.contains("Regex") || pattern.contains("String"))) {
      r.fail(path + ".pattern", fmt::format("expected {{\"Regex\": ...}} or {{\"String\": ...}}, got {}", cut(pattern)));
    }
    if (pattern.contains("Regex")) {
      const std::string regex = r.string(pattern, path + ".pattern", "Regex");
      tok.pretokenizers_.push_back(std::make_shared<const PreTokenizer>(regex, file + ": " + path + ".pattern.Regex"));
    } else {
      const std::string literal = r.string(pattern, path + ".pattern", "String");
      if (literal.empty()) r.fail(path + ".pattern.String", "an empty string splits nothing");
      tok.pretokenizers_.push_back(
          std::make_shared<const PreTokenizer>(escape_literal(literal), file + ": " + path + ".pattern.String"));
    }
  }

  // decoder: ByteLevel (the byte-level alphabet back to bytes) or none.
  if (const Doc* d = HfReader::find(root, "decoder")) r.type(*d, "decoder", {"ByteLevel"});

  // Added tokens: matched on the raw text ("normalized": false) or after NFC ("normalized": true).
  auto raw = std::make_shared<AddedTokens>(), normalized = std::make_shared<AddedTokens>();
  bool any_raw = false, any_normalized = false;
  for (const Added& a : added) {
    if (a.normalized && tok.nfc_) {
      normalized->add(nfc_bytes(a.content), a.id);
      any_normalized = true;
    } else {
      raw->add(a.content, a.id);
      any_raw = true;
    }
  }
  if (any_raw) tok.added_raw_ = raw;
  if (any_normalized) tok.added_normalized_ = normalized;

  // End of text: tokenizer_config.json's eos_token, else the first of these that is a token.
  auto find_token = [&](const std::string& content) -> int32_t {
    if (auto it = added_ids.find(content); it != added_ids.end()) return it->second;
    if (auto it = vocab_ids->find(content); it != vocab_ids->end()) return it->second;
    return -1;
  };
  tok.files_ = {file};
  const std::string config_path = dir + "/tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    tok.files_.push_back(config_path);
    const json::Json config = json::parse_file(config_path);
    KV_CHECK(config.is_object(), "{}: expected a JSON object, got {}", config_path, json::excerpt(config));
    if (auto it = config.find("eos_token"); it != config.end() && !it->is_null()) {
      const json::Json& eos = *it;
      std::string content;
      if (eos.is_string()) {
        content = eos.get<std::string>();
      } else if (eos.is_object() && eos.contains("content") && eos.at("content").is_string()) {
        content = eos.at("content").get<std::string>();
      } else {
        KV_FAIL("{}: eos_token: expected a string or {{\"content\": string}}, got {}", config_path, json::excerpt(eos));
      }
      tok.eot_id_ = find_token(content);
      KV_CHECK(tok.eot_id_ >= 0, "{}: eos_token: {} is not a token of {}", config_path, cut(content), file);
    }
  }
  for (const char* name : {"<|endoftext|>", "<|end_of_text|>", "</s>"}) {
    if (tok.eot_id_ < 0) tok.eot_id_ = find_token(name);
  }
  KV_CHECK(tok.eot_id_ >= 0,
           "{}: no end-of-text token: no eos_token in tokenizer_config.json and none of <|endoftext|>, "
           "<|end_of_text|>, </s> is a token",
           file);
  return tok;
}

void Tokenizer::save(const std::string& dir) const {
  KV_CHECK(format_ == "gpt2", "tokenizer save {}: a tokenizer loaded from {} can only be copied, not rewritten", dir,
           files_.empty() ? std::string("tokenizer.json") : files_[0]);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  KV_CHECK(!ec, "{}: cannot create directory: {}", dir, ec.message());
  nlohmann::ordered_json encoder = nlohmann::ordered_json::object();
  for (size_t i = 0; i < tokens_.size(); ++i) encoder[to_unicode(tokens_[i])] = i;
  io::write_file_atomic(dir + "/encoder.json", encoder.dump());
  std::string merges = "#version: 0.2\n";
  for (const auto& [a, b] : merges_) merges += to_unicode(tokens_[a]) + ' ' + to_unicode(tokens_[b]) + '\n';
  io::write_file_atomic(dir + "/vocab.bpe", merges);
}

}  // namespace kvroute::data
