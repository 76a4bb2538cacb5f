// The report of a study (eval/sweep.h): results.csv (every replicate), report.md (mean +- sd over
// seeds, paired differences against the baseline with 95% intervals, the equal-cache comparison
// with shallow full-cache models, and the paper's three claims with verdicts) and the gnuplot
// input for plot.png (error bars). Pure functions of the measured rows, so they are tested on
// synthetic numbers.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "eval/evaluate.h"

namespace kvroute::eval {

struct StudyRow {
  std::string run;          // the study's run name; replicates share it
  uint64_t seed = 0;
  bool shallow = false;     // an equal-cache baseline: a full-cache model of fewer layers
  std::string policy;       // router policy it was trained with (none, stochastic, fixed_groups, ...)
  int num_layers = 0;       // of this model
  PlanResult result;        // label, strategy, kept, loss, ...
};

// What a run was trained on: tokens seen and parameters (for tokens per parameter). A run that
// starts from model.init_from continues a model that has seen prior_tokens already: those of the run
// that wrote the checkpoint (its state.json), or -1 where they are unknown (no state.json: an imported model).
struct Budget {
  int64_t tokens = 0, parameters = 0, prior_tokens = 0;
};

struct StudyInfo {
  std::string name, base_config, source;
  int depth = 0;                  // layers of the study's (deep) models: kv_fraction = kept / depth
  std::vector<std::string> runs;  // run names in study order (shallow baselines last)
  double plan_split = 0;          // > 0: greedy sets chosen on [0, f) of the validation windows
  std::map<std::string, std::string> baseline_of;   // explicit pairs: run -> its own baseline run
  std::map<std::string, std::string> reference_of;  // run -> the same arm in the reference regime
  std::map<std::string, Budget> budget;             // by run (absent: not reported)
};

// Untestable: the claim's premise fails at this budget (claim 2: the deep full-cache baseline does
// not beat the shallow models, so depth does not pay yet and a shared cache cannot be judged).
enum class Verdict { Holds, DoesNotHold, Inconclusive, Untestable };
const char* verdict_name(Verdict v);

struct Claim {
  std::string statement;  // the paper's claim
  Verdict verdict = Verdict::Inconclusive;
  std::string evidence;   // one sentence with the measured numbers
};
// The paper's claims checked on the rows, one entry per claim and R-CLA run (router.policy
// stochastic), against the baseline (the deep run named "baseline", else the first deep run
// without routing):
//   1. R-CLA at full retention is within 2% of the baseline's loss;
//   2. at every budget with a shallow baseline, R-CLA with a shared cache beats the shallow model
//      (untestable when the deep baseline with its full cache does not beat every shallow model);
//   3. from 100% to 25% retention the baseline degrades far more (at least twice as much) than R-CLA.
// A verdict needs the 95% interval of the per-seed paired differences to be on one side. Runs
// paired with a baseline of their own (a regime study) are not checked against the claims.
std::vector<Claim> check_claims(const StudyInfo& info, const std::vector<StudyRow>& rows);

std::string study_csv(const StudyInfo& info, const std::vector<StudyRow>& rows);
// The rows of a results.csv written by study_csv (`kvroute sweep --report-only` re-reports a study
// from it, e.g. after a change of protocol, without its run directories). Errors name the file and
// line.
std::vector<StudyRow> study_rows_from_csv(const std::string& text, const std::string& path);
std::string study_markdown(const StudyInfo& info, const std::vector<StudyRow>& rows);
// plot.dat (one block per deep run: kept %, mean, sd; then the shallow baselines) and the gnuplot
// script that draws it into <out>/plot.png.
std::string study_plot_data(const StudyInfo& info, const std::vector<StudyRow>& rows);
std::string study_plot_script(const StudyInfo& info, const std::vector<StudyRow>& rows, const std::string& out_dir);

// ---- Learning curves: the in-training evaluations (eval.interval > 0) ---------------------------

// The loss of one replicate at one retention level after `tokens` training tokens (a val_loss line
// of its metrics.jsonl).
struct CurvePoint {
  std::string run;
  uint64_t seed = 0;
  int64_t step = 0, tokens = 0;
  double retention = 1.0;
  double loss = 0.0;
};
// The val_loss lines of a run's metrics.jsonl (a later line for the same step and level wins: a
// resumed run evaluates again); tokens = step x batch_tokens. Errors name the file and line.
std::vector<CurvePoint> curve_points_from_metrics(const std::string& text, const std::string& path,
                                                  const std::string& run, uint64_t seed, int64_t batch_tokens);
// curves.csv: every point of every replicate (the report re-reads it when run directories are gone).
std::string curves_csv(const std::vector<CurvePoint>& points);
std::vector<CurvePoint> curves_from_csv(const std::string& text, const std::string& path);
// report.md's section on the curves, at every evaluated point (seed means with 95% intervals of the
// per-seed paired differences): each routed deep run's loss at full retention relative to the
// baseline's (the full-retention gap); the deep baseline minus each shallow full-cache model
// (negative: depth pays); each routed deep run at the shallow model's cache minus that model
// (negative: the shared cache beats the shallow model, claim 2). Then, per comparison, the first
// evaluation from which the mean (and the interval's upper end) stays below its threshold (gap 2%,
// differences 0), and a least-squares line against log10(tokens per parameter) through the upper
// half of the measured range, read forward only: where it would reach the threshold.
// Empty without curves (curves_drawn); runs are classified by the study's rows (final evaluations).
std::string curves_markdown(const StudyInfo& info, const std::vector<StudyRow>& rows,
                            const std::vector<CurvePoint>& points);
// Whether the points hold curves to compare: some replicate evaluated at two or more steps (a study
// without in-training evaluations has only each run's final one, which results.csv already
// reports), and at least two runs (a partial study with the baseline alone has nothing to compare).
bool curves_drawn(const std::vector<CurvePoint>& points);
// curves.dat and the gnuplot script drawing curves.png (two panels: relative gaps, differences).
std::string curves_plot_data(const StudyInfo& info, const std::vector<StudyRow>& rows,
                             const std::vector<CurvePoint>& points);
std::string curves_plot_script(const StudyInfo& info, const std::string& out_dir);

}  // namespace kvroute::eval
