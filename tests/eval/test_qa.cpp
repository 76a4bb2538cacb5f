// QA evaluation (eval/qa.h): SQuAD-normalised exact match and F1 and ROUGE-L against hand-computed
// cases; the masked fine-tuning loss equals a double-precision loss over the response tokens only;
// evaluate_task scores exactly the answers greedy generation gives one prompt at a time, and two
// ranks score and return exactly what one rank does.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "data/sft.h"
#include "data/tokenizer.h"
#include "distributed/communicator.h"
#include "eval/generate.h"
#include "eval/qa.h"
#include "tests/test_util.h"

namespace kvroute::eval {
namespace {

namespace fs = std::filesystem;

TEST(QAMetrics, NormalisationAsSquad) {
  EXPECT_EQ(normalize_answer("The  Cat, sat!"), "cat sat");
  EXPECT_EQ(normalize_answer("  an apple\tA day "), "apple day");
  EXPECT_EQ(normalize_answer("theater"), "theater");  // articles only as whole words
  EXPECT_EQ(normalize_answer("U.S.A."), "usa");
  EXPECT_EQ(normalize_answer("\"4,719\""), "4719");
  EXPECT_EQ(normalize_answer("the"), "");
  EXPECT_EQ(normalize_answer("Café"), "café");  // non-ASCII kept as is
}

TEST(QAMetrics, ExactMatchF1AndRougeLByHand) {
  EXPECT_EQ(exact_match("The North Gate.", "north gate"), 1.0);
  EXPECT_EQ(exact_match("north gate code", "north gate"), 0.0);
  // F1: pred {blue, red, red}, gold {red, green}: common 1 -> P 1/3, R 1/2, F1 0.4.
  EXPECT_NEAR(token_f1("blue red red", "red green"), 0.4, 1e-12);
  // Repeated tokens count with multiplicity: pred {red, red}, gold {red, red, blue}: P 1, R 2/3.
  EXPECT_NEAR(token_f1("red red", "red red blue"), 0.8, 1e-12);
  EXPECT_EQ(token_f1("the", "a"), 1.0);  // both normalise to nothing
  EXPECT_EQ(token_f1("", "x"), 0.0);
  EXPECT_EQ(token_f1("x y", "z"), 0.0);
  // ROUGE-L: pred "a b c d" vs gold "a c e d" -> tokens {b, c, d} vs {c, e, d} after dropping the
  // article: LCS {c, d} = 2, P = R = 2/3.
  EXPECT_NEAR(rouge_l("a b c d", "a c e d"), 2.0 / 3.0, 1e-12);
  // Order matters for ROUGE-L, not for F1: pred "x y z" vs gold "z y x": LCS 1.
  EXPECT_NEAR(rouge_l("x y z", "z y x"), 1.0 / 3.0, 1e-12);
  EXPECT_NEAR(token_f1("x y z", "z y x"), 1.0, 1e-12);
  EXPECT_EQ(rouge_l("", ""), 1.0);
}

layers::ModelConfig tiny(int64_t vocab) {
  layers::ModelConfig c;
  c.vocab_size = vocab;
  c.hidden_size = 32;
  c.num_layers = 4;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.intermediate_size = 48;
  c.max_seq_len = 96;
  c.init_std = 0.3;
  return c;
}

TEST(QALoss, MaskedLossEqualsTheLossOverResponseTokensOnly) {
  layers::Transformer model(tiny(50), 3);
  const data::SftExample a{{0, 7, 8, 9, 10}, {11, 12, 0}}, b{{0, 13}, {14, 15, 16, 17, 0}};
  const int64_t T = 10;
  Tensor inputs = Tensor::empty({2, T}, DType::I32), targets = Tensor::empty({2, T}, DType::I32);
  data::sft_row(a, T, 0, -100, inputs.data<int32_t>(), targets.data<int32_t>());
  data::sft_row(b, T, 0, -100, inputs.data<int32_t>() + T, targets.data<int32_t>() + T);
  const layers::RoutingPlan plan = {0, 0, 2, 2};
  std::vector<float> logits;
  {
    autograd::NoGradGuard no_grad;
    logits = model.logits(inputs, plan).data().to_vector<float>();
  }
  // Reference: -log softmax at the response positions only, in double.
  double sum = 0;
  int scored = 0;
  const std::vector<int32_t> tg = targets.to_vector<int32_t>();
  for (int64_t r = 0; r < 2 * T; ++r) {
    if (tg[static_cast<size_t>(r)] == -100) continue;
    const float* row = logits.data() + r * 50;
    double m = row[0], z = 0;
    for (int v = 0; v < 50; ++v) m = std::max(m, static_cast<double>(row[v]));
    for (int v = 0; v < 50; ++v) z += std::exp(row[v] - m);
    sum += -(row[tg[static_cast<size_t>(r)]] - m - std::log(z));
    ++scored;
  }
  EXPECT_EQ(scored, 3 + 5);  // the response tokens, each <|endoftext|> included
  const double expected = sum / scored;
  const double got = model.loss(inputs, targets, plan, -100).data().item();
  EXPECT_NEAR(got, expected, 1e-5 * std::abs(expected));
}


// Rank `rank` of two, run one after the other: each allreduce_sum records this rank's values and,
// when the other rank's recorded values are given, adds them (call k to call k), which is what the
// sum over two ranks running together gives.
class TwoRankReplayCommunicator : public dist::Communicator {
 public:
  TwoRankReplayCommunicator(int rank, const std::vector<std::vector<double>>* other) : rank_(rank), other_(other) {}
  std::vector<std::vector<double>> recorded;
  int rank() const override { return rank_; }
  int world_size() const override { return 2; }
  void allreduce_sum(Tensor&, int64_t) override { ADD_FAILURE() << "not used"; }
  void allreduce_sum(std::vector<double>& values) override {
    recorded.push_back(values);
    if (!other_) return;
    const size_t k = recorded.size() - 1;
    ASSERT_LT(k, other_->size());
    ASSERT_EQ((*other_)[k].size(), values.size()) << "call " << k;
    for (size_t i = 0; i < values.size(); ++i) values[i] += (*other_)[k][i];
  }
  void broadcast(Tensor&, int) override { ADD_FAILURE() << "not used"; }
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
  std::string name() const override { return "two-rank replay"; }

 private:
  int rank_;
  const std::vector<std::vector<double>>* other_;
};

TEST(QATask, ScoresExactlyTheAnswersOneAtATimeGenerationGives) {
  const std::string dir = testing::temp_dir("qa_task");
  const std::vector<std::string> texts = {"The access code of the north gate is 4719.", "What is the code of the gate?",
                                          "Context: blue red green. Question: which color? Answer: red"};
  data::Tokenizer tok = data::Tokenizer::train(
      [&](const std::function<void(std::string_view)>& fn) {
        for (int i = 0; i < 20; ++i)
          for (const auto& t : texts) fn(t);
      },
      300);
  {
    std::ofstream f(dir + "/test.jsonl");
    f << R"({"context": "The access code of the north gate is 4719.", "question": "What is the code?", "answer": "4719"})" << "\n\n";
    f << R"({"prompt": "Which color?", "response": " red"})" << "\n";
    f << R"({"context": "blue red green", "question": "which color?", "answers": ["red", "green"]})" << "\n";
    f << R"({"context": "x", "question": "y?", "answer": "z"})" << "\n";
  }
  const std::vector<QAExample> task = read_task(dir + "/test.jsonl", 5);
  ASSERT_EQ(task.size(), 4u);
  EXPECT_EQ(task[2].answers, (std::vector<std::string>{"red", "green"}));
  EXPECT_EQ(task[1].prompt, "Which color?");
  layers::Transformer model(tiny(tok.vocab_size()), 4);
  auto comm = dist::make_local_communicator();
  const layers::RoutingPlan plan = layers::plan_from_keep_set(4, {0, 2});
  std::vector<std::string> predictions;
  const QAScores s = evaluate_task(model, tok, task, plan, 3, 6, *comm, &predictions);
  EXPECT_EQ(s.examples, 4);
  // Answers of the untrained model are not empty (so the comparisons below compare text).
  EXPECT_TRUE(std::any_of(predictions.begin(), predictions.end(), [](const std::string& p) { return !p.empty(); }));
  double em = 0, f1 = 0, rl = 0;
  for (size_t i = 0; i < task.size(); ++i) {
    std::vector<int32_t> prompt = {tok.eot_id()};
    for (int32_t t : tok.encode(task[i].prompt)) prompt.push_back(t);
    SamplingOptions greedy;
    greedy.temperature = 0;
    greedy.max_new_tokens = 6;
    greedy.stop_token = tok.eot_id();
    greedy.vocab_limit = tok.vocab_size();
    std::vector<int32_t> alone = generate(model, {prompt}, plan, greedy)[0];
    if (!alone.empty() && alone.back() == tok.eot_id()) alone.pop_back();
    EXPECT_EQ(predictions[i], tok.decode(alone)) << i;
    double e = 0, f = 0, r = 0;
    for (const auto& gold : task[i].answers) {
      e = std::max(e, exact_match(predictions[i], gold));
      f = std::max(f, token_f1(predictions[i], gold));
      r = std::max(r, rouge_l(predictions[i], gold));
    }
    em += e / 4;
    f1 += f / 4;
    rl += r / 4;
  }
  EXPECT_DOUBLE_EQ(s.em, em);
  EXPECT_DOUBLE_EQ(s.f1, f1);
  EXPECT_DOUBLE_EQ(s.rouge_l, rl);
  // Two ranks split the examples (0 and 2 on rank 0, 1 and 3 on rank 1): the same scores, and every
  // rank gets every answer in the examples' order.
  QAScores split[2];
  std::vector<std::string> got[2];
  for (int r = 0; r < 2; ++r) {
    TwoRankReplayCommunicator other(1 - r, nullptr);  // the other rank's contributions
    std::vector<std::string> unused;
    (void)evaluate_task(model, tok, task, plan, 1, 6, other, &unused);
    TwoRankReplayCommunicator c(r, &other.recorded);
    split[r] = evaluate_task(model, tok, task, plan, 1, 6, c, &got[r]);
  }
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(split[r].examples, 4);
    EXPECT_NEAR(split[r].em, s.em, 1e-12);
    EXPECT_NEAR(split[r].f1, s.f1, 1e-12);
    EXPECT_EQ(got[r], predictions) << "rank " << r;
  }
  testing::expect_error([&] { read_task(dir + "/missing.jsonl", 1); }, {dir + "/missing.jsonl"});
  std::ofstream(dir + "/bad.jsonl") << "{\"context\": \"x\"}\n";
  testing::expect_error([&] { read_task(dir + "/bad.jsonl", 1); }, {dir + "/bad.jsonl:1", "question"});
  fs::remove_all(dir);
}

}  // namespace
}  // namespace kvroute::eval
