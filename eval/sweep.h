// `kvroute sweep STUDY.yaml`: a grid of training runs x evaluation plans. Resumable: a run whose
// final checkpoint exists is not retrained (an unfinished one resumes), a run with eval.json is
// not re-evaluated. Writes <out>/results.csv, report.md and plot.png (validation loss against
// KV-cache retention, one line per model; gnuplot).
#pragma once

#include <string>
#include <vector>

#include "dist/communicator.h"
#include "eval/evaluate.h"

namespace kvroute::eval {

struct StudyRun {
  std::string name;
  std::vector<std::string> overrides;
};

struct Study {
  std::string name, base_config, out_dir, source;
  std::vector<std::string> overrides;  // for every run
  std::vector<StudyRun> runs;
  std::vector<double> retention = kDefaultRetention;
  int64_t eval_batches = 0;
};

// Parses a study file; errors name the file and key.
Study load_study(const std::string& path);
// Runs (or resumes) the study; returns the path of report.md.
std::string run_study(const Study& study, dist::Communicator& comm);

}  // namespace kvroute::eval
