// The study runner: trains and evaluates a small grid, writes results.csv / report.md, and a
// second invocation skips the finished runs.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "core/rng.h"
#include "data/shard.h"
#include "eval/sweep.h"
#include "tests/test_util.h"

namespace kvroute {
namespace {

namespace fs = std::filesystem;

using testing::run_capture;
using testing::TinyModel;
using testing::tiny_model_yaml;
using testing::write_token_data;

// A smaller model than the tests' tiny one: 64 tokens, width 16.
constexpr TinyModel kSmall{.vocab = 64, .hidden = 16, .layers = 4, .heads = 2, .kv_heads = 1, .head_dim = 8,
                           .intermediate = 32, .max_seq_len = 16};

TEST(Sweep, TrainsEvaluatesReportsAndResumesWithoutRetraining) {
  const fs::path dir = kvroute::testing::temp_dir("sweep");
  Philox rng(1);
  std::vector<int32_t> train, val;
  for (int i = 0; i < 20000; ++i) train.push_back(static_cast<int32_t>((i * 7 + rng.uniform_int(3)) % 128));
  for (int i = 0; i < 2000; ++i) val.push_back(static_cast<int32_t>((i * 7) % 128));
  write_token_data((dir / "data").string(), train, val);
  std::ofstream(dir / "base.yaml") << tiny_model_yaml({.vocab = 128}) <<
                                      "data: {dir: " << (dir / "data").string() << "}\n"
                                      "train: {steps: 4, batch_size: 2, seq_len: 16, log_interval: 2, threads: 1}\n"
                                      "dist: {backend: none}\n";
  std::ofstream(dir / "study.yaml") << "study: mini\nbase: " << (dir / "base.yaml").string() << "\n"
                                       "grid:\n  router.share_prob: [0.0, 0.5]\n"
                                       "overrides: [router.policy=stochastic]\n"
                                       "eval: {retention: [1.0, 0.5, 0.25], batches: 2}\n";
  int rc = 0;
  std::string first = run_capture(std::string(KVROUTE_BINARY) + " sweep " + (dir / "study.yaml").string(), &rc);
  ASSERT_EQ(rc, 0) << first;
  const fs::path out = dir / "mini";
  ASSERT_TRUE(fs::exists(out / "results.csv"));
  ASSERT_TRUE(fs::exists(out / "report.md"));
  std::ifstream csv(out / "results.csv");
  std::string line;
  int lines = 0;
  while (std::getline(csv, line)) ++lines;
  EXPECT_EQ(lines, 1 + 2 * 3);  // header + 2 runs x 3 retention levels
  const fs::path ckpt = out / "runs/share_prob-0.5/checkpoints/step_00000004/model.safetensors";
  ASSERT_TRUE(fs::exists(ckpt));
  const auto written = fs::last_write_time(ckpt);
  std::string second = run_capture(std::string(KVROUTE_BINARY) + " sweep " + (dir / "study.yaml").string(), &rc);
  ASSERT_EQ(rc, 0) << second;
  EXPECT_NE(second.find("share_prob-0.0 already trained"), std::string::npos) << second;
  EXPECT_NE(second.find("share_prob-0.5 already trained"), std::string::npos) << second;
  EXPECT_EQ(fs::last_write_time(ckpt), written);
  // A typo in a run's overrides fails before any training.
  std::ofstream(dir / "bad.yaml") << "study: bad\nbase: " << (dir / "base.yaml").string()
                                  << "\nruns:\n  - {name: x, overrides: [router.share_prbo=0.5]}\n";
  std::string bad = run_capture(std::string(KVROUTE_BINARY) + " sweep " + (dir / "bad.yaml").string(), &rc);
  EXPECT_EQ(rc, 1);
  EXPECT_NE(bad.find("run 'x'"), std::string::npos) << bad;
  EXPECT_NE(bad.find("router.share_prob"), std::string::npos) << bad;
}

// Replicates and equal-cache baselines: every run trained once per seed (seeds change the
// weights), shallow full-cache models for every smaller keep-set size, greedy sets chosen on one
// part of the validation data and reported on the other, and the report's statistics and claims.
TEST(Sweep, SeedsShallowBaselinesAndPlanSplit) {
  const fs::path dir = kvroute::testing::temp_dir("sweep_seeds");
  Philox rng(2);
  std::vector<int32_t> train, val;
  for (int i = 0; i < 20000; ++i) train.push_back(static_cast<int32_t>((i * 5 + rng.uniform_int(3)) % 64));
  for (int i = 0; i < 2000; ++i) val.push_back(static_cast<int32_t>((i * 5 + rng.uniform_int(3)) % 64));
  write_token_data((dir / "data").string(), train, val);
  std::ofstream(dir / "base.yaml") << tiny_model_yaml(kSmall) <<
                                      "data: {dir: " << (dir / "data").string() << "}\n"
                                      "train: {steps: 3, batch_size: 2, seq_len: 16, log_interval: 3, threads: 1}\n"
                                      "eval: {interval: 2, retention: [1.0, 0.5], batches: 2}\n"
                                      "dist: {backend: none}\n";
  std::ofstream(dir / "study.yaml") << "study: reps\nbase: " << (dir / "base.yaml").string() << "\n"
                                       "seeds: [3, 4]\nshallow_baselines: true\n"
                                       "runs:\n  - {name: baseline, overrides: [router.policy=none]}\n"
                                       "  - {name: rcla, overrides: [router.policy=stochastic, router.share_prob=0.5]}\n"
                                       "  - {name: cla2, overrides: [router.policy=fixed_groups, router.group_size=2]}\n"
                                       "eval: {retention: [1.0, 0.5, 0.25], batches: 0, strategy: greedy, plan_split: 0.5}\n";
  int rc = 0;
  const std::string cmd = std::string(KVROUTE_BINARY) + " sweep " + (dir / "study.yaml").string();
  std::string first = run_capture(cmd, &rc);
  ASSERT_EQ(rc, 0) << first;
  const fs::path out = dir / "reps";
  // 3 runs + shallow-2L + shallow-1L, each once per seed.
  for (const char* run : {"baseline", "rcla", "cla2", "shallow-2L", "shallow-1L"}) {
    for (const char* seed : {"seed-3", "seed-4"}) {
      EXPECT_TRUE(fs::exists(out / "runs" / run / seed / "checkpoints/step_00000003/model.safetensors")) << run << seed;
    }
  }
  std::ifstream csv(out / "results.csv");
  std::string line, text;
  std::getline(csv, line);
  EXPECT_EQ(line.rfind("run,seed,kind,policy,plan,strategy,kept,num_layers,kv_fraction,val_loss", 0), 0u) << line;
  std::map<std::string, std::set<std::string>> losses_by_run_plan;  // seeds must differ
  int shallow_rows = 0, greedy_rows = 0;
  std::set<std::string> tokens;
  while (std::getline(csv, line)) {
    text += line + "\n";
    std::vector<std::string> f;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, ',');) f.push_back(x);
    ASSERT_GE(f.size(), 10u) << line;
    losses_by_run_plan[f[0] + "/" + f[4]].insert(f[9]);
    tokens.insert(f[11]);  // every model, shallow ones too, reports on the same validation part
    shallow_rows += f[2] == "shallow";
    greedy_rows += f[5] == "greedy";
    if (f[0] == "shallow-1L") {
      EXPECT_EQ(f[8], "0.2500") << line;  // 1 layer of the study's 4
    }
  }
  EXPECT_EQ(shallow_rows, 4);  // 2 shallow models x 2 seeds, full cache only
  EXPECT_EQ(tokens.size(), 1u) << text;
  EXPECT_GT(greedy_rows, 0);
  for (const auto& [key, set] : losses_by_run_plan) {
    EXPECT_EQ(set.size(), 2u) << key << " has equal losses for both seeds";
  }
  // CLA@2 at 100% keeps its leaders only.
  EXPECT_NE(text.find("cla2,3,deep,fixed_groups,retention 1,even,2,4,0.5000,"), std::string::npos) << text;
  std::ifstream md_file(out / "report.md");
  const std::string md((std::istreambuf_iterator<char>(md_file)), std::istreambuf_iterator<char>());
  EXPECT_NE(md.find("2 seeds (3, 4)"), std::string::npos) << md;
  EXPECT_NE(md.find("chosen on 0.5 of the validation windows (interleaved"), std::string::npos) << md;
  EXPECT_NE(md.find("## The paper's claims at this scale"), std::string::npos) << md;
  EXPECT_NE(md.find("R-CLA at full retention is within 2% of the baseline (rcla):"), std::string::npos) << md;
  EXPECT_NE(md.find("| 1 layer (25%) | rcla |"), std::string::npos) << md;
  // In-training evaluations (eval.interval 2 of 3 steps: steps 2 and 3) of every replicate, and the
  // curves section over them.
  std::ifstream curves_file(out / "curves.csv");
  const std::string curves((std::istreambuf_iterator<char>(curves_file)), std::istreambuf_iterator<char>());
  EXPECT_EQ(curves.rfind("run,seed,step,tokens,retention,val_loss\n", 0), 0u) << curves;
  for (const char* point : {"\nbaseline,3,2,64,1,", "\nbaseline,4,3,96,0.5,", "\nrcla,4,2,64,1,", "\nshallow-1L,3,3,96,1,"})
    EXPECT_NE(curves.find(point), std::string::npos) << point << "\n" << curves;
  EXPECT_NE(md.find("## Learning curves (in-training evaluation)"), std::string::npos) << md;
  EXPECT_NE(md.find("| 0.00M | "), std::string::npos) << md;
  EXPECT_TRUE(fs::exists(out / "curves.png") || system("command -v gnuplot > /dev/null") != 0);

  // Resume: nothing retrained or re-evaluated; a changed eval setting re-evaluates, not retrains.
  const fs::path ck = out / "runs/rcla/seed-4/checkpoints/step_00000003/model.safetensors";
  const auto written = fs::last_write_time(ck);
  const auto evaluated = fs::last_write_time(out / "runs/rcla/seed-4/eval.json");
  std::string second = run_capture(cmd, &rc);
  ASSERT_EQ(rc, 0) << second;
  EXPECT_NE(second.find("rcla-s4 already trained"), std::string::npos) << second;
  EXPECT_EQ(fs::last_write_time(out / "runs/rcla/seed-4/eval.json"), evaluated);
  std::string study = (std::stringstream() << std::ifstream(dir / "study.yaml").rdbuf()).str();
  study.replace(study.find("batches: 0"), 10, "batches: 3");
  std::ofstream(dir / "study.yaml") << study;
  std::string third = run_capture(cmd, &rc);
  ASSERT_EQ(rc, 0) << third;
  EXPECT_EQ(fs::last_write_time(ck), written);
  EXPECT_NE(fs::last_write_time(out / "runs/rcla/seed-4/eval.json"), evaluated);

  // Carried over without its run directories (only results.csv committed): nothing is trained
  // again and the report is the same; a replicate missing from results.csv is trained.
  const std::string report_before = (std::stringstream() << std::ifstream(out / "report.md").rdbuf()).str();
  fs::remove_all(out / "runs");
  std::string fourth = run_capture(cmd, &rc);
  ASSERT_EQ(rc, 0) << fourth;
  EXPECT_EQ(fourth.find("sweep: training"), std::string::npos) << fourth;
  EXPECT_NE(fourth.find("rcla-s4 recorded in"), std::string::npos) << fourth;
  EXPECT_EQ((std::stringstream() << std::ifstream(out / "report.md").rdbuf()).str(), report_before);
  std::string csv_text = (std::stringstream() << std::ifstream(out / "results.csv").rdbuf()).str();
  std::string kept_csv;
  std::istringstream lines(csv_text);
  for (std::string line; std::getline(lines, line);)
    if (line.rfind("rcla,4,", 0) != 0) kept_csv += line + "\n";
  std::ofstream(out / "results.csv") << kept_csv;
  std::string fifth = run_capture(cmd, &rc);
  ASSERT_EQ(rc, 0) << fifth;
  EXPECT_NE(fifth.find("sweep: training rcla-s4"), std::string::npos) << fifth;
  EXPECT_EQ(fifth.find("sweep: training baseline-s3"), std::string::npos) << fifth;

  // Bad studies: one line naming the file and the problem, before any training.
  auto refused = [&](const std::string& body, const std::vector<std::string>& words) {
    std::ofstream(dir / "bad.yaml") << "study: bad\nbase: " << (dir / "base.yaml").string() << "\n" << body;
    const std::string err = run_capture(std::string(KVROUTE_BINARY) + " sweep " + (dir / "bad.yaml").string(), &rc);
    EXPECT_EQ(rc, 1) << body;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    for (const std::string& w : words) EXPECT_NE(err.find(w), std::string::npos) << body << " -> " << err;
    EXPECT_FALSE(fs::exists(dir / "bad")) << body;
  };
  const std::string runs = "runs:\n  - {name: a, overrides: [router.policy=none]}\n";
  refused(runs + "eval: {retention: [1.0, 0.5, 0.45]}\n", {"bad.yaml", "0.5", "0.45", "same plan"});
  refused(runs + "seeds: [1, 1]\n", {"seed 1 appears twice"});
  refused(runs + "seeds: [one]\n", {"seeds", "one"});
  refused(runs + "seeds: []\n", {"seeds"});
  refused(runs + "shallow_baselines: yes please\n", {"shallow_baselines", "yes please"});
  refused(runs + "shallow_baselines: true\neval: {retention: [1.0]}\n", {"shallow_baselines", "no smaller cache"});
  refused(runs + "eval: {plan_split: 0.5}\n", {"plan_split", "greedy"});
  refused(runs + "eval: {strategy: best}\n", {"eval.strategy", "best"});
  refused(runs + "eval: {retention: [1.0], split: 0.5}\n", {"unknown key 'eval.split'", "plan_split"});
  refused("runs:\n  - {name: a, overrides: [router.policy=none]}\n  - {name: a, overrides: []}\n", {"'a' appears twice"});
  refused("runs:\n  - {name: ../x, overrides: []}\n", {"run name '../x'"});
  refused("runs:\n  - {name: a}\n  - {name: b, overrides: [model.num_layers=2, router.policy=stochastic]}\n",
          {"'b' has 2 layers", "equal-cache baseline", "router.policy=none"});
  refused("runs:\n  - {name: shallow-2L}\nshallow_baselines: true\neval: {retention: [1, 0.5]}\n",
          {"shallow-2L", "taken by shallow_baselines"});
  // Regime pairs: a run's own baseline and reference must be runs of the study, a baseline without
  // routing of the same depth.
  refused("runs:\n  - {name: a, baseline: nope}\n", {"run 'a'", "baseline 'nope' is not a run"});
  refused("runs:\n  - {name: a, baseline: a}\n", {"run 'a'", "names the run itself"});
  refused("runs:\n  - {name: a, reference: zz}\n", {"run 'a'", "reference 'zz'"});
  refused("runs:\n  - {name: a, overrides: [router.policy=stochastic]}\n  - {name: b, baseline: a}\n",
          {"run 'b'", "baseline 'a' has routing"});
  refused("runs:\n  - {name: a, overrides: [model.num_layers=2]}\n  - {name: b, baseline: a}\n",
          {"run 'b' has 4 layers but its baseline 'a' has 2"});
  refused("runs:\n  - {name: a}\n  - {name: b, baseline: a, baseline: a}\n", {"bad.yaml"});
  refused("runs:\n  - {name: a, paired: b}\n", {"unknown key 'runs[0].paired'", "baseline, reference"});
  // A paired arm of another depth is neither the study's depth nor an equal-cache baseline.
  std::ofstream(dir / "pairs.yaml") << "study: pairs\nbase: " << (dir / "base.yaml").string() << "\n"
                                       "runs:\n  - {name: base, overrides: [router.policy=none]}\n"
                                       "  - {name: r, overrides: [router.policy=stochastic]}\n"
                                       "  - {name: base-deep, overrides: [router.policy=none, model.num_layers=8]}\n"
                                       "  - {name: r-deep, baseline: base-deep, reference: r,\n"
                                       "     overrides: [router.policy=stochastic, model.num_layers=8]}\n"
                                       "eval: {retention: [1.0, 0.5]}\n";
  const eval::Study pairs = eval::load_study((dir / "pairs.yaml").string());
  EXPECT_EQ(pairs.depth, 4);
  ASSERT_EQ(pairs.runs.size(), 4u);
  for (const eval::StudyRun& r : pairs.runs) EXPECT_FALSE(r.shallow) << r.name;
  EXPECT_EQ(pairs.runs[3].baseline, "base-deep");
  EXPECT_EQ(pairs.runs[3].reference, "r");
}

// SIGTERM during a replicate's training: the run stops with a checkpoint, the sweep exits 130
// without evaluating or reporting anything (the same command resumes it from the checkpoint).
TEST(Sweep, InterruptedTrainingStopsTheStudyWithACheckpoint) {
  const fs::path dir = kvroute::testing::temp_dir("sweep_interrupt");
  std::vector<int32_t> train, val;
  for (int i = 0; i < 20000; ++i) train.push_back(static_cast<int32_t>((i * 3) % 64));
  for (int i = 0; i < 1000; ++i) val.push_back(static_cast<int32_t>((i * 3) % 64));
  write_token_data((dir / "data").string(), train, val);
  std::ofstream(dir / "base.yaml") << tiny_model_yaml([] {
    TinyModel two_layers = kSmall;
    two_layers.layers = 2;
    return two_layers;
  }()) <<
                                      "data: {dir: " << (dir / "data").string() << "}\n"
                                      "train: {steps: 1000000, batch_size: 2, seq_len: 16, log_interval: 1000, threads: 1,\n"
                                      "        checkpoint_interval: 0}\n"
                                      "dist: {backend: none}\n";
  std::ofstream(dir / "study.yaml") << "study: long\nbase: " << (dir / "base.yaml").string() << "\nseeds: [1, 2]\n"
                                       "runs:\n  - {name: a, overrides: [router.policy=none]}\n"
                                       "eval: {retention: [1.0, 0.5]}\n";
  const std::string log = (dir / "sweep.log").string();
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    std::freopen(log.c_str(), "w", stdout);
    std::freopen(log.c_str(), "a", stderr);
    execl(KVROUTE_BINARY, KVROUTE_BINARY, "sweep", (dir / "study.yaml").c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until the first replicate is training (its run directory has its config), then stop it.
  const fs::path run = dir / "long/runs/a/seed-1";
  for (int i = 0; i < 600 && !fs::exists(run / "config.yaml"); ++i) usleep(50 * 1000);
  usleep(300 * 1000);
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  std::ifstream in(log);
  const std::string out((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_TRUE(WIFEXITED(status)) << out;
  EXPECT_EQ(WEXITSTATUS(status), 130) << out;
  EXPECT_NE(out.find("sweep: interrupted while training a-s1"), std::string::npos) << out;
  EXPECT_EQ(out.find("error"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir / "long/report.md"));
  EXPECT_FALSE(fs::exists(run / "eval.json"));
  EXPECT_FALSE(fs::exists(dir / "long/runs/a/seed-2"));  // the next replicate never started
  bool checkpointed = false;
  for (const auto& e : fs::directory_iterator(run / "checkpoints")) checkpointed |= fs::exists(e.path() / "model.safetensors");
  EXPECT_TRUE(checkpointed) << out;
}

}  // namespace
}  // namespace kvroute
