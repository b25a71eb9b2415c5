#pragma once
// Dispatch and combine: moving token rows to the experts that process them and back
// (docs/architecture.md, "Dispatch and combine").
//
//   handle = dispatch(x, plan)         x (N, C) -> handle.rows() (S, C), expert-ordered
//   (experts run on handle.rows(), slots of local expert i in
//    [handle.expert_offsets()[i], handle.expert_offsets()[i+1]))
//   combine(handle, expert_out, y)     y_t = sum_k w_{t,k} expert_out[slot(t,k)]
//
// Backward, in reverse order:
//   combine_backward(handle, expert_out, dy, d_expert_out, dweights)
//       d_expert_out[slot(t,k)] = w_{t,k} dy_t,   dweights_{t,k} = <dy_t, expert_out[slot(t,k)]>
//       (dropped assignments: dweights 0)
//   dispatch_backward(handle, d_rows, dx)
//       dx_t = sum_k d_rows[slot(t,k)]
//
// All state between dispatch and combine (and their backward) travels in the
// immutable DispatchHandle; a dispatcher keeps none (at most it recycles row storage
// that no live handle owns), so one dispatcher serves every MoE layer of a model.
// Only these four functions may communicate: the local dispatcher never does, the
// all-to-all dispatchers exchange rows in the middle step.

#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "framework/core/error.h"
#include "framework/moe/routing_plan.h"
#include "framework/tensor/tensor.h"

namespace moe {

// Per-call data a dispatcher needs beyond the plan (peer counts of an all-to-all, ...).
// Dispatchers derive from it; the local dispatcher needs none.
struct DispatchState {
  virtual ~DispatchState() = default;
};

class DispatchHandle {
 public:
  DispatchHandle(std::shared_ptr<const RoutingPlan> plan, std::shared_ptr<Buffer> storage,
                 Tensor rows, std::vector<int64_t> expert_offsets, int64_t first_expert,
                 std::shared_ptr<const DispatchState> state = nullptr);

  // The routing plan of the tokens of this rank.
  const RoutingPlan& plan() const { return *plan_; }
  // (S_local, C) rows this rank's experts process, grouped by local expert.
  Tensor rows() const { return rows_; }
  // [num_local_experts + 1] row ranges of the local experts within rows().
  std::span<const int64_t> expert_offsets() const { return expert_offsets_; }
  int64_t first_expert() const { return first_expert_; }
  int64_t num_local_experts() const {
    return static_cast<int64_t>(expert_offsets_.size()) - 1;
  }
  // Rows of local expert i (0 <= i < num_local_experts()).
  int64_t local_count(int64_t i) const {
    return expert_offsets_[i + 1] - expert_offsets_[i];
  }
  const DispatchState* state() const { return state_.get(); }

 private:
  std::shared_ptr<const RoutingPlan> plan_;
  std::shared_ptr<Buffer> storage_;  // owns rows_
  Tensor rows_;
  std::vector<int64_t> expert_offsets_;
  int64_t first_expert_;
  std::shared_ptr<const DispatchState> state_;
};

class Dispatcher {
 public:
  virtual ~Dispatcher() = default;

  // x (N, C) rows of this rank's tokens; plan over the same N tokens.
  virtual DispatchHandle dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) = 0;
  // expert_out (S_local, C) in the layout of handle.rows(); y (N, C) overwritten.
  virtual void combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) = 0;
  // dy (N, C); d_expert_out (S_local, C) and dweights [N*K] overwritten.
  virtual void combine_backward(const DispatchHandle& handle, Tensor expert_out, Tensor dy,
                                Tensor d_expert_out, float* dweights) = 0;
  // d_rows (S_local, C) gradient of handle.rows(); dx (N, C) overwritten.
  virtual void dispatch_backward(const DispatchHandle& handle, Tensor d_rows,
                                 Tensor dx) = 0;

  // Ranks over which the experts' hidden units are split and whose partial outputs this
  // dispatcher sums (expert-tensor parallelism; 1 for the plain dispatchers).
  virtual int etp_size() const { return 1; }
  // Whether it treats the tp group's tokens as identical and sends each tp rank's slice.
  virtual bool slices_over_tp() const { return false; }

  // Where the experts should write their (S_local, C) rows of `which` for this handle so
  // that the dispatcher reads them where they lie (ShmDispatcher: its shared memory);
  // an empty tensor (the default): anywhere. Rows written elsewhere are still accepted.
  enum class ExpertRows { kOutput, kOutputGrad, kInputGrad };
  virtual Tensor expert_rows(const DispatchHandle& handle, ExpertRows which) const {
    (void)handle, (void)which;
    return {};
  }
};

// Row storage for handles. Not state between dispatch and combine (that is all in the
// handle): a cache of memory. Each MoE layer keeps its handle from forward to the next
// forward, so a fresh (S, C) buffer per dispatch (8 MiB in the main config) would be
// page-faulted and zeroed again every step; the pool settles at one buffer per MoE
// layer plus one.
class RowStoragePool {
 public:
  // Buffers of `dtype`.
  explicit RowStoragePool(DType dtype = DType::kF32) : dtype_(dtype) {}
  // A buffer on `device` (that of the rows dispatched) no live handle owns, else a new one.
  std::shared_ptr<Buffer> acquire(Device device = Device::kCpu);

 private:
  DType dtype_;
  std::vector<std::shared_ptr<Buffer>> pool_;
};

// The combine backward of one rank's tokens, given the expert outputs in the rows of
// the plan's slots: slot_out (S, C) with S = plan.num_slots(); dy (N, C).
//   dweights_{t,k} = <dy_t, slot_out[slot(t,k)]>   (0 for dropped assignments)
//   d_slot_out[s] = w_s dy[token_of_slot[s]]      (S, C) overwritten
void combine_backward_slots(const RoutingPlan& plan, Tensor slot_out, Tensor dy,
                            Tensor d_slot_out, float* dweights);

// Helpers the dispatchers share. check_rows: an internal check that t is (rows, cols),
// naming the dispatcher and the argument; state_as: the handle's state as the
// dispatcher's own kind S (an internal error for a handle of another dispatcher);
// sum_of: the sum of counts; scaled: counts times factor (rows to floats).
void check_rows(std::string_view dispatcher, const char* what, Tensor t, int64_t rows,
                int64_t cols);
// The shapes combine and the backward calls take (the contract above): token rows
// (N, C) of the handle's plan, expert rows (S_local, C) of its rows(); C from the first
// argument.
void check_combine(std::string_view dispatcher, const DispatchHandle& handle,
                   Tensor expert_out, Tensor y);
void check_combine_backward(std::string_view dispatcher, const DispatchHandle& handle,
                            Tensor expert_out, Tensor dy, Tensor d_expert_out);
void check_dispatch_backward(std::string_view dispatcher, const DispatchHandle& handle,
                             Tensor d_rows, Tensor dx);
template <class S>
const S& state_as(const DispatchHandle& handle, std::string_view dispatcher) {
  const auto* state = dynamic_cast<const S*>(handle.state());
  MOE_CHECK(state != nullptr, dispatcher, ": handle from another dispatcher");
  return *state;
}
int64_t sum_of(std::span<const int64_t> counts);
// What a combine_backward that sends w dy to the experts needs of the plan: the token of
// each assignment [N*K] and the weight of each slot [S].
struct SlotScales {
  std::vector<int32_t> token_of_assignment;
  std::vector<float> slot_weight;
  explicit SlotScales(const RoutingPlan& plan);
};
std::vector<int64_t> scaled(std::span<const int64_t> counts, int64_t factor);

// Moves row blocks between the source-major layout of an exchange, [source][local
// expert], and the expert-major layout the experts run on, [local expert][source]
// (ops::transpose_blocks). counts [ranks * num_local]: rows of block (s, i) at
// s * num_local + i; src and dst hold the sum of counts rows each and do not overlap.
void regroup_rows(Tensor src, Tensor dst, std::span<const int64_t> counts, int ranks,
                  int64_t num_local, bool to_expert_major);

// Every expert on this rank, no communication: the oracle the others are tested
// against.
class LocalDispatcher final : public Dispatcher {
 public:
  DispatchHandle dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) override;
  void combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) override;
  void combine_backward(const DispatchHandle& handle, Tensor expert_out, Tensor dy,
                        Tensor d_expert_out, float* dweights) override;
  void dispatch_backward(const DispatchHandle& handle, Tensor d_rows, Tensor dx) override;

 private:
  RowStoragePool storage_;
};

}  // namespace moe
