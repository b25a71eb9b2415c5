#include "framework/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "framework/core/error.h"

namespace moe {

LrSchedule::LrSchedule(const OptimConfig& config, int64_t total_steps)
    : peak_(config.lr),
      min_(config.min_lr),
      warmup_(config.warmup_steps),
      total_(total_steps),
      kind_(config.schedule) {
  MOE_CHECK(total_steps > 0 && warmup_ >= 0, "LrSchedule: ", total_steps, " steps, warmup ",
            warmup_);
  const auto decay_steps = static_cast<int64_t>(std::llround(config.decay_fraction * total_));
  decay_start_ = std::max(warmup_, total_ - decay_steps);
}

float LrSchedule::lr(int64_t step) const {
  if (step < warmup_) return static_cast<float>(peak_ * (step + 1) / warmup_);
  switch (kind_) {
    case ScheduleKind::kConstant:
      return static_cast<float>(peak_);
    case ScheduleKind::kCosine: {
      const int64_t span = total_ - 1 - warmup_;
      const double p =
          span > 0 ? std::clamp(static_cast<double>(step - warmup_) / span, 0.0, 1.0) : 1.0;
      const double cosine = 0.5 * (1.0 + std::cos(std::numbers::pi * p));  // 1 -> 0
      return static_cast<float>(min_ + (peak_ - min_) * cosine);
    }
    case ScheduleKind::kWsd: {
      if (step < decay_start_) return static_cast<float>(peak_);
      if (decay_start_ >= total_) return static_cast<float>(min_);  // no decay steps: past the end
      const double p = std::min(
          1.0, static_cast<double>(step - decay_start_ + 1) / (total_ - decay_start_));
      return static_cast<float>(peak_ + (min_ - peak_) * p);
    }
  }
  return static_cast<float>(peak_);
}

}  // namespace moe
