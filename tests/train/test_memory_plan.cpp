// `kvroute memory`'s figures against what small CPU runs measure: the model state between steps
// and the allocator's peak above it during a step, within 10%, in f32 and bf16, with and without
// recomputation; and the planner's verdicts on a device.
#include <gtest/gtest.h>

#include <algorithm>

#include "distributed/communicator.h"
#include "kernels/ops.h"
#include "train/config.h"
#include "train/memory_plan.h"
#include "train/trainer.h"
#include "tests/test_util.h"
#include "tests/train/train_util.h"

namespace kvroute::train {
namespace {

using testing::expect_error;
using test::make_data;
using test::tiny_yaml;

RunConfig measured_config(const std::string& data, const std::string& run_dir) {
  RunConfig c = parse_config(tiny_yaml(data, run_dir), "memory.yaml");
  c.model.hidden_size = 64;
  c.model.num_layers = 4;
  c.model.num_heads = 4;
  c.model.num_kv_heads = 2;
  c.model.head_dim = 16;
  c.model.intermediate_size = 192;
  c.model.max_seq_len = 128;
  c.train.batch_size = 8;
  c.train.seq_len = 128;
  c.train.steps = 3;
  c.train.threads = 2;
  c.eval.batches = 1;
  return c;
}

TEST(MemoryPlan, MatchesTheMeasuredPeakOfSmallCpuRunsWithinTenPercent) {
  const std::string data = make_data("memory_data");
  auto comm = dist::make_local_communicator();
  std::vector<Precision> precisions = {Precision::FP32};
  if (ops::cpu_bf16_supported()) precisions.push_back(Precision::BF16);
  for (Precision precision : precisions) {
    for (Recompute recompute : {Recompute::None, Recompute::Layer}) {
      RunConfig c = measured_config(data, testing::temp_dir("memory_run"));
      c.train.precision = precision;
      c.train.recompute = recompute;
      const std::string what = fmt::format("{} recompute {}", precision_name(precision), recompute_name(recompute));
      TrainResult r = run_training(c, *comm, {"", 0, true, true});
      const MemoryPlan plan = plan_memory(c, 1);
      const double peak = static_cast<double>(*std::max_element(r.step_peak_bytes.begin(), r.step_peak_bytes.end()));
      const double planned = recompute == Recompute::Layer ? plan.activations_recompute : plan.activations;
      EXPECT_NEAR(static_cast<double>(r.state_bytes), plan.model_state(), 0.02 * plan.model_state()) << what;
      EXPECT_NEAR(peak, planned, 0.1 * peak) << what << ": measured " << peak << " bytes, planned " << planned;
    }
  }
}

TEST(MemoryPlan, SaysWhetherItFitsAndWhatWouldMakeItFit) {
  RunConfig c = measured_config(make_data("memory_fit_data"), testing::temp_dir("memory_fit"));
  const MemoryPlan plan = plan_memory(c, 1);
  // f32 flat buffers, each rounded up to the allocator's size class (at most 25% more).
  EXPECT_GE(plan.master_weights, 4.0 * static_cast<double>(c.model.parameter_count()));
  EXPECT_LE(plan.master_weights, 5.0 * static_cast<double>(c.model.parameter_count()) + 64);
  EXPECT_EQ(plan.optimizer, 2 * plan.master_weights);
  EXPECT_LT(plan.activations_recompute, plan.activations);
  ASSERT_EQ(plan.kv_cache.size(), 3u);
  EXPECT_EQ(plan.kv_cache[1].second * 2, plan.kv_cache[0].second);  // half the layers at retention 0.5
  EXPECT_NE(format_memory_plan(plan, c, {"big", 1e12}).find("fits big"), std::string::npos);
  // Room for the model state and the recomputed activations only: recompute is the advice.
  const MemoryDevice tight{"tight", plan.model_state() + (plan.activations + plan.activations_recompute) / 2};
  const std::string advice = format_memory_plan(plan, c, tight);
  EXPECT_NE(advice.find("does not fit tight"), std::string::npos) << advice;
  EXPECT_NE(advice.find("would fit with train.recompute=layer"), std::string::npos) << advice;
  EXPECT_NE(advice.find("would fit with train.batch_size="), std::string::npos) << advice;
  // Smaller than the model state: no setting of this build helps, and the report says so.
  const std::string none = format_memory_plan(plan, c, {"tiny", plan.model_state() / 2});
  EXPECT_NE(none.find("exceeds the device"), std::string::npos) << none;
  // ZeRO over 4 ranks: the moments (stage 1) and the gradients (stage 2) are a quarter; a device
  // between the two states is advised stage 2.
  RunConfig z = c;
  z.dist.zero = 2;
  const MemoryPlan sharded = plan_memory(z, 4), plain4 = plan_memory(c, 4);
  EXPECT_NEAR(sharded.optimizer, plain4.optimizer / 4, 0.25 * plain4.optimizer / 4);
  EXPECT_NEAR(sharded.gradients, plain4.gradients / 4, 0.25 * plain4.gradients / 4);
  EXPECT_EQ(sharded.master_weights, plain4.master_weights);
  // With a bf16 compute copy (GPUs) the f32 masters are sharded too.
  RunConfig gpu = z;
  gpu.train.device = Device::Kind::CUDA;
  gpu.train.precision = Precision::BF16;
  const MemoryPlan gpu_sharded = plan_memory(gpu, 4);
  EXPECT_GT(gpu_sharded.weights, 0);
  EXPECT_NEAR(gpu_sharded.master_weights, plain4.master_weights / 4, 0.25 * plain4.master_weights / 4);
  const MemoryDevice between{"between", (sharded.total() + plain4.total()) / 2};
  const std::string zero_advice = format_memory_plan(plain4, c, between);
  EXPECT_NE(zero_advice.find("would fit with dist.zero=2"), std::string::npos) << zero_advice;
  expect_error([] { (void)memory_device("tpu"); }, {"--device", "tpu", "h100"});
  expect_error([&] { (void)plan_memory(c, 0); }, {"--world-size"});
}

}  // namespace
}  // namespace kvroute::train
