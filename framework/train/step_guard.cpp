#include "framework/train/step_guard.h"

#include <cmath>
#include <cstdlib>
#include <limits>

#include "framework/kernels/ops.h"
#include "framework/train/stop_signal.h"

namespace moe {
namespace {

std::string what_is_not_finite(bool loss, bool grad) {
  if (loss && grad) return "the loss and the gradient norm are not finite";
  return loss ? "the loss is not finite" : "the gradient norm is not finite";
}

}  // namespace

StepGuard::StepGuard(const TrainConfig& train, Communicator& world)
    : world_(world),
      skip_mode_(train.on_nonfinite == NonfiniteAction::kSkip),
      max_skipped_(train.max_skipped_steps) {
  if (const char* hook = std::getenv("MOE_TEST_NONFINITE_STEP"); hook && *hook)
    test_nonfinite_step_ = std::atoll(hook);
}

StepVerdict StepGuard::judge(int64_t step, double local_loss, double grad_norm) {
  if (step == test_nonfinite_step_ && world_.rank() == world_.size() - 1)
    local_loss = std::numeric_limits<double>::quiet_NaN();
  // [loss not finite, gradient norm not finite, stop signal]
  int32_t flags[3] = {!std::isfinite(local_loss), !std::isfinite(grad_norm),
                      StopSignals::pending()};
  world_.all_reduce<int32_t>(flags, ReduceOp::kMax);
  StepVerdict verdict;
  verdict.stop_signal = flags[2];
  if (!flags[0] && !flags[1]) {
    skipped_in_a_row_ = 0;
    return verdict;
  }
  verdict.reason = "step " + std::to_string(step) + ": " + what_is_not_finite(flags[0], flags[1]);
  if (!skip_mode_) {
    verdict.action = StepVerdict::kStop;
    return verdict;
  }
  ++skipped_;
  if (++skipped_in_a_row_ >= max_skipped_) {
    verdict.action = StepVerdict::kStop;
    verdict.reason += ", the " + std::to_string(skipped_in_a_row_) +
                      "th step in a row (train.max_skipped_steps = " +
                      std::to_string(max_skipped_) + ")";
    return verdict;
  }
  verdict.action = StepVerdict::kSkip;
  return verdict;
}

bool StepGuard::weights_finite(const ParamStore& store) {
  int32_t bad = 0;
  // A NaN or infinity anywhere makes the sum of squares non-finite (summed in double, a
  // finite fp32 block cannot overflow it); the op runs where the values live.
  for (const Param& p : store.params()) {
    bad = !std::isfinite(ops::sum_squares(p.data()));
    if (bad) break;
  }
  world_.all_reduce<int32_t>({&bad, 1}, ReduceOp::kMax);
  return bad == 0;
}

}  // namespace moe
