// `kvroute sweep STUDY.yaml`: a grid of training runs x evaluation plans, each run trained once
// per seed (`seeds: [..]`: model init, data order and routing follow the seed), optionally with
// equal-cache shallow baselines (`shallow_baselines: true`: for every evaluated keep-set size k
// below the depth, a full-cache model of k layers). Resumable: a replicate whose final checkpoint
// exists is not retrained (an unfinished one resumes), one evaluated with the same settings is not
// re-evaluated. Writes <out>/results.csv (every replicate), report.md (mean +- sd, paired
// differences with 95% intervals, the paper's claims with verdicts; eval/study_report.h) and
// plot.png (gnuplot, error bars), rewritten after every replicate so a partial study has a report.
// A run may name its own `baseline:` (a run without routing of the same depth: a regime study
// changes one factor in both) and a `reference:` (the same arm in the reference regime: the report
// then gives how much the factor moves the gap to the baseline).
#pragma once

#include <string>
#include <vector>

#include "distributed/communicator.h"
#include "eval/evaluate.h"

namespace kvroute::eval {

struct StudyRun {
  std::string name;
  std::vector<std::string> overrides;
  bool shallow = false;  // an equal-cache baseline added by shallow_baselines
  std::string baseline;   // paired baseline run (empty: the study's baseline)
  std::string reference;  // the same arm in the reference regime (empty: none)
};

struct Study {
  std::string name, base_config, out_dir, source;
  std::vector<std::string> overrides;  // for every run
  std::vector<StudyRun> runs;          // shallow baselines last
  std::vector<uint64_t> seeds;         // empty: one replicate with the config's seeds, in runs/<name>
  bool shallow_baselines = false;
  int depth = 0;                       // layers of the (deep) study models
  std::vector<double> retention = kDefaultRetention;
  std::string strategy = "even";       // even | greedy (adds greedy keep-sets of the same sizes)
  double plan_split = 0;               // greedy: choose on [0, f) of the (interleaved) validation windows, report on [f, 1)
  int64_t eval_batches = 0;
};

// Parses a study file; errors name the file and key.
Study load_study(const std::string& path);
// Runs (or resumes) the study and writes <out_dir>/results.csv, report.md, plot.png after every
// replicate; false when a training run was interrupted (SIGINT/SIGTERM: it stopped with a
// checkpoint; the report covers the replicates finished before it).
bool run_study(const Study& study, dist::Communicator& comm);
// Rewrites report.md and plot.png from <out_dir>/results.csv alone (no run directories needed),
// e.g. after the report's protocol changed.
void report_study(const Study& study);

}  // namespace kvroute::eval
