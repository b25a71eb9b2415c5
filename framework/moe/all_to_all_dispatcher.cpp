#include "framework/moe/all_to_all_dispatcher.h"

#include <algorithm>

#include "framework/kernels/ops.h"

namespace moe {

using detail::elements;

namespace {

constexpr std::string_view kName = "all-to-all dispatcher";

// The row plan in floats: rows of `cols` floats.
TwoLevelPlan scaled(TwoLevelPlan plan, int64_t cols) {
  for (auto* counts : {&plan.send, &plan.recv, &plan.staged})
    for (int64_t& c : *counts) c *= cols;
  return plan;
}

// The two-level plan was made for the rows of dispatch; every later exchange has the
// same width.
void check_plan_width(const AllToAllState& state, int64_t cols) {
  for (size_t d = 0; d < state.send_rows.size(); ++d)
    MOE_CHECK(state.row_plan.send[d] == state.send_rows[d] * cols,
              "all-to-all dispatcher: rows of ", cols, " columns, dispatched with another width");
}

}  // namespace

AllToAllDispatcher::AllToAllDispatcher(Communicator& ep, ExpertPlacement placement,
                                       std::vector<int> token_ranks,
                                       TwoLevelAllToAll* two_level, DType wire)
    : ep_(ep),
      placement_(placement),
      token_ranks_(std::move(token_ranks)),
      two_level_(two_level),
      wire_(wire),
      returned_(two_level == nullptr ? wire : DType::kF32) {
  MOE_CHECK(wire == DType::kF32 || wire == DType::kBF16, "all-to-all dispatcher: rows in ",
            dtype_name(wire));
  MOE_CHECK(token_ranks_.empty() || static_cast<int>(token_ranks_.size()) == ep.size(),
            "all-to-all dispatcher: ", token_ranks_.size(), " token ranks for ", ep.size(),
            " ep ranks");
  MOE_CHECK(placement.ep_size == ep.size() && placement.ep_rank == ep.rank(),
            "all-to-all dispatcher: placement for ep rank ", placement.ep_rank, " of ",
            placement.ep_size, " on ep rank ", ep.rank(), " of ", ep.size());
  MOE_CHECK(two_level == nullptr || &two_level->group() == &ep,
            "all-to-all dispatcher: the two-level exchange spans another group than ep");
}

DispatchHandle AllToAllDispatcher::dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) {
  const int64_t c = x.cols();
  const int ranks = ep_.size();
  const int64_t num_local = placement_.num_local();
  check_rows(kName, "dispatch input", x, plan->num_tokens, c);
  MOE_CHECK(plan->num_experts == placement_.num_experts, "all-to-all dispatcher: plan over ",
            plan->num_experts, " experts, placement over ", placement_.num_experts);

  auto state = std::make_shared<AllToAllState>();
  // counts: the kept rows of each expert go to its owner
  std::vector<int64_t> send_counts(static_cast<size_t>(placement_.num_experts));  // [E]
  state->send_rows.assign(static_cast<size_t>(ranks), 0);
  for (int d = 0; d < ranks; ++d) {
    for (int64_t e = placement_.first(d); e < placement_.first(d + 1); ++e) {
      send_counts[e] = plan->counts_after[e];
      state->send_rows[d] += plan->counts_after[e];
    }
  }
  state->recv_counts = receive_counts(*plan, send_counts, *state, c);
  state->recv_rows.assign(static_cast<size_t>(ranks), 0);
  std::vector<int64_t> expert_offsets(static_cast<size_t>(num_local + 1), 0);
  for (int s = 0; s < ranks; ++s)
    for (int64_t i = 0; i < num_local; ++i) {
      state->recv_rows[s] += state->recv_counts[s * num_local + i];
      expert_offsets[i + 1] += state->recv_counts[s * num_local + i];
    }
  for (int64_t i = 0; i < num_local; ++i) expert_offsets[i + 1] += expert_offsets[i];

  std::shared_ptr<Buffer> storage = storage_.acquire();
  Tensor rows = storage->view({expert_offsets.back(), c});  // (S_recv, C)
  state->returned = returned_.acquire();
  if (two_level_ == nullptr) {
    make_flat_layout(*plan, expert_offsets, *state);
    send_to_experts(*plan, *state, x, {}, rows);
    state->returned->resize(static_cast<int64_t>(state->token_of_far.size()) * c);
  } else {
    // permute into slot order, exchange into the expert-major rows
    const int64_t s_local = plan->num_slots();
    Tensor slot_rows = scratch_a_.view({s_local, c});
    ops::permute_rows(x, plan->token_of_slot, {}, slot_rows);
    to_experts(*state, slot_rows, rows);
    state->returned->resize(s_local * c);
  }
  return DispatchHandle(std::move(plan), std::move(storage), rows, std::move(expert_offsets),
                        placement_.first_local(), std::move(state));
}

std::vector<int64_t> AllToAllDispatcher::receive_counts(const RoutingPlan& plan,
                                                        const std::vector<int64_t>& send_counts,
                                                        AllToAllState& state, int64_t cols) {
  const int ranks = ep_.size();
  const int64_t e = placement_.num_experts, num_local = placement_.num_local();
  const int64_t first = placement_.first_local();
  std::vector<int64_t> recv(static_cast<size_t>(ranks * num_local), 0);  // [ep, E_local]
  const std::vector<int64_t>& group = plan.group_counts_after;  // [R_tokens, E]
  if (!token_ranks_.empty() && !group.empty()) {
    const int64_t mine = token_ranks_[ep_.rank()];
    MOE_CHECK(static_cast<int64_t>(group.size()) % e == 0 &&
                  std::equal(send_counts.begin(), send_counts.end(), group.begin() + mine * e),
              "all-to-all dispatcher: the plan's group counts disagree with its own counts");
    for (int s = 0; s < ranks; ++s)
      for (int64_t i = 0; i < num_local; ++i)
        recv[s * num_local + i] = group[token_ranks_[s] * e + first + i];
    if (two_level_ != nullptr) {
      // every rank's rows to every rank are known: the two-level plan needs no exchange
      auto rows = [&](int src, int dst) {
        int64_t total = 0;
        for (int64_t x = placement_.first(dst); x < placement_.first(dst + 1); ++x)
          total += group[token_ranks_[src] * e + x];
        return total;
      };
      state.row_plan = scaled(two_level_->plan_known(rows), cols);
    }
    return recv;
  }
  std::vector<int64_t> per_rank_experts(static_cast<size_t>(ranks));  // [R]
  for (int d = 0; d < ranks; ++d) per_rank_experts[d] = placement_.count(d);
  if (two_level_ != nullptr) {
    state.row_plan = scaled(two_level_->all_to_all_counts(send_counts, per_rank_experts, recv),
                            cols);
    return recv;
  }
  const std::vector<int64_t> from_each(static_cast<size_t>(ranks), num_local);
  ep_.all_to_all_v<int64_t>(send_counts, per_rank_experts, recv, from_each);
  return recv;
}

void AllToAllDispatcher::exchange_two_level(const AllToAllState& state, Tensor src, Tensor dst,
                                            bool reverse) {
  check_plan_width(state, src.cols());
  auto exchange = [&](auto send, auto recv) {
    if (reverse)
      two_level_->all_to_all_v_reverse(state.row_plan, send, recv);
    else
      two_level_->all_to_all_v(state.row_plan, send, recv);
  };
  if (wire_ == DType::kF32) {
    exchange(std::span<const float>(elements<float>(src)), elements<float>(dst));
    return;
  }
  Tensor src16 = wire_send_.view(src.shape), dst16 = wire_recv_.view(dst.shape);
  ops::convert(src, src16);
  exchange(std::span<const bf16>(elements<bf16>(src16)), elements<bf16>(dst16));
  ops::convert(dst16, dst);
}

void AllToAllDispatcher::to_experts(const AllToAllState& state, Tensor slot_rows,
                                    Tensor expert_rows) {
  Tensor staged = scratch_b_.view(expert_rows.shape);  // (S_recv, C) source-major
  exchange_two_level(state, slot_rows, staged, /*reverse=*/false);
  regroup_rows(staged, expert_rows, state.recv_counts, ep_.size(), placement_.num_local(),
               /*to_expert_major=*/true);
}

void AllToAllDispatcher::to_sources(const AllToAllState& state, Tensor expert_rows,
                                    Tensor slot_rows) {
  Tensor staged = scratch_b_.view(expert_rows.shape);  // (S_recv, C) source-major
  regroup_rows(expert_rows, staged, state.recv_counts, ep_.size(), placement_.num_local(),
               /*to_expert_major=*/false);
  exchange_two_level(state, staged, slot_rows, /*reverse=*/true);
}

void AllToAllDispatcher::combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) {
  const RoutingPlan& plan = handle.plan();
  const AllToAllState& state = state_as<AllToAllState>(handle, kName);
  const int64_t c = expert_out.cols();
  check_combine(kName, handle, expert_out, y);
  if (two_level_ == nullptr) {
    const Tensor far = state.returned->view_of({static_cast<int64_t>(state.token_of_far.size()), c});
    return_far_rows(state, expert_out, far);
    // y_t = sum_k w_{t,k} row(t,k): this rank's rows where the experts wrote them
    ops::combine_rows(ops::SplitRows{expert_out, far}, state.row_of_assignment, plan.weight, y);
    return;
  }
  const Tensor returned(state.returned->data(), {plan.num_slots(), c});  // (S, C) slot order
  to_sources(state, expert_out, returned);
  // y_t = sum_k w_{t,k} returned[slot(t,k)], dropped slots skipped
  ops::combine_rows(returned, plan.slot, plan.weight, y);
}

void AllToAllDispatcher::combine_backward(const DispatchHandle& handle, Tensor expert_out,
                                          Tensor dy, Tensor d_expert_out, float* dweights) {
  const RoutingPlan& plan = handle.plan();
  const AllToAllState& state = state_as<AllToAllState>(handle, kName);
  const int64_t c = dy.cols();
  check_combine_backward(kName, handle, expert_out, dy, d_expert_out);
  if (two_level_ == nullptr) {
    flat_combine_backward(plan, state, expert_out, dy, d_expert_out, dweights);
    return;
  }
  Tensor d_slots = scratch_a_.view({plan.num_slots(), c});
  combine_backward_slots(plan, Tensor(state.returned->data(), d_slots.shape), dy, d_slots,
                         dweights);
  to_experts(state, d_slots, d_expert_out);
}

void AllToAllDispatcher::dispatch_backward(const DispatchHandle& handle, Tensor d_rows,
                                           Tensor dx) {
  const RoutingPlan& plan = handle.plan();
  const AllToAllState& state = state_as<AllToAllState>(handle, kName);
  const int64_t c = dx.cols();
  check_dispatch_backward(kName, handle, d_rows, dx);
  if (two_level_ == nullptr) {
    const int64_t far_rows = static_cast<int64_t>(state.token_of_far.size());
    const Tensor far = (wire_ == DType::kF32 ? scratch_a_ : wire_recv_).view({far_rows, c});
    return_far_rows(state, d_rows, far);
    // dx_t = sum_k row(t,k)
    ops::combine_rows(ops::SplitRows{d_rows, far}, state.row_of_assignment, {}, dx);
    return;
  }
  Tensor d_slots = scratch_a_.view({plan.num_slots(), c});
  to_sources(state, d_rows, d_slots);
  // dx_t = sum_k d_slots[slot(t,k)]
  ops::combine_rows(d_slots, plan.slot, {}, dx);
}

}  // namespace moe
