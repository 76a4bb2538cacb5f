#include <gtest/gtest.h>

#include <cmath>

#include "layers/inference_plan.h"
#include "layers/router.h"
#include "tests/test_util.h"

namespace kvroute::layers {
namespace {

using testing::expect_error;

TEST(Plan, FormatParseAndValidate) {
  EXPECT_EQ(format_plan({0, 0, 2, 2, 4, 4}), "0,0,2,2,4,4");
  EXPECT_EQ(parse_plan("0,0,2,2,4,4", 6), (RoutingPlan{0, 0, 2, 2, 4, 4}));
  expect_error([] { (void)parse_plan("0,1,3", 3); }, {"0,1,3", "layer 2 reads layer 3"});
  expect_error([] { (void)parse_plan("0,x", 2); }, {"'x'"});
  expect_error([] { (void)parse_plan("0,0", 3); }, {"2 entries", "3 layers"});
  expect_error([] { (void)parse_plan("1,1", 2); }, {"layer 0 reads layer 1"});
}

TEST(Plan, KeepSetsAndInferencePlans) {
  EXPECT_EQ(keep_every(8, 2), (std::vector<int>{0, 2, 4, 6}));
  EXPECT_EQ(plan_from_keep_set(8, keep_every(8, 2)), (RoutingPlan{0, 0, 2, 2, 4, 4, 6, 6}));
  EXPECT_EQ(plan_from_keep_set(7, keep_every(7, 3)), (RoutingPlan{0, 0, 0, 3, 3, 3, 6}));
  // Retention: ceil(r L) layers including layer 0, spread evenly; 1/g equals every g-th layer.
  EXPECT_EQ(keep_retention(28, 0.25), keep_every(28, 4));
  EXPECT_EQ(keep_retention(28, 0.5), keep_every(28, 2));
  EXPECT_EQ(keep_retention(28, 1.0).size(), 28u);
  EXPECT_EQ(keep_retention(28, 0.33).size(), 10u);
  EXPECT_EQ(keep_retention(28, 17.0 / 28).size(), 17u);
  EXPECT_EQ(keep_retention(4, 0.25), (std::vector<int>{0}));
  // Two-decimal levels mean the fraction they round: 0.67 of 6 layers is 4 (not ceil(4.02) = 5).
  EXPECT_EQ(keep_retention(6, 0.67), (std::vector<int>{0, 1, 3, 4}));
  EXPECT_EQ(keep_retention(6, 0.33).size(), 2u);
  EXPECT_EQ(keep_retention(8, 0.33).size(), 3u);
  EXPECT_EQ(keep_retention(8, 0.25).size(), 2u);
  EXPECT_EQ(keep_retention(6, 0.68).size(), 5u);
  EXPECT_EQ(keep_retention(6, 0.001).size(), 1u);
  EXPECT_EQ(plan_from_keep_set(5, keep_list(5, {3, 0})), (RoutingPlan{0, 0, 0, 3, 3}));
  EXPECT_EQ(kv_layers(RoutingPlan{0, 0, 2, 2, 2}), (std::vector<int>{0, 2}));
  expect_error([] { (void)keep_list(4, {1, 2}); }, {"must contain layer 0"});
  expect_error([] { (void)keep_list(4, {0, 4}); }, {"layer 4", "4 layers"});
  expect_error([] { (void)keep_retention(4, 1.5); }, {"retention", "1.5"});
}

ModelConfig with_kv_weights(int layers, const RouterConfig& router) {
  ModelConfig c;
  c.num_layers = layers;
  c.kv_weight_layers = KVRouter(router, layers).layers_with_kv_weights();
  return c;
}

TEST(Plan, InferencePlanSnapsTheKeepSetToLayersWithKvWeightsFirst) {
  RouterConfig cla2;
  cla2.policy = RouterConfig::Policy::FixedGroups;
  cla2.group_size = 2;
  // CLA@2, 6 layers, retention 0.6: the requested set {0, 1, 3, 4} becomes the leaders {0, 2, 4},
  // and layer 2 reads its own cache (drawing the plan before snapping had it read layer 0).
  InferencePlan p = inference_plan(with_kv_weights(6, cla2), keep_retention(6, 0.6));
  EXPECT_EQ(p.kept, (std::vector<int>{0, 2, 4}));
  EXPECT_EQ(p.plan, (RoutingPlan{0, 0, 2, 2, 4, 4}));
  // The case: 28 layers, CLA@2, retention 0.6. Every kept layer owns K/V weights and reads
  // itself; the cache holds exactly the layers the plan reads.
  const ModelConfig c28 = with_kv_weights(28, cla2);
  for (double r : {1.0, 0.75, 0.6, 0.5, 0.33, 0.25}) {
    InferencePlan q = inference_plan(c28, keep_retention(28, r));
    EXPECT_EQ(kv_layers(q.plan), q.kept) << r;
    for (int l : q.kept) {
      EXPECT_TRUE(c28.layer_has_kv_weights(l)) << r << " " << l;
      EXPECT_EQ(q.plan[static_cast<size_t>(l)], l) << r << " " << l;
    }
  }
  // A model whose every layer owns K/V weights: the plan is plan_from_keep_set of the request.
  RouterConfig rcla;
  rcla.policy = RouterConfig::Policy::Stochastic;
  rcla.share_prob = 0.5;
  InferencePlan all = inference_plan(with_kv_weights(28, rcla), keep_retention(28, 0.6));
  EXPECT_EQ(all.kept, keep_retention(28, 0.6));
  EXPECT_EQ(all.plan, plan_from_keep_set(28, keep_retention(28, 0.6)));
  expect_error([] { (void)inference_plan(ModelConfig{}, {1, 2}); }, {"must contain layer 0"});
}

TEST(Router, PlansAreReproducibleAndKeyedByStepMicroStepRank) {
  RouterConfig cfg;
  cfg.policy = RouterConfig::Policy::Stochastic;
  cfg.share_prob = 0.5;
  cfg.seed = 7;
  KVRouter router(cfg, 12);
  EXPECT_EQ(router.training_plan(5, 1, 0), KVRouter(cfg, 12).training_plan(5, 1, 0));
  int differ = 0;
  for (uint32_t rank = 1; rank < 20; ++rank) differ += router.training_plan(5, 1, rank) != router.training_plan(5, 1, 0);
  for (uint64_t step = 6; step < 25; ++step) differ += router.training_plan(step, 1, 0) != router.training_plan(5, 1, 0);
  EXPECT_GE(differ, 35);  // collisions are possible but rare at 12 layers
  for (uint64_t step = 0; step < 100; ++step) validate_plan(router.training_plan(step, 0, 0), 12);
}

TEST(Router, ShareProbZeroIsPlainSelfAttention) {
  RouterConfig cfg;
  cfg.policy = RouterConfig::Policy::Stochastic;
  cfg.share_prob = 0.0;
  KVRouter router(cfg, 16);
  for (uint64_t step = 0; step < 500; ++step) EXPECT_EQ(router.training_plan(step, 0, 0), self_plan(16));
  EXPECT_EQ(KVRouter(RouterConfig{}, 16).training_plan(3, 0, 0), self_plan(16));
}

TEST(Router, BorrowFrequencyAndUniformSourcesOverTenThousandDraws) {
  const int L = 8, draws = 10000;
  const double p = 0.5;
  RouterConfig cfg;
  cfg.policy = RouterConfig::Policy::Stochastic;
  cfg.share_prob = p;
  cfg.seed = 123;
  KVRouter router(cfg, L);
  std::vector<int> borrowed(L, 0);
  std::vector<std::vector<int>> sources(L, std::vector<int>(L, 0));
  for (int d = 0; d < draws; ++d) {
    RoutingPlan plan = router.training_plan(static_cast<uint64_t>(d), 0, 0);
    EXPECT_EQ(plan[0], 0);
    for (int l = 1; l < L; ++l) {
      if (plan[l] != l) {
        ++borrowed[l];
        ++sources[l][plan[l]];
      }
    }
  }
  const double sigma = std::sqrt(draws * p * (1 - p));
  for (int l = 1; l < L; ++l) {
    EXPECT_NEAR(borrowed[l], draws * p, 3 * sigma) << "layer " << l;
    // Given a borrow, each of the l earlier layers is equally likely.
    const double q = 1.0 / l, expected = borrowed[l] * q, s = std::sqrt(borrowed[l] * q * (1 - q));
    for (int j = 0; j < l; ++j) EXPECT_NEAR(sources[l][j], expected, 3 * s + 1e-9) << "layer " << l << " source " << j;
  }
}

TEST(Router, PreviousSourceFixedAndRandomGroups) {
  RouterConfig prev;
  prev.policy = RouterConfig::Policy::Stochastic;
  prev.share_prob = 1.0;
  prev.source = RouterConfig::Source::Previous;
  EXPECT_EQ(KVRouter(prev, 5).training_plan(0, 0, 0), (RoutingPlan{0, 0, 1, 2, 3}));

  RouterConfig cla;
  cla.policy = RouterConfig::Policy::FixedGroups;
  cla.group_size = 3;
  KVRouter cla_router(cla, 7);
  EXPECT_EQ(cla_router.training_plan(9, 0, 0), (RoutingPlan{0, 0, 0, 3, 3, 3, 6}));
  EXPECT_EQ(cla_router.layers_with_kv_weights(), (std::vector<bool>{true, false, false, true, false, false, true}));

  RouterConfig rd;
  rd.policy = RouterConfig::Policy::RandomFixedGroups;
  rd.group_size = 2;
  rd.group_share_prob = 0.5;
  KVRouter rd_router(rd, 6);
  int used_leader = 0, total = 0;
  for (uint64_t step = 0; step < 2000; ++step) {
    RoutingPlan plan = rd_router.training_plan(step, 0, 0);
    for (int l = 0; l < 6; ++l) {
      const int leader = l / 2 * 2;
      EXPECT_TRUE(plan[l] == l || plan[l] == leader);
      if (l != leader) {
        ++total;
        used_leader += plan[l] == leader;
      }
    }
  }
  EXPECT_NEAR(static_cast<double>(used_leader) / total, 0.5, 3 * std::sqrt(0.25 / total));
  EXPECT_EQ(rd_router.layers_with_kv_weights(), std::vector<bool>(6, true));
  RouterConfig bad;
  bad.share_prob = 1.5;
  expect_error([&] { KVRouter(bad, 4); }, {"router.share_prob", "1.5"});
}

}  // namespace
}  // namespace kvroute::layers
