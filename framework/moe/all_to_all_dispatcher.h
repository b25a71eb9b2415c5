#pragma once
// AllToAllDispatcher: expert parallelism with an all-to-all-v over the ep group, flat
// (one MPI all-to-all-v) or two-level (framework/parallel/two_level_all_to_all.h:
// inside each node, then across nodes; moe.dispatcher = two_level). Both deliver the
// same rows in the same order, so the choice changes traffic, never results.
//
// Each rank routes its own N tokens over all E experts (plan slots are expert-major,
// so the rows for ep rank d, the owner of experts [first(d), first(d) + count(d)), are
// one contiguous block of the slot-ordered buffer). dispatch:
//
//   1. permute     x (N, C) -> slot order (S, C)               rows for rank 0 | 1 | ...
//   2. counts      how many rows of each local expert every source sends [ep, E_local]:
//                  read from plan.group_counts_after when the MoE layer filled it (it
//                  all-gathers the routing counts anyway), else one small all_to_all_v
//                  (two-level: over the same two steps as the rows, so every rank also
//                  learns the rows it forwards; with the group counts every rank knows
//                  them already: TwoLevelPlan)
//   3. exchange    flat: one message per (rank, expert) block (all_to_all_blocks), each
//                  received straight into its place in the expert-major rows (S_recv, C):
//                  local expert i gets the rows of source 0, then source 1, ... (the
//                  global token order, so expert rows match the single-process layout
//                  row for row). Two-level: all_to_all_v of the rows into source-major
//                  order, then a regroup into the expert-major rows.
//
// combine runs 3 backwards (flat: each (expert, source) block of the expert outputs
// sent from where it lies, received into the handle's `returned` rows in slot order)
// and then the local weighted sum; the backward passes mirror these. So the flat
// dispatcher's local copies are the permute (the gather a single process does too) on
// the sending side of dispatch and the weighted sum on the receiving side of combine;
// nothing is staged. Dropped assignments never travel: capacity mode exchanges only
// kept rows, so capacity and dropless differ only in the counts. Every exchange counts
// its bytes in the communicator's stats.
//
// Wire dtype (moe.a2a_dtype): with bf16 every row exchange carries bf16 (half the
// bytes): the sender converts its rows (one pass), the receiver converts them back to
// fp32 (one pass; this replaces the placement-free receive of fp32). The rows a combine
// and a dispatch_backward send (expert outputs, expert input gradients) must already be
// bf16 values, so that the wire changes nothing: the MoE layer rounds them on every
// layout (framework/moe/moe_layer.h); the rows dispatch sends are rounded by the wire
// where the experts round them anyway (mixed precision).
//
// Only the four Dispatcher functions communicate. State between them travels in the
// handle (AllToAllState); the dispatcher's scratch buffers are consumed within a call.

#include <memory>
#include <vector>

#include "framework/moe/dispatcher.h"
#include "framework/moe/placement.h"
#include "framework/parallel/communicator.h"
#include "framework/parallel/two_level_all_to_all.h"

namespace moe {

// What combine and the backward passes need to reverse one dispatch.
struct AllToAllState final : DispatchState {
  std::vector<int64_t> send_rows;   // [ep] rows this rank sent to each ep rank
  std::vector<int64_t> recv_rows;   // [ep] rows this rank received from each ep rank
  std::vector<int64_t> recv_counts; // [ep * E_local] rows of local expert i from source
                                    // s at s * E_local + i
  // Flat only, in rows: slot_blocks[d] the slot-ordered rows of this rank's tokens for
  // ep rank d, one block per expert of d; expert_blocks[s] where the rows of source s
  // lie in the expert-major rows, one block per local expert.
  std::vector<std::vector<CommBlock>> slot_blocks, expert_blocks;
  TwoLevelPlan row_plan;            // two-level only: the row exchange, in elements
  // (S, C) the experts' outputs for this rank's slots, in slot order: written by
  // combine, read by combine_backward (dweights need them where the tokens live).
  std::shared_ptr<Buffer> returned;
};

class AllToAllDispatcher final : public Dispatcher {
 public:
  // ep: the expert-parallel group; placement.ep_size == ep.size(),
  // placement.ep_rank == ep.rank(). token_ranks [ep]: the rank in the plans' token
  // group of each ep rank, when the ep group lies inside one token group (empty: always
  // exchange the counts). two_level (null: flat) routes every exchange over the nodes of
  // ep (its group() must be ep). wire: the dtype the rows travel in (fp32 or bf16). All
  // must outlive the dispatcher.
  AllToAllDispatcher(Communicator& ep, ExpertPlacement placement,
                     std::vector<int> token_ranks = {}, TwoLevelAllToAll* two_level = nullptr,
                     DType wire = DType::kF32);

  DispatchHandle dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) override;
  void combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) override;
  void combine_backward(const DispatchHandle& handle, Tensor expert_out, Tensor dy,
                        Tensor d_expert_out, float* dweights) override;
  void dispatch_backward(const DispatchHandle& handle, Tensor d_rows, Tensor dx) override;

 private:
  // slot-ordered rows (S, C) of this rank -> expert-major rows (S_recv, C) at the owners
  void to_experts(const AllToAllState& state, Tensor slot_rows, Tensor expert_rows);
  // expert-major rows (S_recv, C) -> slot-ordered rows (S, C) back at the token's rank
  void to_sources(const AllToAllState& state, Tensor expert_rows, Tensor slot_rows);
  // flat: the rows of src in blocks `from` into the blocks `to` of dst, in the wire dtype
  void exchange_blocks(Tensor src, const std::vector<std::vector<CommBlock>>& from, Tensor dst,
                       const std::vector<std::vector<CommBlock>>& to);
  // two-level: the row exchange of the plan (reverse: back), in the wire dtype
  void exchange_two_level(const AllToAllState& state, Tensor src, Tensor dst, bool reverse);

  // recv_counts [ep * E_local] from the plan's group counts, or by an exchange; with
  // two-level also state.row_plan (rows of `cols` elements)
  std::vector<int64_t> receive_counts(const RoutingPlan& plan,
                                      const std::vector<int64_t>& send_counts,
                                      AllToAllState& state, int64_t cols);
  // state.slot_blocks and state.expert_blocks of the flat exchange
  void make_blocks(const RoutingPlan& plan, std::span<const int64_t> expert_offsets,
                   AllToAllState& state) const;

  Communicator& ep_;
  ExpertPlacement placement_;
  std::vector<int> token_ranks_;  // [ep] token-group rank of each ep rank
  TwoLevelAllToAll* two_level_;   // null: flat
  DType wire_;
  RowStoragePool storage_;   // handle rows
  RowStoragePool returned_;  // AllToAllState::returned
  Buffer scratch_a_, scratch_b_;  // per-call staging, (max(S, S_recv), C)
  // bf16 wire: the rows as sent and as received, per call
  Buffer wire_send_{Device::kCpu, DType::kBF16}, wire_recv_{Device::kCpu, DType::kBF16};
};

}  // namespace moe
