// Small statistics the project shares: the median of timings (benchmarks), and for studies with
// replicate seeds the mean, sample standard deviation and the Student-t 95% interval of a mean
// (of paired differences, in the study report).
#pragma once

#include <vector>

namespace kvroute {

// The median: the middle value after sorting (for an even count the upper of the two middle ones,
// so it is always a measured value); 0 for an empty list.
double median(std::vector<double> x);

struct Summary {
  int n = 0;
  double mean = 0, sd = 0;  // sd: sample standard deviation (n - 1); 0 when n < 2
};
Summary summarize(const std::vector<double>& x);

// The 0.975 quantile of Student's t with `df` >= 1 degrees of freedom (two-sided 95%).
double t_quantile_975(int df);

// mean +- t * sd / sqrt(n); `defined` is false when n < 2 (one replicate has no interval).
struct Interval {
  int n = 0;
  double mean = 0, lo = 0, hi = 0;
  bool defined = false;
};
Interval mean_ci95(const std::vector<double>& x);

}  // namespace kvroute
