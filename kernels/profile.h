// A per-op time profile of the training step (`kvroute bench train --profile`): while enabled,
// every op of ops.h adds its wall time to a total per (phase, op); an op called inside another is
// part of the outer one. Off by default: a disabled profile costs one relaxed atomic load per op.
// The phase is forward unless a PhaseScope says otherwise (autograd's backward pass, the forward ops
// that a checkpointed layer recomputes during it, the optimizer).
// A diagnostic, not an execution setting: the ops compute the same with it on or off.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace kvroute::ops::profile {

enum class Phase { Forward, Backward, Recompute, Optimizer };
const char* phase_name(Phase phase);

void enable(bool on);
bool enabled();

struct Entry {
  Phase phase;
  std::string op;
  double seconds = 0;
  int64_t calls = 0;
};
// The totals since the last take(), largest first; resets them.
std::vector<Entry> take();

// The phase of the ops this thread calls while it lives (nests; restores the previous one).
class PhaseScope {
 public:
  explicit PhaseScope(Phase phase);
  ~PhaseScope();
  PhaseScope(const PhaseScope&) = delete;
  PhaseScope& operator=(const PhaseScope&) = delete;

 private:
  Phase previous_;
};

// Times one op call (the outermost on this thread) when the profile is enabled.
class OpTimer {
 public:
  explicit OpTimer(const char* op);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  const char* op_ = nullptr;  // null: not timed
  int64_t start_ns_ = 0;
};

}  // namespace kvroute::ops::profile
