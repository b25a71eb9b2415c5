#pragma once
// AdamW (Loshchilov & Hutter) over every parameter of a ParamStore.
//
// Per parameter p with gradient g, at step t = 1, 2, ... (ops::adamw):
//   m = beta1 m + (1 - beta1) g              exp_avg
//   v = beta2 v + (1 - beta2) g^2            exp_avg_sq
//   mhat = m / (1 - beta1^t),  vhat = v / (1 - beta2^t)
//   p -= lr (mhat / (sqrt(vhat) + eps) + wd p)
// wd = optim.weight_decay where ParamSpec::weight_decay (matrices), else 0 (norms).
// The state (exp_avg, exp_avg_sq, step count) has the local shape of each parameter
// and is exposed for checkpointing.

#include <cstdint>
#include <vector>

#include "framework/config/config.h"
#include "framework/tensor/param_store.h"

namespace moe {

class AdamW {
 public:
  // Allocates zeroed state for every parameter registered in `store` so far; the
  // store must not gain parameters afterwards (checked at each step).
  AdamW(ParamStore& store, const OptimConfig& config);

  // One update of every parameter from its accumulated gradient, with learning rate
  // `lr` (from the schedule). Increments step_count() first.
  void step(float lr);

  // Completed steps; a resumed run sets it from the checkpoint.
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t step) { step_ = step; }

  // State of store.params()[i], shaped like its local block.
  size_t num_states() const { return exp_avg_.size(); }
  Tensor exp_avg(size_t i);
  Tensor exp_avg_sq(size_t i);

 private:
  ParamStore& store_;
  float beta1_, beta2_, eps_, weight_decay_;
  int64_t step_ = 0;
  std::vector<Buffer> exp_avg_;     // m, per parameter
  std::vector<Buffer> exp_avg_sq_;  // v, per parameter
};

}  // namespace moe
