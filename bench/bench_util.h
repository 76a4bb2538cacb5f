// Timing helpers for the benchmarks: warm up, repeat, report the median.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <utility>
#include <vector>

#include "core/stats.h"

namespace kvroute::bench {

// Median wall time of `fn` in milliseconds over `reps` runs after `warmup` runs.
inline double median_ms(const std::function<void()>& fn, int reps, int warmup = 2) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> times;
  for (int i = 0; i < reps; ++i) {
    auto start = std::chrono::steady_clock::now();
    fn();
    times.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  return median(times);
}

// Medians of two functions timed alternately (a, b, a, b, ...), so that clock-frequency drift and
// noise from other processes hit both alike: the right way to compare two implementations.
inline std::pair<double, double> median_ms_interleaved(const std::function<void()>& a, const std::function<void()>& b,
                                                       int reps, int warmup = 2) {
  for (int i = 0; i < warmup; ++i) {
    a();
    b();
  }
  std::vector<double> ta, tb;
  for (int i = 0; i < reps; ++i) {
    for (auto [fn, times] : {std::pair{&a, &ta}, std::pair{&b, &tb}}) {
      auto start = std::chrono::steady_clock::now();
      (*fn)();
      times->push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
  }
  return {median(ta), median(tb)};
}

}  // namespace kvroute::bench
