// Generation-based QA evaluation: greedy answers generated with a shared KV cache, scored by exact
// match and token F1 after SQuAD's answer normalisation (lower case, punctuation and the articles
// a/an/the removed, whitespace collapsed) and by ROUGE-L F-measure (longest common subsequence of
// the same normalised tokens). Each metric takes the best over an example's gold answers.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer.h"
#include "distributed/communicator.h"
#include "layers/transformer.h"

namespace kvroute::eval {

std::string normalize_answer(std::string_view text);
std::vector<std::string> answer_tokens(std::string_view text);  // normalize_answer, split on spaces
double exact_match(std::string_view prediction, std::string_view gold);
double token_f1(std::string_view prediction, std::string_view gold);
double rouge_l(std::string_view prediction, std::string_view gold);

struct QAExample {
  std::string prompt;                // what the model sees (data/sft.h's template for context/question)
  std::vector<std::string> answers;  // gold answers (any one counts)
};

// A JSONL task file: {"prompt", "response"} or {"context", "question", "answer"} (or "answers": [..]),
// the prompt built exactly as `kvroute prepare --format sft` builds it (same seed, same order).
std::vector<QAExample> read_task(const std::string& path, uint64_t seed);

struct QAScores {
  double em = 0, f1 = 0, rouge_l = 0;
  int64_t examples = 0;
};

// One answer's EM, F1 and ROUGE-L, each the best over the example's gold answers (examples = 1).
QAScores score_answer(std::string_view prediction, const std::vector<std::string>& golds);

// Greedy answers for every example (at most max_new_tokens, ending at <|endoftext|>) under `plan`,
// `batch` prompts of any lengths at a time; examples are split over ranks and the scores summed.
// Prompts longer than max_seq_len - max_new_tokens lose tokens from the left. With `predictions`,
// every rank receives every example's answer text (in the examples' order).
QAScores evaluate_task(const layers::Transformer& model, const data::Tokenizer& tokenizer,
                       const std::vector<QAExample>& examples, const layers::RoutingPlan& plan, int64_t batch,
                       int64_t max_new_tokens, dist::Communicator& comm,
                       std::vector<std::string>* predictions = nullptr);

}  // namespace kvroute::eval
