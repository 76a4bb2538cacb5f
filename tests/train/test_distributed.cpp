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
#include "distributed/shard.h"
#include "core/safetensors.h"
#include "kernels/ops.h"
#include "layers/transformer.h"
#include "train/checkpoint.h"
#include "train/config.h"
#include "train/memory_plan.h"
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

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(ShardLayout, PiecesTileTheBufferAndCutBucketsAndSegments) {
  for (int world : {1, 2, 3, 4, 7}) {
    for (int64_t total : {int64_t{0}, int64_t{5}, int64_t{100}, int64_t{1001}}) {
      int64_t covered = 0;
      for (int r = 0; r < world; ++r) {
        const dist::ShardLayout s(total, world, r);
        EXPECT_EQ(s.begin(), covered) << total << " over " << world;
        EXPECT_EQ(s.shard % 16, 0);
        covered = s.end();
        EXPECT_EQ(s.counts_in(0, total), s.counts());
      }
      EXPECT_EQ(covered, total);
    }
  }
  const dist::ShardLayout s(100, 2, 1);  // pieces of 64: [0, 64) and [64, 100)
  EXPECT_EQ(s.begin(), 64);
  EXPECT_EQ(s.counts_in(50, 70), (std::vector<int64_t>{14, 6}));
  EXPECT_EQ(s.counts_in(80, 90), (std::vector<int64_t>{0, 10}));
  const auto cut = s.segments({{0, 60, true}, {60, 10, false}, {70, 30, true}});
  ASSERT_EQ(cut.size(), 2u);
  EXPECT_EQ(cut[0].offset, 0);
  EXPECT_EQ(cut[0].numel, 6);
  EXPECT_FALSE(cut[0].decay);
  EXPECT_EQ(cut[1].offset, 6);
  EXPECT_EQ(cut[1].numel, 30);
  EXPECT_TRUE(cut[1].decay);
}

// ZeRO's sharded master weights, two ranks simulated in one process: each keeps a piece of the f32
// masters and a whole compute copy (f32 here: the CPU has no bf16 one), loads the same weights,
// takes the same gradients, updates its piece and receives the other's (the all-gather). Every
// step, both compute copies equal the unsharded model's weights bit for bit.
TEST(ShardLayout, ShardedMasterWeightsFollowTheUnshardedModelBitForBit) {
  layers::ModelConfig mc;
  mc.vocab_size = 50, mc.hidden_size = 32, mc.num_layers = 4, mc.num_heads = 4, mc.num_kv_heads = 2;
  mc.head_dim = 8, mc.intermediate_size = 48, mc.max_seq_len = 64, mc.init_std = 0.1;
  layers::Transformer whole(mc, 8), rank0(mc, 99), rank1(mc, 98);
  const int64_t P = whole.parameter_count();
  const dist::ShardLayout piece0(P, 2, 0), piece1(P, 2, 1);
  const int64_t split = piece0.end();
  rank0.shard_master_weights(0, split);
  rank1.shard_master_weights(split, P);
  ASSERT_TRUE(rank1.masters_sharded());
  EXPECT_EQ(rank1.master_offset(), split);
  EXPECT_EQ(rank1.flat_parameters().numel(), P - split);
  testing::expect_error([&] { (void)rank0.master_parameters(); }, {"sharded"});
  testing::expect_error([&] { rank0.refresh_compute_copy(); }, {"sharded"});
  // Loading writes the whole compute copy and this rank's piece of the masters.
  for (layers::Transformer* r : {&rank0, &rank1}) r->load_parameters(whole.master_parameters(), "test");
  const std::vector<float> initial = whole.flat_parameters().to_vector<float>();
  EXPECT_EQ(rank0.compute_copy()->to_vector<float>(), initial);
  EXPECT_EQ(rank1.flat_parameters().to_vector<float>(), std::vector<float>(initial.begin() + split, initial.end()));

  const ops::AdamWConfig adamw{1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f};
  Tensor m = Tensor::zeros({P}), v = Tensor::zeros({P});
  Tensor m0 = Tensor::zeros({split}), v0 = Tensor::zeros({split}), m1 = Tensor::zeros({P - split}),
         v1 = Tensor::zeros({P - split});
  for (int64_t step = 1; step <= 3; ++step) {
    Tensor tokens = testing::random_tensor({2, 12}, static_cast<uint64_t>(step), 0, 49).to(DType::I32);
    for (layers::Transformer* t : {&whole, &rank0, &rank1}) {
      t->zero_grad();
      t->loss(tokens, tokens, {0, 1, 2, 3}).backward();
    }
    EXPECT_EQ(rank1.flat_gradients().to_vector<float>(), whole.flat_gradients().to_vector<float>());
    ops::adamw_step(whole.flat_parameters(), whole.flat_gradients(), m, v, adamw, step, whole.decay_segments());
    Tensor c0 = rank0.compute_copy()->slice(0, 0, split), c1 = rank1.compute_copy()->slice(0, split, P);
    ops::adamw_step(rank0.flat_parameters(), rank0.flat_gradients().slice(0, 0, split), m0, v0, adamw, step,
                    piece0.segments(whole.decay_segments()), &c0);
    ops::adamw_step(rank1.flat_parameters(), rank1.flat_gradients().slice(0, split, P), m1, v1, adamw, step,
                    piece1.segments(whole.decay_segments()), &c1);
    rank0.compute_copy()->slice(0, split, P).copy_(c1);  // the all-gather
    rank1.compute_copy()->slice(0, 0, split).copy_(c0);
    const std::vector<float> want = whole.flat_parameters().to_vector<float>();
    EXPECT_EQ(rank0.compute_copy()->to_vector<float>(), want) << "step " << step;
    EXPECT_EQ(rank1.compute_copy()->to_vector<float>(), want) << "step " << step;
    // The gathered masters name every parameter as the model does.
    Tensor gathered = Tensor::empty({P});
    gathered.slice(0, 0, split).copy_(rank0.flat_parameters());
    gathered.slice(0, split, P).copy_(rank1.flat_parameters());
    EXPECT_EQ(gathered.to_vector<float>(), want);
    EXPECT_EQ(rank0.views_of(gathered).front().first, whole.master_parameters().front().first);
  }
}

// ZeRO stages 1 and 2 against plain data parallelism under 2 ranks: stochastic routing (unused K/V
// projections get no gradient), clipping active. With 2 ranks every reduction is the same single
// addition, so with one micro-batch per step losses, weights and moments match to the last bit. With
// 2 micro-batches per step stage 1 still does; stage 2 reduces each micro-batch over the ranks before
// adding them (plain data parallelism adds a rank's micro-batches first), which differs in the last
// bits only. A resumed sharded run matches its straight run bit for bit, and a sharded checkpoint
// resumes on one rank without ZeRO.
TEST(Mpi, ZeroStagesMatchPlainDataParallelism) {
  const std::string data = make_data("mpi_zero_data");
  const std::string dir = testing::temp_dir("mpi_zero");
  const std::string cfg = write_config(dir, tiny_yaml(data, dir + "/run"));
  const std::string bin = KVROUTE_BINARY;
  // Buckets of ~500 elements: many buckets, most of them cut between the two ranks' pieces.
  const std::string common = " train.batch_size=2 train.global_batch_tokens=128 optim.grad_clip=0.2"
                             " train.checkpoint_interval=10 dist.bucket_mb=0.002 ";
  std::string one_micro_common = common;  // 2 ranks x 2 sequences x 16 tokens: one micro-batch per step
  one_micro_common.replace(one_micro_common.find("=128"), 4, "=64");
  for (int zero : {0, 1, 2}) {
    // Stage 2 also recomputes its layers (bit-identical gradients, reduce-scatter hooks inside the
    // recomputed backward passes).
    const std::string run = " train.run_dir=" + dir + "/zero" + std::to_string(zero);
    const std::string args = "dist.zero=" + std::to_string(zero) + (zero == 2 ? " train.recompute=layer" : "");
    ASSERT_EQ(testing::run_status(kMpirun + bin + " train " + cfg + common + args + run + kMpiBackend), 0) << "zero " << zero;
    if (zero != 1) {
      ASSERT_EQ(testing::run_status(kMpirun + bin + " train " + cfg + one_micro_common + args + run + "-one-micro" +
                                    kMpiBackend),
                0)
          << "zero " << zero;
    }
  }
  const std::vector<double> plain = logged_losses(dir + "/zero0");
  ASSERT_EQ(plain.size(), 20u);
  const std::string last = "/checkpoints/step_00000020/";
  auto same_run = [&](const std::string& run, const std::string& reference) {
    EXPECT_EQ(logged_losses(run), logged_losses(reference)) << run;
    for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
      EXPECT_EQ(file_bytes(run + last + file), file_bytes(reference + last + file)) << run << " " << file;
    }
  };
  same_run(dir + "/zero1", dir + "/zero0");
  same_run(dir + "/zero2-one-micro", dir + "/zero0-one-micro");
  const std::vector<double> zero2 = logged_losses(dir + "/zero2");
  ASSERT_EQ(zero2.size(), plain.size());
  for (size_t i = 0; i < plain.size(); ++i) EXPECT_NEAR(zero2[i], plain[i], 1e-5 * std::abs(plain[i])) << i + 1;
  // Its weights and moments: mean |difference| over mean |value| of each file.
  for (const char* file : {"model.safetensors", "optimizer.safetensors"}) {
    const safetensors::File a = safetensors::load(dir + "/zero2" + last + file);
    const safetensors::File b = safetensors::load(dir + "/zero0" + last + file);
    ASSERT_EQ(a.tensors.size(), b.tensors.size()) << file;
    double diff = 0, size = 0;
    for (size_t t = 0; t < a.tensors.size(); ++t) {
      const std::vector<float> x = a.tensors[t].second.to_vector<float>(), y = b.get(a.tensors[t].first).to_vector<float>();
      ASSERT_EQ(x.size(), y.size()) << a.tensors[t].first;
      for (size_t i = 0; i < x.size(); ++i) diff += std::abs(x[i] - y[i]), size += std::abs(y[i]);
    }
    ASSERT_GT(size, 0) << file;
    std::printf("zero 2 with 2 micro-batches vs plain, %s: mean |difference| / mean |value| = %.3g\n", file, diff / size);
    EXPECT_LT(diff / size, 1e-4) << file;
  }
  // One process: ZeRO is a no-op that takes the sharded code path (pieces of the whole buffer).
  for (int zero : {0, 2}) {
    ASSERT_EQ(testing::run_status(bin + " train " + cfg + common + "dist.zero=" +
                                  std::to_string(zero) + " train.run_dir=" + dir + "/single" + std::to_string(zero)),
              0);
  }
  EXPECT_EQ(logged_losses(dir + "/single2"), logged_losses(dir + "/single0"));
  EXPECT_EQ(file_bytes(dir + "/single2" + last + "optimizer.safetensors"),
            file_bytes(dir + "/single0" + last + "optimizer.safetensors"));
  // Resume the stage-2 run from step 10 at the same world size: bit for bit.
  fs::copy(dir + "/zero2", dir + "/resumed", fs::copy_options::recursive);
  fs::remove_all(dir + "/resumed/checkpoints/step_00000020");
  ASSERT_EQ(testing::run_status(kMpirun + bin + " train " + cfg + common + "dist.zero=2 train.run_dir=" + dir +
                                "/resumed --resume auto" + kMpiBackend),
            0);
  EXPECT_EQ(logged_losses(dir + "/resumed"), zero2);
  EXPECT_EQ(file_bytes(dir + "/resumed" + last + "model.safetensors"), file_bytes(dir + "/zero2" + last + "model.safetensors"));
  // And on one rank without ZeRO (2 micro-batches x 2 sequences: the same slices and plans).
  fs::copy(dir + "/zero2", dir + "/one", fs::copy_options::recursive);
  fs::remove_all(dir + "/one/checkpoints/step_00000020");
  ASSERT_EQ(testing::run_status(bin + " train " + cfg + common + "train.run_dir=" + dir +
                                "/one --resume auto"),
            0);
  const std::vector<double> one = logged_losses(dir + "/one");
  ASSERT_EQ(one.size(), 20u);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(one[i], plain[i], 2e-4 * std::abs(plain[i])) << i + 1;
}

// A byte count of the last logged step in a run's metrics.jsonl: state_bytes (the allocator's live
// bytes as the step began: the model state a rank holds between steps) or peak_bytes (its peak
// during the step). At world size 1, 2 and 4: ZeRO 1 takes the AdamW moments (8 bytes per
// parameter) down as 1/N, ZeRO 2 the moments and the gradients (12 bytes per parameter).
double last_logged_bytes(const std::string& run, const char* key) {
  std::ifstream in(run + "/metrics.jsonl");
  double bytes = 0;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.contains(key)) bytes = j[key].get<double>();
  }
  return bytes;
}
double state_bytes_of(const std::string& run) { return last_logged_bytes(run, "state_bytes"); }
double peak_bytes_of(const std::string& run) { return last_logged_bytes(run, "peak_bytes"); }

TEST(Mpi, ZeroShardsTheOptimizerStateAndGradientsAsOneOverN) {
  const std::string data = make_data("mpi_zero_memory_data");
  const std::string dir = testing::temp_dir("mpi_zero_memory");
  // A model of ~0.5M parameters: its flat buffers dwarf every other tensor that outlives a step.
  const std::string cfg = write_config(dir, tiny_yaml(data, dir + "/run"));
  const std::string model = " model.hidden_size=128 model.intermediate_size=512 model.num_heads=4 model.num_kv_heads=2"
                            " model.head_dim=32 train.steps=2 train.batch_size=1 ";
  const std::string bin = KVROUTE_BINARY;
  auto state_bytes = [&](int ranks, int zero, const std::string& extra = "", const std::string& tag = "") {
    const std::string run = dir + "/n" + std::to_string(ranks) + "z" + std::to_string(zero) + tag;
    const std::string launch = "env ASAN_OPTIONS=detect_leaks=0 " + std::string(KVROUTE_MPIEXEC) +
                               " --allow-run-as-root --oversubscribe -np " + std::to_string(ranks) + " ";
    EXPECT_EQ(testing::run_status(launch + bin + " train " + cfg + model + "dist.zero=" + std::to_string(zero) + extra +
                                  " train.run_dir=" + run + kMpiBackend),
              0);
    return state_bytes_of(run);
  };
  const double parameters = [&] {
    const RunConfig c = load_config(cfg, {"model.hidden_size=128", "model.intermediate_size=512", "model.num_heads=4",
                                          "model.num_kv_heads=2", "model.head_dim=32"});
    return static_cast<double>(c.model.parameter_count());
  }();
  const double plain = state_bytes(1, 0);
  ASSERT_GT(plain, 16 * parameters) << "weights, gradients and two moments";
  for (int ranks : {2, 4}) {
    const double saved1 = plain - state_bytes(ranks, 1), saved2 = plain - state_bytes(ranks, 2);
    const double share = 1.0 - 1.0 / ranks;
    // Within the allocator's size classes (blocks rounded up by at most a quarter).
    EXPECT_NEAR(saved1 / (8 * parameters * share), 1.0, 0.25) << ranks << " ranks, zero 1";
    EXPECT_NEAR(saved2 / (12 * parameters * share), 1.0, 0.25) << ranks << " ranks, zero 2";
    // `kvroute memory` plans the sharded state within 2% of the measured bytes.
    for (int zero : {1, 2}) {
      RunConfig c = load_config(cfg, {"model.hidden_size=128", "model.intermediate_size=512", "model.num_heads=4",
                                      "model.num_kv_heads=2", "model.head_dim=32"});
      c.dist.zero = zero;
      const double planned = plan_memory(c, ranks).model_state();
      const std::string run = dir + "/n" + std::to_string(ranks) + "z" + std::to_string(zero);
      EXPECT_NEAR(state_bytes_of(run), planned, 0.02 * planned) << ranks << " ranks, zero " << zero;
    }
  }
  // Stage 2 with 2 micro-batches per step reduces each into the piece: the step's peak stays that of
  // one micro-batch per step (measured +0.06 bytes per parameter; keeping the first micro-batch's
  // whole gradients measured +1.6). Buckets of 12,500 elements, so that one step holds only a few at a time.
  (void)state_bytes(2, 2, " dist.bucket_mb=0.05", "one");
  (void)state_bytes(2, 2, " dist.bucket_mb=0.05 train.global_batch_tokens=64", "acc");
  const double accumulated = peak_bytes_of(dir + "/n2z2acc"), single = peak_bytes_of(dir + "/n2z2one");
  ASSERT_GT(single, 0);
  EXPECT_LT(accumulated - single, 1.0 * parameters) << "peak " << accumulated << " vs " << single;
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
