#include "eval/qa.h"

#include <algorithm>
#include <map>

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "data/corpus.h"
#include "data/sft.h"
#include "eval/generate.h"

namespace kvroute::eval {

std::string normalize_answer(std::string_view text) {
  // SQuAD's evaluation script: lower, remove punctuation, remove articles, fix whitespace.
  std::string s;
  for (char c : text) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 128 && std::ispunct(u)) continue;
    s.push_back(u < 128 ? static_cast<char>(std::tolower(u)) : c);
  }
  std::vector<std::string> words;
  std::string word;
  auto flush = [&] {
    if (!word.empty() && word != "a" && word != "an" && word != "the") words.push_back(word);
    word.clear();
  };
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
      flush();
    } else {
      word.push_back(c);
    }
  }
  flush();
  std::string out;
  for (size_t i = 0; i < words.size(); ++i) out += (i ? " " : "") + words[i];
  return out;
}

std::vector<std::string> answer_tokens(std::string_view text) {
  std::vector<std::string> out;
  const std::string norm = normalize_answer(text);
  size_t begin = 0;
  while (begin < norm.size()) {
    size_t end = norm.find(' ', begin);
    if (end == std::string::npos) end = norm.size();
    out.push_back(norm.substr(begin, end - begin));
    begin = end + 1;
  }
  return out;
}

double exact_match(std::string_view prediction, std::string_view gold) {
  return normalize_answer(prediction) == normalize_answer(gold) ? 1.0 : 0.0;
}

double token_f1(std::string_view prediction, std::string_view gold) {
  const std::vector<std::string> p = answer_tokens(prediction), g = answer_tokens(gold);
  if (p.empty() || g.empty()) return p == g ? 1.0 : 0.0;  // SQuAD v2: both empty counts as a match
  std::map<std::string, int> counts;
  for (const auto& t : g) ++counts[t];
  int common = 0;
  for (const auto& t : p) {
    auto it = counts.find(t);
    if (it != counts.end() && it->second > 0) {
      --it->second;
      ++common;
    }
  }
  if (common == 0) return 0.0;
  const double precision = static_cast<double>(common) / static_cast<double>(p.size());
  const double recall = static_cast<double>(common) / static_cast<double>(g.size());
  return 2 * precision * recall / (precision + recall);
}

double rouge_l(std::string_view prediction, std::string_view gold) {
  const std::vector<std::string> p = answer_tokens(prediction), g = answer_tokens(gold);
  if (p.empty() || g.empty()) return p == g ? 1.0 : 0.0;
  std::vector<std::vector<int>> lcs(p.size() + 1, std::vector<int>(g.size() + 1, 0));
  for (size_t i = 1; i <= p.size(); ++i)
    for (size_t j = 1; j <= g.size(); ++j)
      lcs[i][j] = p[i - 1] == g[j - 1] ? lcs[i - 1][j - 1] + 1 : std::max(lcs[i - 1][j], lcs[i][j - 1]);
  const double l = lcs[p.size()][g.size()];
  if (l == 0) return 0.0;
  const double precision = l / static_cast<double>(p.size()), recall = l / static_cast<double>(g.size());
  return 2 * precision * recall / (precision + recall);
}

std::vector<QAExample> read_task(const std::string& path, uint64_t seed) {
  const std::string content = io::read_file(path);
  std::vector<QAExample> out;
  size_t begin = 0;
  uint64_t index = 0;
  for (int64_t line = 1; begin < content.size(); ++line) {
    size_t end = content.find('\n', begin);
    if (end == std::string::npos) end = content.size();
    std::string text = content.substr(begin, end - begin);
    begin = end + 1;
    if (data::blank_line(text)) continue;
    const std::string where = fmt::format("{}:{}", path, line);
    json::Json j = json::parse(text, where, 4);
    KV_CHECK(j.is_object(), "{}: expected a JSON object", where);
    QAExample e;
    // Several gold answers: "answers": [...]; the first is the one the template's response holds.
    if (j.contains("answers")) {
      const json::Json& a = j["answers"];
      KV_CHECK(a.is_array() && !a.empty() && a.size() <= 64, "{}: answers: expected a list of 1 to 64 strings", where);
      for (const auto& x : a) {
        KV_CHECK(x.is_string(), "{}: answers: expected strings, got {}", where, json::excerpt(x));
        e.answers.push_back(x.get<std::string>());
      }
      if (!j.contains("answer") && !j.contains("response")) j["answer"] = e.answers[0];
      j.erase("answers");
    }
    const data::SftText t = data::parse_sft_line(j.dump(), where, seed, index++);
    e.prompt = t.prompt;
    if (e.answers.empty()) e.answers.push_back(t.response);
    out.push_back(std::move(e));
  }
  KV_CHECK(!out.empty(), "{}: no examples", path);
  return out;
}

QAScores score_answer(std::string_view prediction, const std::vector<std::string>& golds) {
  QAScores s;
  s.examples = 1;
  for (const std::string& gold : golds) {
    s.em = std::max(s.em, exact_match(prediction, gold));
    s.f1 = std::max(s.f1, token_f1(prediction, gold));
    s.rouge_l = std::max(s.rouge_l, rouge_l(prediction, gold));
  }
  return s;
}

QAScores evaluate_task(const layers::Transformer& model, const data::Tokenizer& tokenizer,
                       const std::vector<QAExample>& examples, const layers::RoutingPlan& plan, int64_t batch,
                       int64_t max_new_tokens, dist::Communicator& comm, std::vector<std::string>* predictions) {
  KV_CHECK(batch > 0 && max_new_tokens > 0, "evaluate_task: batch {} and max_new_tokens {} must be > 0", batch,
           max_new_tokens);
  const int64_t max_prompt = model.config().max_seq_len - max_new_tokens;
  KV_CHECK(max_prompt >= 2, "evaluate_task: {} new tokens leave no room for a prompt in model.max_seq_len {}",
           max_new_tokens, model.config().max_seq_len);
  SamplingOptions greedy;
  greedy.temperature = 0;
  greedy.max_new_tokens = max_new_tokens;
  greedy.stop_token = tokenizer.eot_id();
  restrict_to_tokenizer(greedy, tokenizer);
  std::vector<double> sums = {0, 0, 0, 0};
  std::vector<int64_t> mine;  // this rank's examples
  for (int64_t i = comm.rank(); i < static_cast<int64_t>(examples.size()); i += comm.world_size()) mine.push_back(i);
  std::vector<std::vector<int32_t>> answers(predictions ? examples.size() : 0);  // generated ids, for predictions
  for (size_t begin = 0; begin < mine.size(); begin += static_cast<size_t>(batch)) {
    const size_t end = std::min(mine.size(), begin + static_cast<size_t>(batch));
    std::vector<std::vector<int32_t>> prompts;
    for (size_t k = begin; k < end; ++k) {
      std::vector<int32_t> ids = {tokenizer.eot_id()};
      const std::vector<int32_t> body = tokenizer.encode(examples[static_cast<size_t>(mine[k])].prompt);
      ids.insert(ids.end(), body.begin(), body.end());
      if (static_cast<int64_t>(ids.size()) > max_prompt) {  // keep the leading <|endoftext|> and the end
        ids.erase(ids.begin() + 1, ids.begin() + 1 + (static_cast<int64_t>(ids.size()) - max_prompt));
      }
      prompts.push_back(std::move(ids));
    }
    const std::vector<std::vector<int32_t>> out = generate(model, prompts, plan, greedy);
    for (size_t k = begin; k < end; ++k) {
      std::vector<int32_t> answer = out[k - begin];
      if (!answer.empty() && answer.back() == tokenizer.eot_id()) answer.pop_back();
      const std::string text = tokenizer.decode(answer);
      const QAExample& e = examples[static_cast<size_t>(mine[k])];
      const QAScores one = score_answer(text, e.answers);
      sums[0] += one.em;
      sums[1] += one.f1;
      sums[2] += one.rouge_l;
      sums[3] += 1;
      if (predictions) answers[static_cast<size_t>(mine[k])] = std::move(answer);
    }
  }
  comm.allreduce_sum(sums);
  if (predictions) {
    // Every rank gets every answer: token ids (exact in a double) summed over ranks, each example's
    // slot written by the one rank that generated it.
    if (comm.world_size() > 1) {
      const size_t stride = static_cast<size_t>(max_new_tokens) + 1;
      std::vector<double> ids(examples.size() * stride, 0.0);
      for (int64_t i : mine) {
        const std::vector<int32_t>& a = answers[static_cast<size_t>(i)];
        ids[static_cast<size_t>(i) * stride] = static_cast<double>(a.size());
        for (size_t t = 0; t < a.size(); ++t) ids[static_cast<size_t>(i) * stride + 1 + t] = a[t];
      }
      comm.allreduce_sum(ids);
      for (size_t i = 0; i < examples.size(); ++i) {
        const size_t n = static_cast<size_t>(ids[i * stride]);
        answers[i].resize(n);
        for (size_t t = 0; t < n; ++t) answers[i][t] = static_cast<int32_t>(ids[i * stride + 1 + t]);
      }
    }
    predictions->resize(examples.size());
    for (size_t i = 0; i < examples.size(); ++i) (*predictions)[i] = tokenizer.decode(answers[i]);
  }
  QAScores s;
  s.examples = static_cast<int64_t>(sums[3]);
  if (s.examples > 0) {
    s.em = sums[0] / sums[3];
    s.f1 = sums[1] / sums[3];
    s.rouge_l = sums[2] / sums[3];
  }
  return s;
}

}  // namespace kvroute::eval
