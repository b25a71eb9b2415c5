#pragma once
// EtpDispatcher: expert-tensor parallelism (etp) around an expert-parallel dispatcher,
// and the hook that keeps the identical tokens of a tensor-parallel group from being
// sent once per tp rank (docs/parallelism.md, "Expert-tensor parallelism").
//
// The ranks of an etp group hold the same experts, each a 1/etp block of every
// expert's hidden units (experts.h), so every row must reach all of them; it still
// crosses the ep all-to-all once. With S_j the rows member j of the etp group receives
// from its ep group and S = sum_j S_j:
//
//   dispatch          inner.dispatch over the ep group (the ranks with this rank's
//                     etp coordinate): rows (S_j, C) for the experts of this ep rank;
//                     all-gather over etp: (S, C), regrouped expert-major (local
//                     expert i: member 0's rows of i, then member 1's, ...)
//   experts           this rank's partial outputs h_j W_down_j^T, (S, C)
//   combine           reduce-scatter over etp: this rank's rows summed over the group,
//                     (S_j, C); then inner.combine back over ep
//   combine_backward  inner.combine_backward: dy of this rank's rows, (S_j, C); then
//                     all-gather over etp, (S, C)
//   dispatch_backward reduce-scatter of the partial dx over etp, (S_j, C); then
//                     inner.dispatch_backward
//
// Per MoE layer and step a rank sends 4 (etp - 1) S_j C floats inside its etp group
// (plus the [E_local] row counts once per dispatch), and the ep all-to-alls carry every
// kept row once, as with etp = 1.
//
// tp slicing (a non-null tp group): the ranks of a tp group hold identical tokens
// (replicated activations) and take identical routing decisions. tp rank r dispatches
// only tokens [r N / tp, (r + 1) N / tp) of the plan (with the admission decisions of
// the whole plan), and combine, combine_backward (dweights) and dispatch_backward
// all-gather the slices over tp, so every tp rank ends with the whole (N, C) output,
// dweights [N*K] and dx, and every token crosses the ep all-to-all once. Where the tp
// ranks' rows differ (sequence parallelism) pass no tp group.
//
// State between the calls travels in the handle (EtpState); the handle's plan is the
// whole plan, its rows the gathered (S, C).

#include <memory>
#include <optional>
#include <vector>

#include "framework/moe/dispatcher.h"
#include "framework/parallel/communicator.h"

namespace moe {

struct EtpState final : DispatchState {
  std::optional<DispatchHandle> inner;  // the ep dispatch of this rank's rows
  std::vector<int64_t> member_counts;   // [etp * E_local] rows of local expert i that
                                        // member j received, at j * E_local + i
  std::vector<int64_t> member_rows;     // [etp] S_j
  std::vector<int64_t> slices;          // [tp + 1] token slices of the tp group; empty:
                                        // no slicing
  // (S_j, C) the expert outputs of this rank's rows summed over etp: written by
  // combine, read by combine_backward (the inner dispatcher's dweights need them).
  std::shared_ptr<Buffer> reduced;
};

class EtpDispatcher final : public Dispatcher {
 public:
  // inner: moves rows over this rank's ep group; etp: this rank's etp group; tp: null,
  // or the tp group whose ranks hold identical tokens. All must outlive the dispatcher.
  EtpDispatcher(Dispatcher& inner, Communicator& etp, Communicator* tp = nullptr);

  DispatchHandle dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) override;
  void combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) override;
  void combine_backward(const DispatchHandle& handle, Tensor expert_out, Tensor dy,
                        Tensor d_expert_out, float* dweights) override;
  void dispatch_backward(const DispatchHandle& handle, Tensor d_rows, Tensor dx) override;
  int etp_size() const override { return etp_.size(); }
  bool slices_over_tp() const override { return tp_ != nullptr && tp_->size() > 1; }

 private:
  // this rank's rows (S_j, C) -> every member's rows, expert-major (S, C)
  void gather_rows(const EtpState& state, const float* mine, float* expert_rows,
                   int64_t cols);
  // partial sums, expert-major (S, C) -> this rank's rows summed over etp (S_j, C)
  void reduce_rows(const EtpState& state, const float* expert_rows, float* mine,
                   int64_t cols);
  // data [N * per_token]: this rank's slice in place -> every tp rank's slice
  void gather_slices(const EtpState& state, float* data, int64_t per_token);

  Dispatcher& inner_;
  Communicator& etp_;
  Communicator* tp_;
  RowStoragePool storage_;   // handle rows
  RowStoragePool reduced_;   // EtpState::reduced
  Buffer scratch_a_;              // per-call staging, (S, C)
  Buffer mine_;                   // (S_j, C) gradients of this rank's rows
  Buffer slice_;                  // this rank's tp slice while it is gathered
};

// The plan of tokens [begin, end) of `plan`, keeping the admission decisions of the
// whole plan (its capacity and priority were those of the global batch). The slice's
// group counts are unknown (empty).
RoutingPlan slice_routing_plan(const RoutingPlan& plan, int64_t begin, int64_t end);

}  // namespace moe
