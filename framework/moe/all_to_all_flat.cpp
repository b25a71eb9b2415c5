// The flat exchange of AllToAllDispatcher (all_to_all_dispatcher.h): rows go from token
// order straight into the packed send buffer or, for this rank's own experts, into their
// place in the expert-major rows; on the way back the weighted sums read them where they
// lie (ops::SplitRows). Each row is copied once on each side of an exchange, and this
// rank's own rows never go through MPI.

#include <climits>

#include "framework/kernels/ops.h"
#include "framework/moe/all_to_all_dispatcher.h"

namespace moe {

using detail::elements;

namespace {

// Blocks of rows as blocks of elements, rows of `cols` elements.
std::vector<std::vector<CommBlock>> in_elements(const std::vector<std::vector<CommBlock>>& rows,
                                                int64_t cols) {
  std::vector<std::vector<CommBlock>> out(rows.size());
  for (size_t r = 0; r < rows.size(); ++r)
    for (const CommBlock& b : rows[r]) out[r].push_back({b.offset * cols, b.count * cols});
  return out;
}

// The rows of a non-empty block.
Tensor rows_of(Tensor t, const CommBlock& block) {
  return t.slice_rows(block.offset, block.count);
}

}  // namespace

void AllToAllDispatcher::make_flat_layout(const RoutingPlan& plan,
                                          std::span<const int64_t> expert_offsets,
                                          AllToAllState& state) const {
  const int ranks = ep_.size(), me = ep_.rank();
  const int64_t num_local = placement_.num_local(), first = placement_.first_local();
  state.near_begin = plan.expert_offsets[first];
  state.near_end = plan.expert_offsets[first + num_local];
  const int64_t near = state.near_end - state.near_begin;
  // far row of a slot outside [near_begin, near_end), and of the first slot of expert e
  // of another rank (e's rows may be none, its offset then near_begin)
  auto far_of = [&](int64_t slot) { return slot < state.near_begin ? slot : slot - near; };
  auto far_start = [&](int64_t e) {
    return e < first ? plan.expert_offsets[e] : plan.expert_offsets[e] - near;
  };

  state.far_blocks.assign(static_cast<size_t>(ranks), {});
  for (int d = 0; d < ranks; ++d) {
    if (d == me) continue;
    for (int64_t e = placement_.first(d); e < placement_.first(d + 1); ++e)
      state.far_blocks[d].push_back({far_start(e), plan.counts_after[e]});
  }
  // Local expert i's rows: source 0's first, then source 1's, ... (this rank's among them)
  std::vector<int64_t> next(expert_offsets.begin(), expert_offsets.end() - 1);  // [E_local]
  state.expert_blocks.assign(static_cast<size_t>(ranks), {});
  state.near_rows.clear();
  state.near_slot.clear();
  for (int s = 0; s < ranks; ++s)
    for (int64_t i = 0; i < num_local; ++i) {
      const CommBlock block{next[i], state.recv_counts[s * num_local + i]};
      next[i] += block.count;
      if (s != me) {
        state.expert_blocks[s].push_back(block);
        continue;
      }
      MOE_CHECK(block.count == plan.counts_after[first + i], "all-to-all dispatcher: ",
                block.count, " own rows of local expert ", i, ", the plan keeps ",
                plan.counts_after[first + i]);
      state.near_rows.push_back(block);
      state.near_slot.push_back(plan.expert_offsets[first + i]);
    }

  const std::vector<int32_t>& token_of_slot = plan.token_of_slot;
  state.token_of_far.assign(token_of_slot.begin(), token_of_slot.begin() + state.near_begin);
  state.token_of_far.insert(state.token_of_far.end(), token_of_slot.begin() + state.near_end,
                            token_of_slot.end());
  const int64_t s_recv = expert_offsets.back();
  MOE_CHECK(s_recv + static_cast<int64_t>(state.token_of_far.size()) <= INT32_MAX,
            "all-to-all dispatcher: more rows than int32 indexes");
  state.row_of_assignment.resize(static_cast<size_t>(plan.num_assignments()));
  for (int64_t a = 0; a < plan.num_assignments(); ++a) {
    const int64_t slot = plan.slot[a];
    int64_t row = -1;  // dropped
    if (slot >= state.near_begin && slot < state.near_end) {
      const int64_t i = plan.expert[a] - first;
      row = state.near_rows[i].offset + (slot - state.near_slot[i]);
    } else if (slot >= 0) {
      row = s_recv + far_of(slot);
    }
    state.row_of_assignment[a] = static_cast<int32_t>(row);
  }
}

void AllToAllDispatcher::send_to_experts(const RoutingPlan& plan, const AllToAllState& state,
                                         Tensor token_rows, std::span<const float> scale,
                                         Tensor expert_rows) {
  const int64_t c = token_rows.cols();
  const int64_t far = static_cast<int64_t>(state.token_of_far.size());
  std::vector<float> far_scale;  // [S_far] scale of the far rows, packed like them
  if (!scale.empty()) {
    far_scale.assign(scale.begin(), scale.begin() + state.near_begin);
    far_scale.insert(far_scale.end(), scale.begin() + state.near_end, scale.end());
  }
  const auto send_blocks = in_elements(state.far_blocks, c);
  const auto recv_blocks = in_elements(state.expert_blocks, c);
  if (wire_ == DType::kF32) {
    Tensor send = far_send_.view({far, c});  // (S_far, C)
    ops::permute_rows(token_rows, state.token_of_far, far_scale, send);
    ep_.all_to_all_blocks<float>(elements<float>(send), send_blocks,
                                 elements<float>(expert_rows), recv_blocks);
  } else {
    // packed and rounded in one pass; received rows widened block by block
    Tensor send = wire_send_.view({far, c}), recv = wire_recv_.view(expert_rows.shape);
    ops::permute_rows(token_rows, state.token_of_far, far_scale, send);
    ep_.all_to_all_blocks<bf16>(elements<bf16>(send), send_blocks, elements<bf16>(recv),
                                recv_blocks);
    for (const auto& blocks : state.expert_blocks)
      for (const CommBlock& b : blocks)
        if (b.count > 0) ops::convert(rows_of(recv, b), rows_of(expert_rows, b));
  }
  // This rank's own rows, straight from token order into place (a bf16 wire rounds them
  // like the rows that travel).
  for (size_t i = 0; i < state.near_rows.size(); ++i) {
    const CommBlock& b = state.near_rows[i];
    if (b.count == 0) continue;
    const auto tokens = std::span(plan.token_of_slot).subspan(state.near_slot[i], b.count);
    const auto scales = scale.empty() ? scale : scale.subspan(state.near_slot[i], b.count);
    if (wire_ == DType::kF32) {
      ops::permute_rows(token_rows, tokens, scales, rows_of(expert_rows, b));
      continue;
    }
    Tensor rounded = wire_send_.view({b.count, c});
    ops::permute_rows(token_rows, tokens, scales, rounded);
    ops::convert(rounded, rows_of(expert_rows, b));
  }
}

void AllToAllDispatcher::return_far_rows(const AllToAllState& state, Tensor expert_rows,
                                         Tensor far) {
  const int64_t c = expert_rows.cols();
  const auto send_blocks = in_elements(state.expert_blocks, c);
  const auto recv_blocks = in_elements(state.far_blocks, c);
  if (wire_ == DType::kF32) {
    ep_.all_to_all_blocks<float>(elements<float>(expert_rows), send_blocks,
                                 elements<float>(far), recv_blocks);
    return;
  }
  // Only the rows that travel are converted; the rows are bf16 values already (the
  // contract of combine and dispatch_backward), so the wire is exact.
  Tensor send = wire_send_.view(expert_rows.shape);
  for (const auto& blocks : state.expert_blocks)
    for (const CommBlock& b : blocks)
      if (b.count > 0) ops::convert(rows_of(expert_rows, b), rows_of(send, b));
  ep_.all_to_all_blocks<bf16>(elements<bf16>(send), send_blocks, elements<bf16>(far),
                              recv_blocks);
}

void AllToAllDispatcher::flat_combine_backward(const RoutingPlan& plan,
                                               const AllToAllState& state, Tensor expert_out,
                                               Tensor dy, Tensor d_expert_out, float* dweights) {
  const int64_t c = dy.cols(), assignments = plan.num_assignments();
  const Tensor far = state.returned->view_of({static_cast<int64_t>(state.token_of_far.size()), c});
  const SlotScales scales(plan);
  // dweights_{t,k} = <dy_t, row(t,k)>, 0 for dropped assignments
  ops::gather_dot(dy, scales.token_of_assignment, ops::SplitRows{expert_out, far},
                  state.row_of_assignment, {dweights, static_cast<size_t>(assignments)});
  // d_expert_out[row(t,k)] = w_{t,k} dy_t at the expert's rank
  send_to_experts(plan, state, dy, scales.slot_weight, d_expert_out);
}

}  // namespace moe
