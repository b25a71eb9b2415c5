#pragma once
// AdamW (Loshchilov & Hutter) over every parameter of a ParamStore.
//
// Per parameter p with gradient g, at step t = 1, 2, ... (ops::adamw):
//   m = beta1 m + (1 - beta1) g              exp_avg
//   v = beta2 v + (1 - beta2) g^2            exp_avg_sq
//   mhat = m / (1 - beta1^t),  vhat = v / (1 - beta2^t)
//   p -= lr (mhat / (sqrt(vhat) + eps) + wd p)
// wd = optim.weight_decay where ParamSpec::weight_decay (matrices), else 0 (norms).
//
// The update is elementwise, so a rank may keep the state of, and update, a part of a
// parameter only: each parameter has a state range [begin, end) of its local block,
// flattened row-major (the whole block by default; a 1/n slice under the sharded
// optimizer, framework/parallel/grad_sync.h). The state and step count are exposed for
// checkpointing.

#include <cstdint>
#include <vector>

#include "framework/config/config.h"
#include "framework/tensor/param_store.h"

namespace moe {

// Elements [begin, end) of a parameter's local block, flattened row-major.
struct StateRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

class AdamW {
 public:
  // Allocates zeroed state for every parameter registered in `store` so far; the
  // store must not gain parameters afterwards (checked at each step).
  AdamW(ParamStore& store, const OptimConfig& config);

  // One update of every parameter's state range from its gradient, with learning rate
  // `lr` (from the schedule), the gradients first scaled by grad_scale (the global-norm
  // clip's coefficient; 1: none): one multi-tensor op over every parameter, one launch on
  // the GPU. Increments step_count() first.
  void step(float lr, float grad_scale = 1.0f);

  // Completed steps; a resumed run sets it from the checkpoint.
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t step) { step_ = step; }

  // State of store.params()[i]: shaped like its local block when its range is the
  // whole block, else 1-D over the range.
  size_t num_states() const { return exp_avg_.size(); }
  Tensor exp_avg(size_t i);
  Tensor exp_avg_sq(size_t i);
  const StateRange& state_range(size_t i) const { return ranges_.at(i); }
  // Replaces the state of store.params()[i] with `exp_avg` and `exp_avg_sq` over
  // `range` (the sharded optimizer slicing the state, or assembling it whole for a
  // checkpoint).
  void set_state(size_t i, StateRange range, Buffer exp_avg, Buffer exp_avg_sq);
  // Bytes of AdamW state this rank holds (the moments' buffers as allocated).
  int64_t state_bytes() const;

 private:
  ParamStore& store_;
  float beta1_, beta2_, eps_, weight_decay_;
  int64_t step_ = 0;
  std::vector<StateRange> ranges_;  // per parameter
  std::vector<Buffer> exp_avg_;     // m, per parameter, over its range
  std::vector<Buffer> exp_avg_sq_;  // v, per parameter, over its range

  Tensor state_view(const Buffer& b, size_t i) const;
};

}  // namespace moe
