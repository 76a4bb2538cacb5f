// Data parallelism: the gradient reducer's buckets, and 2 ranks under mpirun (also as root) against
// one rank, resume at another world size, failures.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "distributed/communicator.h"
#include "distributed/grad_reducer.h"
#include "kernels/ops.h"
#include "layers/transformer.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "tests/test_util.h"
#include "tests/train/train_util.h"

namespace kvroute::train {
namespace {

namespace fs = std::filesystem;
using test::logged_losses;
using test::make_data;
using test::tiny_yaml;
using test::write_config;

// Records the slices the reducer starts and doubles each (a stand-in for the sum over 2 ranks).
class RecordingCommunicator final : public dist::Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  void allreduce_sum(Tensor& buffer, int64_t) override { ops::scale_(buffer, 2.0f); }
  void allreduce_sum(std::vector<double>&) override {}
  void broadcast(Tensor&, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }
  std::string name() const override { return "recording"; }
  void start_allreduce(Tensor& slice) override {
    started.push_back(slice);
    ops::scale_(slice, 2.0f);
  }
  void finish_allreduce() override { ++finished; }
  std::vector<Tensor> started;
  int finished = 0;
};

TEST(GradientReducer, BucketsTileTheGradientsInOrderAndStartDuringBackward) {
  layers::ModelConfig mc;
  mc.vocab_size = 64;
  mc.hidden_size = 32;
  mc.num_layers = 4;
  mc.num_heads = 4;
  mc.num_kv_heads = 2;
  mc.head_dim = 8;
  mc.intermediate_size = 48;
  mc.max_seq_len = 16;
  layers::Transformer model(mc, 5), reference(mc, 5);
  Tensor inputs = testing::random_tensor({2, 8}, 1, 0, 63).to(DType::I32);
  Tensor targets = testing::random_tensor({2, 8}, 2, 0, 63).to(DType::I32);
  // Layers 1 and 3 read layer 0's K/V: layers 1..3 compute none, so their K/V weights get no
  // gradient and their bucket waits for finish().
  const layers::RoutingPlan plan = {0, 0, 2, 0};
  reference.loss(inputs, targets, plan).backward();
  RecordingCommunicator comm;
  dist::GradientReducer reducer(model, comm, /*bucket_elements=*/4000);
  ASSERT_GT(reducer.buckets(), 3);
  reducer.arm();
  model.loss(inputs, targets, plan).backward();
  const size_t early = comm.started.size();
  EXPECT_GT(early, 0u) << "some buckets start while the backward pass runs";
  EXPECT_LT(early, static_cast<size_t>(reducer.buckets())) << "the bucket of the unused K/V weights waits";
  reducer.finish();
  EXPECT_EQ(comm.finished, 1);
  ASSERT_EQ(static_cast<int64_t>(comm.started.size()), reducer.buckets());
  // Slices run from the end of the buffer to its start, adjacent, each exactly once.
  const float* base = model.flat_gradients().data<float>();
  int64_t expected_end = model.flat_gradients().numel();
  for (const Tensor& slice : comm.started) {
    const int64_t begin = slice.data<float>() - base;
    EXPECT_EQ(begin + slice.numel(), expected_end);
    expected_end = begin;
  }
  EXPECT_EQ(expected_end, 0);
  std::vector<float> got = model.flat_gradients().to_vector<float>(), want = reference.flat_gradients().to_vector<float>();
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], 2.0f * want[i]) << i;
}

// Open MPI keeps allocations in plugins it unloads at MPI_Finalize; LeakSanitizer (the sanitizer
// build) reports them from unknown modules, where no suppression can name them. Leak checking
// stays on everywhere else.
const std::string kMpirun =
    "env ASAN_OPTIONS=detect_leaks=0 " + std::string(KVROUTE_MPIEXEC) + " --allow-run-as-root --oversubscribe -np 2 ";
// Appended to every command line run under mpirun (the test configs default to dist.backend none).
const std::string kMpiBackend = " dist.backend=auto";

TEST(Mpi, TwoRanksMatchOneRankWithTheDoubledBatch) {
  const std::string data = make_data("mpi_data");
  const std::string dir = testing::temp_dir("mpi_cfg");
  const std::string yaml = tiny_yaml(data, dir + "/run") + "";
  const std::string cfg = write_config(dir, yaml);
  const std::string bin = KVROUTE_BINARY;
  // Routing off: one rank with batch 4 sees exactly the two ranks' batches of 2.
  ASSERT_EQ(testing::run_status(bin + " train " + cfg + " router.policy=none train.batch_size=4 train.run_dir=" + dir + "/one dist.backend=auto"), 0);
  ASSERT_EQ(testing::run_status(kMpirun + bin + " train " + cfg + " router.policy=none train.batch_size=2 train.run_dir=" + dir + "/two" + kMpiBackend), 0);
  std::vector<double> one = logged_losses(dir + "/one"), two = logged_losses(dir + "/two");
  ASSERT_EQ(one.size(), 20u);
  ASSERT_EQ(two.size(), 20u);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(one[i], two[i], 2e-4 * std::abs(one[i])) << "step " << i + 1;
}

TEST(Mpi, ResumeAtAnotherWorldSizeWithTheSameGlobalBatch) {
  const std::string data = make_data("mpi_resume_data");
  const std::string dir = testing::temp_dir("mpi_resume");
  const std::string cfg = write_config(dir, tiny_yaml(data, dir + "/run"));
  const std::string bin = KVROUTE_BINARY;
  // Global batch 4 sequences as 2 ranks x 2 or 1 rank x 2 micro-batches x 2: the same slices, the
  // same routing plans (stochastic routing stays on).
  const std::string common = " train.batch_size=2 train.global_batch_tokens=64 ";
  ASSERT_EQ(testing::run_status(bin + " train " + cfg + common + "train.run_dir=" + dir + "/straight"), 0);
  ASSERT_EQ(testing::run_status(kMpirun + bin + " train " + cfg + common + "train.steps=20 train.run_dir=" + dir + "/mixed" +
                " train.checkpoint_interval=10" + kMpiBackend), 0);
  // Drop the final checkpoint, resume the 2-rank run at step 10 with one rank.
  auto saved = nlohmann::json::parse(std::ifstream(dir + "/mixed/checkpoints/step_00000010/state.json"));
  EXPECT_EQ(saved["world_size"], 2);
  fs::remove_all(dir + "/mixed/checkpoints/step_00000020");
  ASSERT_EQ(testing::run_status(bin + " train " + cfg + common + "train.run_dir=" + dir + "/mixed --resume auto"), 0);
  std::vector<double> straight = logged_losses(dir + "/straight"), mixed = logged_losses(dir + "/mixed");
  ASSERT_EQ(straight.size(), 20u);
  ASSERT_EQ(mixed.size(), 20u);
  for (size_t i = 0; i < straight.size(); ++i) EXPECT_NEAR(straight[i], mixed[i], 2e-4 * std::abs(straight[i])) << i + 1;
}

TEST(Mpi, AFailingRankBringsAllRanksDown) {
  const std::string dir = testing::temp_dir("mpi_fail");
  // Rank-local failure: a data directory that does not exist.
  const std::string cfg = write_config(dir, tiny_yaml("/nonexistent/data", dir + "/run"));
  EXPECT_NE(testing::run_status("timeout 60 " + kMpirun + std::string(KVROUTE_BINARY) + " train " + cfg + kMpiBackend), 0);
}

// A config or flag error under mpirun is the same on every rank: one error line, not one per rank.
TEST(Mpi, AConfigErrorIsPrintedOnce) {
  const std::string dir = testing::temp_dir("mpi_config_error");
  const std::string cfg = write_config(dir, tiny_yaml(dir + "/data", dir + "/run"));
  for (const std::string& bad : {cfg + " model.bogus=1", cfg + " --threads abc"}) {
    const std::string err = dir + "/stderr.txt";
    std::system(("timeout 60 " + kMpirun + std::string(KVROUTE_BINARY) + " train " + bad + kMpiBackend + " 2> " + err +
                 " > /dev/null").c_str());
    std::ifstream in(err);
    int lines = 0;
    for (std::string line; std::getline(in, line);) lines += line.rfind("kvroute: error:", 0) == 0;
    EXPECT_EQ(lines, 1) << bad;
  }
}

}  // namespace
}  // namespace kvroute::train
