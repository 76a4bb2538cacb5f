#include "kernels/profile.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <utility>

namespace kvroute::ops::profile {

namespace {

std::atomic<bool> g_enabled{false};
thread_local Phase t_phase = Phase::Forward;
thread_local int t_depth = 0;  // ops in progress on this thread

struct Totals {
  std::mutex mutex;
  std::map<std::pair<Phase, std::string>, Entry> by_op;
};
Totals& totals() {
  static Totals t;
  return t;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

const char* phase_name(Phase phase) {
  switch (phase) {
    case Phase::Forward: return "forward";
    case Phase::Backward: return "backward";
    case Phase::Recompute: return "recompute";
    case Phase::Optimizer: return "optimizer";
  }
  return "?";
}

void enable(bool on) { g_enabled.store(on, std::memory_order_relaxed); }
bool enabled() { return g_enabled.load(std::memory_order_relaxed); }

std::vector<Entry> take() {
  Totals& t = totals();
  std::lock_guard<std::mutex> lock(t.mutex);
  std::vector<Entry> out;
  for (auto& [key, e] : t.by_op) out.push_back(e);
  t.by_op.clear();
  std::sort(out.begin(), out.end(), [](const Entry& a, const Entry& b) { return a.seconds > b.seconds; });
  return out;
}

PhaseScope::PhaseScope(Phase phase) : previous_(t_phase) { t_phase = phase; }
PhaseScope::~PhaseScope() { t_phase = previous_; }

OpTimer::OpTimer(const char* op) {
  if (t_depth++ > 0 || !enabled()) return;
  op_ = op;
  start_ns_ = now_ns();
}

OpTimer::~OpTimer() {
  --t_depth;
  if (op_ == nullptr) return;
  const double seconds = static_cast<double>(now_ns() - start_ns_) * 1e-9;
  Totals& t = totals();
  std::lock_guard<std::mutex> lock(t.mutex);
  Entry& e = t.by_op[{t_phase, op_}];
  e.phase = t_phase;
  e.op = op_;
  e.seconds += seconds;
  ++e.calls;
}

}  // namespace kvroute::ops::profile
