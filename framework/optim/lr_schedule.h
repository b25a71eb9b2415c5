#pragma once
// Learning-rate schedules: a pure function lr(step) of the 0-based step index, so a
// resumed run continues the curve exactly.
//
// S = total steps, W = optim.warmup_steps, lr = optim.lr, lr_min = optim.min_lr.
//   warmup  (s < W):  lr (s + 1) / W           linear ramp, reaches lr at s = W - 1
//   cosine:           lr_min + (lr - lr_min) (1 + cos(pi p)) / 2,
//                     p = (s - W) / (S - 1 - W) clamped to [0, 1]: lr at s = W,
//                     lr_min at the last step s = S - 1
//   wsd:              D = round(decay_fraction S) decay steps starting at
//                     s0 = max(W, S - D): lr before s0, then linear
//                     lr + (lr_min - lr) (s - s0 + 1) / (S - s0), lr_min at s = S - 1
//   constant:         lr
// Steps past the end keep lr_min (cosine, wsd).

#include <cstdint>

#include "framework/config/config.h"

namespace moe {

class LrSchedule {
 public:
  LrSchedule(const OptimConfig& config, int64_t total_steps);
  float lr(int64_t step) const;

 private:
  double peak_, min_;
  int64_t warmup_, total_;
  ScheduleKind kind_;
  int64_t decay_start_;  // wsd: first step of the linear decay
};

}  // namespace moe
