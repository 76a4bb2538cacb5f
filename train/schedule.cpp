#include "train/schedule.h"

#include <algorithm>
#include <cmath>

namespace kvroute::train {

const char* schedule_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::Cosine: return "cosine";
    case ScheduleKind::Constant: return "constant";
    case ScheduleKind::Wsd: return "wsd";
  }
  return "?";
}

double Schedule::at(int64_t step) const {
  if (warmup_steps > 0 && step <= warmup_steps) return lr * static_cast<double>(step) / static_cast<double>(warmup_steps);
  if (kind == ScheduleKind::Constant) return lr;
  if (kind == ScheduleKind::Wsd) {
    const int64_t decay_steps = static_cast<int64_t>(std::llround(decay_fraction * static_cast<double>(total_steps)));
    const int64_t decay_start = total_steps - decay_steps;
    if (decay_steps <= 0 || step <= decay_start) return lr;
    const double progress = static_cast<double>(step - decay_start) / static_cast<double>(decay_steps);
    return lr + (min_lr - lr) * std::min(progress, 1.0);
  }
  // cosine from the end of warm-up (lr) to total_steps (min_lr)
  const int64_t span = std::max<int64_t>(total_steps - warmup_steps, 1);
  const double progress = std::clamp(static_cast<double>(step - warmup_steps) / static_cast<double>(span), 0.0, 1.0);
  return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

}  // namespace kvroute::train
