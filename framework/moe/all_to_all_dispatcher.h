#pragma once
// AllToAllDispatcher: expert parallelism with an all-to-all-v over the ep group, flat
// (one MPI all-to-all-v) or two-level (framework/parallel/two_level_all_to_all.h:
// inside each node, then across nodes; moe.dispatcher = two_level). Both deliver the
// same rows in the same order, so the choice changes traffic, never results.
//
// Each rank routes its own N tokens over all E experts (plan slots are expert-major,
// so the rows for ep rank d, the owner of experts [first(d), first(d) + count(d)), are
// one contiguous range of slots). dispatch:
//
//   1. counts      how many rows of each local expert every source sends [ep, E_local]:
//                  read from plan.group_counts_after when the MoE layer filled it (it
//                  all-gathers the routing counts anyway), else one small all_to_all_v
//                  (two-level: over the same two steps as the rows, so every rank also
//                  learns the rows it forwards; with the group counts every rank knows
//                  them already: TwoLevelPlan)
//   2. flat:       the rows for other ranks are gathered from token order straight into
//                  one packed send buffer (slot order less this rank's own experts; with
//                  a bf16 wire converted in the same pass), this rank's own rows straight
//                  from token order into their place in the expert-major rows (S_recv, C),
//                  and the exchange (all_to_all_blocks, one message per (rank, expert)
//                  block) receives every other source's rows into their place too: local
//                  expert i gets the rows of source 0, then source 1, ... (the global
//                  token order, so expert rows match the single-process layout row for
//                  row). Each row is copied once before it travels, and a rank's own rows
//                  do not travel at all.
//      two-level:  permute x (N, C) into slot order (S, C), all_to_all_v of the rows into
//                  source-major order, then a regroup into the expert-major rows.
//
// combine runs the exchange backwards and then the weighted sum. Flat: the expert output
// rows of other sources are sent from where they lie into the handle's `returned` rows
// (packed like the send buffer, in the wire dtype, kept for combine_backward), and the
// weighted sum y_t = sum_k w_{t,k} row(t,k) reads this rank's own rows where the experts
// wrote them and the others where they arrived (ops::SplitRows; bf16 rows are widened
// inside the sum), so no row is copied on the receiving side either. The sums run in the
// order of the single-process layer (k = 0, 1, ... per token), so results do not depend
// on ep. The backward passes mirror these: combine_backward packs w dy like dispatch packs
// x, dispatch_backward sums like combine. Dropped assignments never travel: capacity mode
// exchanges only kept rows, so capacity and dropless differ only in the counts. Every
// exchange counts its bytes in the communicator's stats.
//
// Wire dtype (moe.a2a_dtype): with bf16 every row exchange carries bf16 (half the
// bytes). The rows a combine and a dispatch_backward send (expert outputs, expert input
// gradients) must already be bf16 values, so that the wire changes nothing: the MoE layer
// rounds them on every layout (framework/moe/moe_layer.h); the rows dispatch and
// combine_backward send are rounded by the wire, this rank's own rows included (so
// results do not depend on where an expert lives), where the experts round them anyway
// (mixed precision).
//
// Only the four Dispatcher functions communicate. State between them travels in the
// handle (AllToAllState); the dispatcher's scratch buffers are consumed within a call.

#include <memory>
#include <span>
#include <vector>

#include "framework/moe/dispatcher.h"
#include "framework/moe/placement.h"
#include "framework/parallel/communicator.h"
#include "framework/parallel/two_level_all_to_all.h"

namespace moe {

namespace detail {
// A tensor's elements as a span (the all-to-all calls take spans).
template <class T>
std::span<T> elements(Tensor t) {
  return {t.ptr<T>(), static_cast<size_t>(t.numel())};
}
}  // namespace detail

// What combine and the backward passes need to reverse one dispatch.
struct AllToAllState final : DispatchState {
  std::vector<int64_t> send_rows;   // [ep] rows this rank sent to each ep rank
  std::vector<int64_t> recv_rows;   // [ep] rows this rank received from each ep rank
  std::vector<int64_t> recv_counts; // [ep * E_local] rows of local expert i from source
                                    // s at s * E_local + i
  // Flat only, in rows. Slots [near_begin, near_end) are this rank's own experts' (they
  // stay here); the other slots, in slot order without that range, are the far rows
  // (the packed send buffer of dispatch, `returned` of combine). far_blocks[d]: the far
  // rows for ep rank d, one block per expert of d; expert_blocks[s]: where the rows of
  // source s lie in the expert-major rows, one block per local expert (both empty for
  // this rank); near_rows[i]: where this rank's own rows of local expert i lie in the
  // expert-major rows, the rows of its slots near_slot[i], near_slot[i] + 1, ...
  int64_t near_begin = 0, near_end = 0;
  std::vector<std::vector<CommBlock>> far_blocks, expert_blocks;
  std::vector<CommBlock> near_rows;
  std::vector<int64_t> near_slot;
  // [N*K] the row of each assignment in ops::SplitRows{expert-major rows (S_recv),
  // far rows}; -1 dropped
  std::vector<int32_t> row_of_assignment;
  std::vector<int32_t> token_of_far;  // [S_far] the token of each far row
  TwoLevelPlan row_plan;            // two-level only: the row exchange, in elements
  // The experts' outputs for this rank's slots, written by combine, read by
  // combine_backward (dweights need them where the tokens live): flat, the far rows
  // (S_far, C) in the wire dtype; two-level, every slot (S, C) in slot order.
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
  // two-level: slot-ordered rows (S, C) of this rank -> expert-major rows (S_recv, C) at
  // the owners, and back
  void to_experts(const AllToAllState& state, Tensor slot_rows, Tensor expert_rows);
  void to_sources(const AllToAllState& state, Tensor expert_rows, Tensor slot_rows);
  // flat (all_to_all_flat.cpp): scale_s token_rows[token_of_slot[s]] (scale empty: 1) into
  // the expert-major rows (S_recv, C) at the owners, each row copied once from token order
  void send_to_experts(const RoutingPlan& plan, const AllToAllState& state, Tensor token_rows,
                       std::span<const float> scale, Tensor expert_rows);
  // flat: the rows of other sources among expert_rows (S_recv, C) into far (S_far, C, the
  // wire dtype) at their sources; the rows of this rank stay where they are
  void return_far_rows(const AllToAllState& state, Tensor expert_rows, Tensor far);
  // flat: combine_backward (dweights from the rows where they lie, w dy sent like x)
  void flat_combine_backward(const RoutingPlan& plan, const AllToAllState& state,
                             Tensor expert_out, Tensor dy, Tensor d_expert_out, float* dweights);
  // flat: the far row layout of the plan (AllToAllState's flat fields)
  void make_flat_layout(const RoutingPlan& plan, std::span<const int64_t> expert_offsets,
                        AllToAllState& state) const;
  // two-level: the row exchange of the plan (reverse: back), in the wire dtype
  void exchange_two_level(const AllToAllState& state, Tensor src, Tensor dst, bool reverse);

  // recv_counts [ep * E_local] from the plan's group counts, or by an exchange; with
  // two-level also state.row_plan (rows of `cols` elements)
  std::vector<int64_t> receive_counts(const RoutingPlan& plan,
                                      const std::vector<int64_t>& send_counts,
                                      AllToAllState& state, int64_t cols);

  Communicator& ep_;
  ExpertPlacement placement_;
  std::vector<int> token_ranks_;  // [ep] token-group rank of each ep rank
  TwoLevelAllToAll* two_level_;   // null: flat
  DType wire_;
  RowStoragePool storage_;   // handle rows
  RowStoragePool returned_;  // AllToAllState::returned (flat: in the wire dtype)
  Buffer scratch_a_, scratch_b_;  // per-call staging, (max(S, S_recv), C)
  // bf16 wire: the rows as sent and as received, per call
  Buffer wire_send_{Device::kCpu, DType::kBF16}, wire_recv_{Device::kCpu, DType::kBF16};
  Buffer far_send_;  // flat, fp32 wire: the packed far rows of a send, (S_far, C)
};

}  // namespace moe
