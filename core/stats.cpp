#include "core/stats.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace kvroute {

double median(std::vector<double> x) {
  if (x.empty()) return 0.0;
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

Summary summarize(const std::vector<double>& x) {
  Summary s;
  s.n = static_cast<int>(x.size());
  if (x.empty()) return s;
  for (double v : x) s.mean += v;
  s.mean /= s.n;
  if (s.n < 2) return s;
  double ss = 0;
  for (double v : x) ss += (v - s.mean) * (v - s.mean);
  s.sd = std::sqrt(ss / (s.n - 1));
  return s;
}

double t_quantile_975(int df) {
  KV_CHECK(df >= 1, "t quantile: {} degrees of freedom", df);
  // Exact to the printed digits for small df; beyond 30 the Cornish-Fisher expansion in 1/df
  // (error < 1e-5 there).
  static const double table[] = {12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119, 2.3646243,
                                 2.3060041, 2.2621572, 2.2281389, 2.2009852, 2.1788128, 2.1603687, 2.1447867,
                                 2.1314495, 2.1199053, 2.1098156, 2.1009220, 2.0930241, 2.0859634, 2.0796138,
                                 2.0738731, 2.0686576, 2.0638986, 2.0595386, 2.0555294, 2.0518305, 2.0484071,
                                 2.0452296, 2.0422725};
  if (df <= 30) return table[df - 1];
  const double z = 1.959963985, n = df;
  const double z3 = z * z * z, z5 = z3 * z * z, z7 = z5 * z * z;
  return z + (z3 + z) / (4 * n) + (5 * z5 + 16 * z3 + 3 * z) / (96 * n * n) +
         (3 * z7 + 19 * z5 + 17 * z3 - 15 * z) / (384 * n * n * n);
}

Interval mean_ci95(const std::vector<double>& x) {
  const Summary s = summarize(x);
  Interval r;
  r.n = s.n;
  r.mean = s.mean;
  r.lo = r.hi = s.mean;
  if (s.n < 2) return r;
  const double half = t_quantile_975(s.n - 1) * s.sd / std::sqrt(static_cast<double>(s.n));
  r.lo = s.mean - half;
  r.hi = s.mean + half;
  r.defined = true;
  return r;
}

}  // namespace kvroute
