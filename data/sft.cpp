#include "data/sft.h"

#include <algorithm>
#include <map>
#include <cstring>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/rng.h"

namespace kvroute::data {

namespace {

constexpr int32_t kSftMagic = 20261123;
constexpr int32_t kSftVersion = 1;
constexpr int kHeaderInts = 8;
constexpr uint64_t kMaxSftFile = uint64_t{4} << 30;
constexpr uint32_t kMaxExampleTokens = 1u << 24;

std::string text_field(const json::Json& j, const char* key, const std::string& where) {
  return json::get_string(j, key, where);
}

}  // namespace

SftText parse_sft_line(const std::string& line, const std::string& where, uint64_t seed, uint64_t line_index) {
  const json::Json j = json::parse(line, where, 4);
  KV_CHECK(j.is_object(), "{}: expected a JSON object with prompt/response or context/question/answer", where);
  SftText out;
  if (j.contains("prompt") || j.contains("response")) {
    KV_CHECK(!j.contains("question") && !j.contains("context") && !j.contains("answer"),
             "{}: mixes prompt/response with context/question/answer", where);
    out.prompt = text_field(j, "prompt", where);
    out.response = text_field(j, "response", where);
  } else {
    const std::string context = text_field(j, "context", where);
    const std::string question = text_field(j, "question", where);
    const std::string answer = text_field(j, "answer", where);
    // The paper randomises the order of context and question per example.
    Philox rng(seed, line_index);
    out.prompt = rng.uniform_int(2) == 0 ? "Context: " + context + "\nQuestion: " + question + "\nAnswer:"
                                         : "Question: " + question + "\nContext: " + context + "\nAnswer:";
    out.response = " " + answer;
  }
  KV_CHECK(!out.response.empty(), "{}: the response is empty", where);
  return out;
}

void write_sft_file(const std::string& path, const std::vector<SftExample>& examples, int token_bytes) {
  KV_CHECK(token_bytes == 2 || token_bytes == 4, "write_sft_file {}: token width {} (expected 2 or 4)", path,
           token_bytes);
  KV_CHECK(examples.size() <= static_cast<size_t>(INT32_MAX), "write_sft_file {}: too many examples", path);
  std::string data(kHeaderInts * sizeof(int32_t), '\0');
  const int32_t header[kHeaderInts] = {kSftMagic, kSftVersion, token_bytes, static_cast<int32_t>(examples.size())};
  std::memcpy(data.data(), header, sizeof header);
  auto put = [&](const void* p, size_t n) { data.append(static_cast<const char*>(p), n); };
  for (const SftExample& e : examples) {
    const uint32_t lengths[2] = {static_cast<uint32_t>(e.prompt.size()), static_cast<uint32_t>(e.response.size())};
    put(lengths, sizeof lengths);
    for (const auto* part : {&e.prompt, &e.response}) {
      for (int32_t t : *part) {
        KV_CHECK(t >= 0 && (token_bytes == 4 || t < 65536), "write_sft_file {}: token {} does not fit {} bytes", path, t,
                 token_bytes);
        if (token_bytes == 2) {
          const uint16_t v = static_cast<uint16_t>(t);
          put(&v, 2);
        } else {
          put(&t, 4);
        }
      }
    }
  }
  io::write_file_durable(path, data);
}

std::vector<SftExample> read_sft_file(const std::string& path, int64_t vocab_size) {
  const std::string data = io::read_file(path, kMaxSftFile);
  KV_CHECK(data.size() >= kHeaderInts * sizeof(int32_t), "{}: {} bytes, shorter than the SFT header", path,
           data.size());
  int32_t header[kHeaderInts];
  std::memcpy(header, data.data(), sizeof header);
  KV_CHECK(header[0] == kSftMagic, "{}: not an SFT file (magic {} instead of {})", path, header[0], kSftMagic);
  KV_CHECK(header[1] == kSftVersion, "{}: SFT version {} (this kvroute reads {})", path, header[1], kSftVersion);
  const int width = header[2];
  KV_CHECK(width == 2 || width == 4, "{}: token width {} (expected 2 or 4)", path, width);
  KV_CHECK(header[3] >= 0, "{}: negative example count {}", path, header[3]);
  std::vector<SftExample> out;
  out.reserve(static_cast<size_t>(std::min(header[3], 1 << 20)));
  size_t at = sizeof header;
  for (int32_t i = 0; i < header[3]; ++i) {
    uint32_t lengths[2];
    KV_CHECK(data.size() - at >= sizeof lengths, "{}: truncated at example {} of {}", path, i, header[3]);
    std::memcpy(lengths, data.data() + at, sizeof lengths);
    at += sizeof lengths;
    KV_CHECK(lengths[0] > 0 && lengths[1] > 0 && lengths[0] <= kMaxExampleTokens && lengths[1] <= kMaxExampleTokens,
             "{}: example {} has prompt/response lengths {}/{} (each 1 to {})", path, i, lengths[0], lengths[1],
             kMaxExampleTokens);
    const uint64_t bytes = (uint64_t{lengths[0]} + lengths[1]) * static_cast<uint64_t>(width);
    KV_CHECK(data.size() - at >= bytes, "{}: truncated in example {} of {}", path, i, header[3]);
    SftExample e;
    for (auto [part, n] : {std::pair<std::vector<int32_t>*, uint32_t>{&e.prompt, lengths[0]}, {&e.response, lengths[1]}}) {
      part->resize(n);
      for (uint32_t k = 0; k < n; ++k) {
        int32_t t;
        if (width == 2) {
          uint16_t v;
          std::memcpy(&v, data.data() + at, 2);
          t = v;
        } else {
          std::memcpy(&t, data.data() + at, 4);
        }
        at += static_cast<size_t>(width);
        KV_CHECK(t >= 0 && (vocab_size <= 0 || t < vocab_size),
                 "{}: example {} holds token {}, outside the model's vocabulary [0, {})", path, i, t, vocab_size);
        (*part)[k] = t;
      }
    }
    out.push_back(std::move(e));
  }
  KV_CHECK(at == data.size(), "{}: {} trailing bytes after {} examples", path, data.size() - at, header[3]);
  return out;
}

namespace {
// An example's tokens after the cut for a row of seq_len (<= seq_len + 1 tokens) and how many of
// them are prompt (context; their targets are not scored).
struct CutExample {
  std::vector<int32_t> tokens;
  int64_t prompt = 0;
};

CutExample cut_example(const SftExample& example, int64_t seq_len) {
  // The scored tokens: the response; the context: the prompt, cut from the left (after its first
  // token, <|endoftext|>) when the example is longer than the row.
  const int64_t P = static_cast<int64_t>(example.prompt.size()), R = static_cast<int64_t>(example.response.size());
  const int64_t response = std::min(R, seq_len);            // scored tokens kept
  const int64_t prompt = std::min(P, seq_len + 1 - response);  // >= 1
  CutExample cut;
  cut.prompt = prompt;
  cut.tokens.reserve(static_cast<size_t>(prompt + response));
  if (prompt > 0) {
    cut.tokens.push_back(example.prompt[0]);
    cut.tokens.insert(cut.tokens.end(), example.prompt.end() - (prompt - 1), example.prompt.end());
  }
  cut.tokens.insert(cut.tokens.end(), example.response.begin(), example.response.begin() + response);
  return cut;
}
}  // namespace

void sft_row(const SftExample& example, int64_t seq_len, int32_t pad_token, int32_t ignore_index, int32_t* inputs,
             int32_t* targets) {
  const CutExample cut = cut_example(example, seq_len);
  const int64_t n = static_cast<int64_t>(cut.tokens.size());  // <= seq_len + 1
  for (int64_t t = 0; t < seq_len; ++t) {
    inputs[t] = t < n ? cut.tokens[static_cast<size_t>(t)] : pad_token;
    // Target t is token t + 1: scored when it belongs to the response.
    targets[t] = (t + 1 < n && t + 1 >= cut.prompt) ? cut.tokens[static_cast<size_t>(t + 1)] : ignore_index;
  }
}

int64_t sft_packed_length(const SftExample& example, int64_t seq_len) {
  return static_cast<int64_t>(cut_example(example, seq_len).tokens.size()) - 1;
}

std::vector<std::vector<int64_t>> pack_sft_rows(const std::vector<int64_t>& lengths, int64_t seq_len) {
  std::vector<int64_t> order(lengths.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int64_t>(i);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return lengths[static_cast<size_t>(a)] > lengths[static_cast<size_t>(b)];
  });
  std::vector<std::vector<int64_t>> rows;
  std::vector<int64_t> used;            // positions taken in each row
  std::multimap<int64_t, size_t> room;  // free positions -> row; equal rooms in creation order
  for (int64_t e : order) {
    const int64_t len = lengths[static_cast<size_t>(e)];
    KV_CHECK(len >= 1 && len <= seq_len, "pack_sft_rows: example {} takes {} positions, outside [1, {}]", e, len,
             seq_len);
    auto it = room.lower_bound(len);  // the fullest row it fits in
    size_t row;
    if (it == room.end()) {
      row = rows.size();
      rows.emplace_back();
      used.push_back(0);
    } else {
      row = it->second;
      room.erase(it);
    }
    rows[row].push_back(e);
    used[row] += len;
    if (used[row] < seq_len) room.emplace(seq_len - used[row], row);
  }
  for (auto& row : rows) std::sort(row.begin(), row.end());
  return rows;
}

void sft_packed_row(const std::vector<const SftExample*>& examples, int64_t seq_len, int32_t pad_token,
                    int32_t ignore_index, int32_t* inputs, int32_t* targets, int32_t* positions, int32_t* key_begin) {
  int64_t at = 0;
  for (const SftExample* example : examples) {
    const CutExample cut = cut_example(*example, seq_len);
    const int64_t len = static_cast<int64_t>(cut.tokens.size()) - 1;  // positions taken
    KV_CHECK(len >= 1 && at + len <= seq_len, "sft_packed_row: the examples take more than {} positions", seq_len);
    for (int64_t t = 0; t < len; ++t) {
      inputs[at + t] = cut.tokens[static_cast<size_t>(t)];
      targets[at + t] = t + 1 >= cut.prompt ? cut.tokens[static_cast<size_t>(t + 1)] : ignore_index;
      positions[at + t] = static_cast<int32_t>(t);
      key_begin[at + t] = static_cast<int32_t>(at);
    }
    at += len;
  }
  for (int64_t t = at; t < seq_len; ++t) {
    inputs[t] = pad_token;
    targets[t] = ignore_index;
    positions[t] = static_cast<int32_t>(t - at);
    key_begin[t] = static_cast<int32_t>(at);
  }
}

}  // namespace kvroute::data
