// Learning-rate schedules: linear warm-up then cosine to min_lr; constant (after warm-up);
// warmup-stable-decay (constant, then linear decay to min_lr over the final decay_fraction).
#pragma once

#include <cstdint>
#include <string>

namespace kvroute::train {

enum class ScheduleKind { Cosine, Constant, Wsd };
const char* schedule_name(ScheduleKind kind);

struct Schedule {
  ScheduleKind kind = ScheduleKind::Cosine;
  double lr = 6e-4, min_lr = 6e-5;
  int64_t total_steps = 1, warmup_steps = 0;
  double decay_fraction = 0.2;

  // The learning rate of step `step` (1-based: the first update is step 1).
  double at(int64_t step) const;
};

}  // namespace kvroute::train
