#pragma once
// StepGuard: the per-step health check of the training loop. After backward and the
// global gradient norm, every rank contributes three flags to one all-reduce (max) over
// the world: its loss is not finite, the gradient norm is not finite, it received a stop
// signal (stop_signal.h). Twelve bytes per step and no pass over the data, and every
// rank takes the same decision at the same step:
//
//   update  the step is healthy: apply the optimizer step
//   skip    train.on_nonfinite = skip: leave weights and optimizer state as they are and
//           count the step; after train.max_skipped_steps skipped steps in a row, stop
//   stop    train.on_nonfinite = stop (or too many skips): the trainer ends the run with
//           exit status 3 and writes nothing more (no checkpoint, no model.h5)
//
// and whether to stop after this step because a rank got SIGTERM or SIGINT.
//
// check_weights() is the last line before any file is written from the weights: a
// checkpoint is never written from non-finite values.
//
// Test hook: with MOE_TEST_NONFINITE_STEP=S the last rank of the world reports a NaN
// loss at step S (1-based), as a diverging shard of the batch would.

#include <cstdint>
#include <string>

#include "framework/config/config.h"
#include "framework/parallel/communicator.h"
#include "framework/tensor/param_store.h"

namespace moe {

struct StepVerdict {
  enum Action { kUpdate, kSkip, kStop } action = kUpdate;
  std::string reason;   // kSkip, kStop: "step 13: the loss is not finite"
  int stop_signal = 0;  // SIGTERM or SIGINT reached some rank: stop after this step
};

class StepGuard {
 public:
  StepGuard(const TrainConfig& train, Communicator& world);

  // Collective over the world, once per step after the gradient norm. `step` is 1-based;
  // `local_loss` is this rank's loss before any reduction over ranks.
  StepVerdict judge(int64_t step, double local_loss, double grad_norm);
  // Steps skipped by this process so far (train.on_nonfinite = skip).
  int64_t skipped() const { return skipped_; }

  // Collective over the world: true when every rank's parameters are finite.
  bool weights_finite(const ParamStore& store);

 private:
  Communicator& world_;
  bool skip_mode_;
  int max_skipped_;
  int skipped_in_a_row_ = 0;
  int64_t skipped_ = 0;
  int64_t test_nonfinite_step_ = -1;  // the test hook's step, or -1
};

}  // namespace moe
