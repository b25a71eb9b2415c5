#pragma once
// LoadWindow: the row counts of a MoE layer's last steps, which the replica plan of
// sharded sparse experts reads instead of one step's (parallel.load_window = W;
// docs/parallelism.md). Every rank has the same gathered counts [R * E] of every step
// (RoutingPlan::group_counts_after), so every rank keeps the same window and derives the
// same plan with no exchange.
//
// The window of a step is this step's counts (the router output of this forward, which
// the rows must follow anyway) plus those of the W - 1 training steps before it (fewer
// at the start of a run: missing steps count zero). Evaluation forwards are not pushed.
//
// The past steps are a state buffer, checkpointed with the model so that a resume plans
// what the uninterrupted run planned: <prefix>.experts.load_history_w<W>_r<R>
// [(W - 1) * R * E], oldest step first, fp32 counts (exact below 2^24 rows). Its name
// carries the window and the rank count its layout depends on: a run with another W or
// R does not find it and starts an empty window.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "framework/moe/routing_plan.h"
#include "framework/tensor/param_store.h"

namespace moe {

class LoadWindow {
 public:
  // steps W >= 2; counts: R * E per step. Registers the history buffer in `store`.
  LoadWindow(ParamStore& store, const std::string& experts_prefix, int steps, int ranks,
             int64_t experts);

  // [R * E] the plan's counts plus the W - 1 steps before
  std::vector<int64_t> with(const RoutingPlan& now) const;
  // A training step's counts join the window; the oldest leaves.
  void push(const RoutingPlan& step);

 private:
  // [R * E] a plan's counts of every rank (its own when it is the only rank)
  std::span<const int64_t> counts(const RoutingPlan& plan) const;

  StateBuffer& history_;  // [(W - 1) * R * E] oldest step first
  int64_t size_;          // R * E
};

}  // namespace moe
