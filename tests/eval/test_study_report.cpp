// Replicate statistics and the study report's verdicts, on synthetic numbers whose answers are
// known by construction.
#include <gtest/gtest.h>

#include <cmath>
#include <tuple>

#include "core/error.h"
#include "core/stats.h"
#include "eval/study_report.h"

namespace kvroute::eval {
namespace {

TEST(Stats, MeanSampleSdAndTInterval) {
  const Summary s = summarize({1.0, 2.0, 3.0, 4.0});
  EXPECT_EQ(s.n, 4);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_NEAR(s.sd, std::sqrt(5.0 / 3.0), 1e-12);  // sum of squares 5, n - 1 = 3
  // t(0.975, 3) = 3.182446: half-width 3.182446 * sd / 2.
  const Interval ci = mean_ci95({1.0, 2.0, 3.0, 4.0});
  ASSERT_TRUE(ci.defined);
  EXPECT_NEAR(ci.hi - ci.mean, 3.1824463 * std::sqrt(5.0 / 3.0) / 2.0, 1e-6);
  EXPECT_NEAR(ci.mean - ci.lo, ci.hi - ci.mean, 1e-12);
  // One replicate: a mean without an interval; none: nothing.
  EXPECT_FALSE(mean_ci95({0.7}).defined);
  EXPECT_DOUBLE_EQ(mean_ci95({0.7}).mean, 0.7);
  EXPECT_EQ(summarize({}).n, 0);
  // Identical values: zero width, still defined.
  const Interval flat = mean_ci95({0.5, 0.5, 0.5});
  EXPECT_TRUE(flat.defined);
  EXPECT_DOUBLE_EQ(flat.lo, 0.5);
  EXPECT_DOUBLE_EQ(flat.hi, 0.5);
}

TEST(Stats, TQuantilesMatchTables) {
  EXPECT_NEAR(t_quantile_975(1), 12.7062, 1e-4);
  EXPECT_NEAR(t_quantile_975(2), 4.3027, 1e-4);
  EXPECT_NEAR(t_quantile_975(10), 2.2281, 1e-4);
  EXPECT_NEAR(t_quantile_975(30), 2.0423, 1e-4);
  // Beyond the table: the expansion, continuous with it and tending to the normal 1.95996.
  EXPECT_NEAR(t_quantile_975(40), 2.0211, 1e-4);
  EXPECT_NEAR(t_quantile_975(60), 2.0003, 1e-4);
  EXPECT_NEAR(t_quantile_975(120), 1.9799, 1e-4);
  EXPECT_NEAR(t_quantile_975(100000), 1.95996, 1e-4);
  EXPECT_THROW(t_quantile_975(0), Error);
}

// A study of depth 8: baseline, an R-CLA run, and shallow baselines of 4 and 2 layers, 3 seeds.
// loss(run, kept, seed) is given per case.
struct Fake {
  StudyInfo info = [] {
    StudyInfo i;
    i.name = "fake";
    i.base_config = "base.yaml";
    i.source = "study.yaml";
    i.depth = 8;
    i.runs = {"baseline", "rcla", "shallow-4L", "shallow-2L"};
    return i;
  }();
  std::vector<StudyRow> rows;
  void add(const std::string& run, bool shallow, const std::string& policy, int kept, uint64_t seed, double loss) {
    StudyRow r;
    r.run = run;
    r.seed = seed;
    r.shallow = shallow;
    r.policy = policy;
    r.num_layers = shallow ? kept : 8;
    r.result.label = shallow ? "retention 1" : fmt::format("retention {:g}", kept / 8.0);
    r.result.strategy = "even";
    for (int l = 0; l < kept; ++l) r.result.kept.push_back(l * 8 / kept);
    r.result.loss = loss;
    r.result.perplexity = std::exp(loss);
    r.result.tokens = 1000;
    rows.push_back(r);
  }
  // baseline: 4.0 at 8 layers, +0.5 at 4, +2.0 at 2; R-CLA: base + delta_full, then +0.1 / +0.3;
  // shallow: the given losses. Seed noise: +-0.01 shared by all models of a seed.
  Fake(double delta_full, double shallow4, double shallow2) {
    for (uint64_t seed : {1, 2, 3}) {
      const double noise = (static_cast<double>(seed) - 2.0) * 0.01;
      add("baseline", false, "none", 8, seed, 4.0 + noise);
      add("baseline", false, "none", 4, seed, 4.5 + noise);
      add("baseline", false, "none", 2, seed, 6.0 + noise);
      add("rcla", false, "stochastic", 8, seed, 4.0 + delta_full + noise);
      add("rcla", false, "stochastic", 4, seed, 4.1 + delta_full + noise + 0.002 * static_cast<double>(seed));
      add("rcla", false, "stochastic", 2, seed, 4.3 + delta_full + noise);
      add("shallow-4L", true, "none", 4, seed, shallow4 + noise);
      add("shallow-2L", true, "none", 2, seed, shallow2 + noise);
    }
  }
};

TEST(StudyReport, ClaimsHoldWhenTheNumbersSaySo) {
  Fake f(0.02, 4.3, 4.6);  // R-CLA 0.5% worse at full, better than both shallow models, degrades 0.3 vs 2.0
  const std::vector<Claim> c = check_claims(f.info, f.rows);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].verdict, Verdict::Holds) << c[0].evidence;
  EXPECT_EQ(c[1].verdict, Verdict::Holds) << c[1].evidence;
  EXPECT_EQ(c[2].verdict, Verdict::Holds) << c[2].evidence;
  EXPECT_NE(c[2].evidence.find("25% (2 of 8 layers)"), std::string::npos) << c[2].evidence;
}

TEST(StudyReport, ClaimsFailWhenTheNumbersSaySo) {
  Fake f(0.2, 4.2, 4.6);  // R-CLA 5% worse at full; the 4-layer shallow model beats it at 4 layers
  const std::vector<Claim> c = check_claims(f.info, f.rows);
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].verdict, Verdict::DoesNotHold) << c[0].evidence;
  EXPECT_EQ(c[1].verdict, Verdict::DoesNotHold) << c[1].evidence;
  EXPECT_EQ(c[2].verdict, Verdict::Holds) << c[2].evidence;  // the degradation claim is independent
}

TEST(StudyReport, EqualCacheClaimIsUntestableWhenDepthDoesNotPay) {
  // The 4-layer shallow model (3.9) beats the deep baseline's full cache (4.0): depth does not pay
  // at this budget, so whether a shared cache beats the shallow model says nothing about R-CLA.
  Fake f(0.2, 3.9, 4.6);
  const std::vector<Claim> c = check_claims(f.info, f.rows);
  EXPECT_EQ(c[1].verdict, Verdict::Untestable) << c[1].evidence;
  EXPECT_NE(c[1].evidence.find("shallow-4L"), std::string::npos) << c[1].evidence;
  EXPECT_EQ(c[1].evidence.find("shallow-2L ("), std::string::npos) << c[1].evidence;  // 4.6: the deep model wins
  EXPECT_STREQ(verdict_name(c[1].verdict), "untestable at this budget");
}

TEST(StudyReport, DegradationClaimUsesDifferencesNotARatio) {
  // R-CLA's rise is ~0 (a ratio would explode); the claim is decided by differences with intervals.
  Fake f(0.02, 4.3, 4.6);
  for (StudyRow& r : f.rows)
    if (r.run == "rcla") r.result.loss = 4.02 + (static_cast<double>(r.seed) - 2.0) * 0.01;
  const std::vector<Claim> c = check_claims(f.info, f.rows);
  EXPECT_EQ(c[2].verdict, Verdict::Holds) << c[2].evidence;
  EXPECT_EQ(c[2].evidence.find("ratio"), std::string::npos) << c[2].evidence;
  EXPECT_NE(c[2].evidence.find("baseline minus twice R-CLA: +2.0000 [+2.0000, +2.0000]"), std::string::npos)
      << c[2].evidence;
  // R-CLA degrading more than half as much as the baseline: not "far more".
  Fake g(0.02, 4.3, 4.6);
  for (StudyRow& r : g.rows)
    if (r.run == "rcla" && r.result.kept.size() == 2) r.result.loss = 5.3 + (static_cast<double>(r.seed) - 2.0) * 0.01;
  EXPECT_EQ(check_claims(g.info, g.rows)[2].verdict, Verdict::DoesNotHold);
}

TEST(StudyReport, RegimePairsReportTheirOwnGapAndHowTheRegimeMovesIt) {
  // A second regime: its own baseline (4.5 at full cache) and R-CLA arm (4.55), both of 16 layers,
  // referred to the default regime's arm (gap 0.2).
  Fake f(0.2, 4.3, 4.6);
  f.info.runs.insert(f.info.runs.begin() + 2, {"baseline-x", "rcla-x"});
  f.info.baseline_of["rcla-x"] = "baseline-x";
  f.info.reference_of["rcla-x"] = "rcla";
  f.info.budget["baseline"] = {1840000, 2900000};
  f.info.budget["rcla"] = {1840000, 2900000};
  for (uint64_t seed : {1, 2, 3}) {
    const double noise = (static_cast<double>(seed) - 2.0) * 0.01;
    for (const auto& [run, policy, loss] : {std::tuple{"baseline-x", "none", 4.5}, {"rcla-x", "stochastic", 4.55}}) {
      StudyRow r;
      r.run = run;
      r.seed = seed;
      r.policy = policy;
      r.num_layers = 16;
      r.result.label = "retention 1";
      r.result.strategy = "even";
      for (int l = 0; l < 16; ++l) r.result.kept.push_back(l);
      r.result.loss = loss + noise;
      f.rows.push_back(r);
    }
  }
  const std::string md = study_markdown(f.info, f.rows);
  EXPECT_NE(md.find("Tokens per parameter: 0.63 (1.84M tokens, 2.9M parameters: baseline, rcla)."), std::string::npos)
      << md;
  EXPECT_NE(md.find("| rcla | baseline | 4.2000 ± 0.0100 | 4.0000 ± 0.0100 | +0.2000 [+0.2000, +0.2000] | +5.00%"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| rcla-x | baseline-x | 4.5500 ± 0.0100 | 4.5000 ± 0.0100 | +0.0500 [+0.0500, +0.0500] | +1.11%"),
            std::string::npos) << md;
  EXPECT_NE(md.find("-0.1500 [-0.1500, -0.1500] (vs rcla) |"), std::string::npos) << md;
  // The regime arm is compared with its own baseline, never with the study's (of another depth).
  EXPECT_NE(md.find("| rcla-x | baseline-x | retention 1 | 16 |"), std::string::npos) << md;
  EXPECT_EQ(md.find("| baseline-x | baseline |"), std::string::npos) << md;
  // Claims are checked on the study's own R-CLA run only.
  for (const Claim& c : check_claims(f.info, f.rows)) EXPECT_EQ(c.statement.find("rcla-x"), std::string::npos);
  // Its plot points are a fraction of its own 16 layers.
  EXPECT_NE(study_plot_data(f.info, f.rows).find("\"rcla-x\"\n100.0000 4.550000"), std::string::npos);
}

TEST(StudyReport, NoisyOrMissingEvidenceIsInconclusive) {
  // Differences that change sign across seeds: no verdict either way.
  Fake f(0.0, 4.4, 4.6);
  for (StudyRow& r : f.rows) {
    if (r.run == "rcla" && r.result.kept.size() == 8) r.result.loss = 4.0 + 0.1 * (static_cast<double>(r.seed) - 2.0) + 0.07;
    if (r.run == "shallow-4L") r.result.loss = 4.1 + 0.2 * (static_cast<double>(r.seed) - 2.0);
  }
  std::vector<Claim> c = check_claims(f.info, f.rows);
  EXPECT_EQ(c[0].verdict, Verdict::Inconclusive) << c[0].evidence;
  EXPECT_EQ(c[1].verdict, Verdict::Inconclusive) << c[1].evidence;
  // One seed: no intervals, so nothing is decided.
  Fake one(0.02, 4.3, 4.6);
  std::erase_if(one.rows, [](const StudyRow& r) { return r.seed != 1; });
  for (const Claim& x : check_claims(one.info, one.rows)) {
    EXPECT_EQ(x.verdict, Verdict::Inconclusive) << x.statement;
  }
  // No shallow baselines: claim 2 says why.
  Fake deep(0.02, 4.3, 4.6);
  std::erase_if(deep.rows, [](const StudyRow& r) { return r.shallow; });
  c = check_claims(deep.info, deep.rows);
  EXPECT_EQ(c[1].verdict, Verdict::Inconclusive);
  EXPECT_NE(c[1].evidence.find("shallow_baselines"), std::string::npos);
  // No R-CLA run: every claim is inconclusive, with the reason.
  Fake none(0.02, 4.3, 4.6);
  std::erase_if(none.rows, [](const StudyRow& r) { return r.run == "rcla"; });
  c = check_claims(none.info, none.rows);
  ASSERT_EQ(c.size(), 3u);
  for (const Claim& x : c) EXPECT_NE(x.evidence.find("no R-CLA run"), std::string::npos);
}

TEST(StudyReport, CsvKeepsEveryReplicateAndMarkdownShowsMeanSd) {
  Fake f(0.02, 4.3, 4.6);
  const std::string csv = study_csv(f.info, f.rows);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 1 + static_cast<long>(f.rows.size()));
  EXPECT_NE(csv.find("shallow-2L,3,shallow,none,retention 1,even,2,2,0.2500,"), std::string::npos) << csv;
  const std::string md = study_markdown(f.info, f.rows);
  EXPECT_NE(md.find("4.0000 ± 0.0100 (8)"), std::string::npos) << md;  // baseline at 100%: seeds 3.99 / 4.00 / 4.01
  EXPECT_NE(md.find("| 2 layers (25%) | rcla | -0.2800 [-0.2800, -0.2800] |"), std::string::npos) << md;
  EXPECT_NE(md.find("holds"), std::string::npos);
  const std::string dat = study_plot_data(f.info, f.rows);
  EXPECT_NE(dat.find("\"shallow, full cache\"\n50.0000 4.300000 0.010000\n25.0000 4.600000 0.010000"),
            std::string::npos) << dat;
}

TEST(StudyReport, ResultsCsvReadsBackToTheSameRows) {
  Fake f(0.02, 4.3, 4.6);
  const std::string csv = study_csv(f.info, f.rows);
  const std::vector<StudyRow> back = study_rows_from_csv(csv, "results.csv");
  ASSERT_EQ(back.size(), f.rows.size());
  EXPECT_EQ(study_csv(f.info, back), csv);
  EXPECT_EQ(study_markdown(f.info, back), study_markdown(f.info, f.rows));
  // Bad files: one error naming the file and line.
  auto refused = [](const std::string& text, const std::string& words) {
    try {
      (void)study_rows_from_csv(text, "r.csv");
      ADD_FAILURE() << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  const std::string head = csv.substr(0, csv.find('\n') + 1);
  refused("", "r.csv: empty file");
  refused("run,seed\n", "r.csv: line 1: not a study results.csv header");
  refused(head + "a,1,deep,none,retention 1,even,1,8,0.1,4.0,54.6,100\n", "r.csv: line 2: expected 13 fields");
  refused(head + "a,1,deep,none,retention 1,even,1,8,0.1,nan,54.6,100,0\n", "line 2: val_loss 'nan'");
  refused(head + "a,-1,deep,none,retention 1,even,1,8,0.1,4,54.6,100,0\n", "line 2: seed '-1'");
  refused(head + "a,1,wide,none,retention 1,even,1,8,0.1,4,54.6,100,0\n", "line 2: kind 'wide'");
  refused(head + "a,1,deep,none,retention 1,even,2,8,0.1,4,54.6,100,0\n", "line 2: kept 2 but 1 kept layers");
  refused(head + "a,1,deep,none,retention 1,even,1,8,0.1,4,54.6,100,x\n", "line 2: kept_layers 'x'");
}

// Learning curves: metrics.jsonl's val_loss lines become points (a re-evaluated step keeps its last
// line), curves.csv reads back to the same points, and the report follows the numbers: a gap that
// shrinks with tokens crosses 2% where the fitted line says, depth starts to pay.
TEST(StudyReport, CurvesFromMetricsCsvAndReport) {
  const std::string metrics =
      "{\"step\": 10, \"loss\": 5.0}\n"
      "{\"step\": 10, \"val_loss\": {\"1\": 4.9, \"0.5\": 5.1}, \"routing_plan\": {}}\n"
      "{\"step\": 20, \"val_loss\": {\"1\": 4.5}}\n"
      "{\"step\": 20, \"val_loss\": {\"1\": 4.4}}\n";
  const std::vector<CurvePoint> p = curve_points_from_metrics(metrics, "m.jsonl", "rcla", 2, 100);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].step, 10);
  EXPECT_EQ(p[0].tokens, 1000);
  EXPECT_DOUBLE_EQ(p[0].retention, 0.5);
  EXPECT_DOUBLE_EQ(p[2].loss, 4.4);  // the later line for step 20
  EXPECT_EQ(p[2].seed, 2u);
  try {
    (void)curve_points_from_metrics("{\"step\": 1, \"val_loss\": {\"1\": \"x\"}}\n", "m.jsonl", "a", 1, 1);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("m.jsonl: line 1: val_loss[1]"), std::string::npos) << e.what();
  }

  // A study: baseline and rcla (8 layers), shallow-4L; 3 seeds; evaluations at 1, 10, ..., 10^4 tokens
  // per parameter (parameters 1e6). rcla's gap (relative) rises, then falls 2 points per decade over the
  // upper half of the range (9%, 7%, 5%): the tail line reaches 2% at 10^5.5, beyond the measured range.
  // baseline - shallow-4L: +0.1, +0.05, +0.02, -0.04, -0.1 with a seed spread of 0.02: the mean is below 0
  // from 10^3 on, the interval's upper end only from 10^4; the tail line falls 0.06 per decade.
  Fake f(0.02, 4.3, 4.6);
  f.info.budget["baseline"] = {100000000, 1000000};
  std::vector<CurvePoint> points;
  const double gap[] = {0.02, 0.10, 0.09, 0.07, 0.05}, depth[] = {0.1, 0.05, 0.02, -0.04, -0.1};
  for (uint64_t seed : {1, 2, 3}) {
    const double noise = 0.001 * static_cast<double>(seed), spread = 0.02 * (static_cast<double>(seed) - 2.0);
    for (int i = 0; i < 5; ++i) {
      const int64_t step = 10 * (i + 1), tokens = 1000000 * static_cast<int64_t>(std::pow(10, i));
      const double base = 4.0 - 0.2 * i + noise;
      points.push_back({"baseline", seed, step, tokens, 1.0, base});
      points.push_back({"rcla", seed, step, tokens, 1.0, base * (1 + gap[i])});
      points.push_back({"rcla", seed, step, tokens, 0.5, base * (1 + gap[i]) + 0.05});
      points.push_back({"shallow-4L", seed, step, tokens, 1.0, base - depth[i] - spread});
    }
  }
  // Only each run's final evaluation (a study without in-training evaluations): no curve to draw.
  std::vector<CurvePoint> finals;
  for (const CurvePoint& q : points) {
    if (q.step == 50) finals.push_back(q);
  }
  std::vector<CurvePoint> baseline_only;
  for (const CurvePoint& q : points) {
    if (q.run == "baseline") baseline_only.push_back(q);
  }
  EXPECT_TRUE(curves_drawn(points));
  EXPECT_FALSE(curves_drawn(finals));
  EXPECT_FALSE(curves_drawn(baseline_only));
  EXPECT_EQ(curves_markdown(f.info, f.rows, finals), "");
  const std::string csv = curves_csv(points);
  const std::vector<CurvePoint> back = curves_from_csv(csv, "curves.csv");
  ASSERT_EQ(back.size(), points.size());
  EXPECT_EQ(curves_csv(back), csv);
  const std::string md = curves_markdown(f.info, f.rows, points);
  EXPECT_NE(md.find("| tokens | tokens/param | rcla gap | baseline - shallow-4L | baseline - shallow-2L | "
                    "rcla@0.5 - shallow-4L | rcla@0.25 - shallow-2L |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| 1.00M | 1.00 | +2.00% ["), std::string::npos) << md;
  EXPECT_NE(md.find("| rcla gap | +5.00% | not at the last point | not at the last point | 3 | -2.00% | "
                    "3.16e+05 (extrapolated) |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| baseline - shallow-4L | -0.1000 | 1000 | 10000 | 3 | -0.0600 | - (below at the last point) |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| baseline - shallow-2L | - | - | - | 0 | - | (fewer than 3 points) |"), std::string::npos) << md;
  EXPECT_EQ(curves_markdown(f.info, f.rows, {}), "");
  try {
    (void)curves_from_csv("run,seed,step,tokens,retention,val_loss\na,1,2,3,1,inf\n", "c.csv");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("c.csv: line 2: val_loss 'inf'"), std::string::npos) << e.what();
  }
}

// The curve claims' edge cases: unevenly spaced evaluations (the tail is the last 3 when the upper half
// of the log range holds fewer), a line already below the threshold at the last evaluation while the
// mean is not (no crossing is read backwards), and an early evaluation of one seed (no interval there:
// the interval column starts later instead of vanishing).
TEST(StudyReport, CurveClaimsFitTheTailAndLookOnlyForward) {
  Fake f(0.02, 4.3, 4.6);
  f.info.runs.push_back("rcla2");
  for (uint64_t seed : {1, 2, 3}) {
    for (int kept : {8, 4, 2}) f.add("rcla2", false, "stochastic", kept, seed, 4.1);
  }
  f.info.budget["baseline"] = {100000000, 1000000};
  const int decades[] = {0, 1, 2, 3, 10};
  // rcla: rises, then falls 0.5 points per decade through x = 2, 3, 10 (reaches 2% at x = 14); a line
  // through all five points would fall more slowly. rcla2: 3.0%, 1.0%, 2.1% in the tail: its line ends
  // below 2%, its last mean does not. baseline - shallow-4L: -0.1 throughout, one seed at x = 0.
  const double gap[] = {0.02, 0.05, 0.08, 0.075, 0.04}, gap2[] = {0.05, 0.04, 0.03, 0.01, 0.021};
  std::vector<CurvePoint> points;
  for (uint64_t seed : {1, 2, 3}) {
    const double spread = 0.01 * (static_cast<double>(seed) - 2.0);
    for (int i = 0; i < 5; ++i) {
      const int64_t step = 10 * (i + 1), tokens = 1000000 * static_cast<int64_t>(std::pow(10.0, decades[i]));
      const double base = 4.0 - 0.1 * i;
      points.push_back({"baseline", seed, step, tokens, 1.0, base});
      points.push_back({"rcla", seed, step, tokens, 1.0, base * (1 + gap[i])});
      points.push_back({"rcla2", seed, step, tokens, 1.0, base * (1 + gap2[i])});
      if (i > 0 || seed == 1) points.push_back({"shallow-4L", seed, step, tokens, 1.0, base + 0.1 + spread});
    }
  }
  const std::string md = curves_markdown(f.info, f.rows, points);
  EXPECT_NE(md.find("| rcla gap | +4.00% | not at the last point | not at the last point | 3 | -0.50% | "
                    "1e+14 (extrapolated) |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| rcla2 gap | +2.10% | not at the last point | not at the last point | 3 | -0.01% | "
                    "- (the tail line is below at the last point, the mean is not) |"),
            std::string::npos) << md;
  EXPECT_NE(md.find("| baseline - shallow-4L | -0.1000 | 1 | 10 | 3 | "), std::string::npos) << md;
}

// A study that continues a trained model (model.init_from) counts the tokens the starting model saw in
// the run that wrote it, in the budget line, the curves' token axis and the tail fits; the tokens of a
// starting model without a kvroute state.json (an imported model) are unknown, so the budget is a lower
// bound and the axis counts this run's tokens only.
TEST(StudyReport, ContinuedModelsCountTheStartingCheckpointsTokens) {
  for (const int64_t before : {int64_t{30000000}, int64_t{-1}}) {
    Fake f(0.02, 4.3, 4.6);
    f.info.budget["baseline"] = {3000000, 1000000, before};
    f.info.budget["rcla"] = {3000000, 1000000, before};
    std::vector<CurvePoint> points;
    for (uint64_t seed : {1, 2, 3}) {
      for (int i = 1; i <= 3; ++i) {
        const double base = 3.2 - 0.01 * i + 0.001 * static_cast<double>(seed);
        points.push_back({"baseline", seed, 100 * i, 1000000 * i, 1.0, base});
        points.push_back({"rcla", seed, 100 * i, 1000000 * i, 1.0, base * 1.04});
      }
    }
    const std::string md = study_markdown(f.info, f.rows), curves = curves_markdown(f.info, f.rows, points);
    const std::string dat = curves_plot_data(f.info, f.rows, points);
    if (before > 0) {
      EXPECT_NE(md.find("Tokens per parameter: 33.00 (3M tokens here + 30M in the run that wrote model.init_from, "
                        "1M parameters: baseline, rcla)."),
                std::string::npos) << md;
      EXPECT_NE(curves.find("Tokens count the 30M that the starting model"), std::string::npos) << curves;
      EXPECT_NE(curves.find("| 31.00M | 31.00 | +4.00% ["), std::string::npos) << curves;
      EXPECT_NE(curves.find("| 33.00M | 33.00 | +4.00% ["), std::string::npos) << curves;
      EXPECT_NE(dat.find("\n31.0000 4.000000 "), std::string::npos) << dat;
    } else {
      EXPECT_NE(md.find("Tokens per parameter: at least 3.00 (3M tokens here, not counting the training of "
                        "model.init_from (no kvroute state.json there), 1M parameters: baseline, rcla)."),
                std::string::npos) << md;
      EXPECT_EQ(curves.find("Tokens count the"), std::string::npos) << curves;
      EXPECT_NE(curves.find("| 1.00M | 1.00 | +4.00% ["), std::string::npos) << curves;
      EXPECT_NE(dat.find("\n1.0000 4.000000 "), std::string::npos) << dat;
    }
  }
}

}  // namespace
}  // namespace kvroute::eval
