#include "framework/moe/all_to_all_dispatcher.h"

#include <algorithm>

#include "framework/kernels/ops.h"

namespace moe {

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
                                       TwoLevelAllToAll* two_level)
    : ep_(ep),
      placement_(placement),
      token_ranks_(std::move(token_ranks)),
      two_level_(two_level) {
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

  // permute into slot order, exchange, regroup by local expert
  const int64_t s_local = plan->num_slots();
  Tensor slot_rows = scratch_a_.view({s_local, c});
  ops::permute_rows(x, plan->token_of_slot, {}, slot_rows);
  std::shared_ptr<Buffer> storage = storage_.acquire();
  Tensor rows = storage->view({expert_offsets.back(), c});  // (S_recv, C)
  to_experts(*state, slot_rows.data, rows.data, c);
  state->returned = returned_.acquire();
  state->returned->resize(s_local * c);
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

void AllToAllDispatcher::to_experts(const AllToAllState& state, const float* slot_rows,
                                    float* expert_rows, int64_t cols) {
  const int ranks = ep_.size();
  const int64_t recv_total = sum_of(state.recv_rows);
  Tensor staged = scratch_b_.view({recv_total, cols});  // (S_recv, C) source-major
  const std::span<const float> send{slot_rows, static_cast<size_t>(sum_of(state.send_rows) * cols)};
  const std::span<float> recv{staged.data, static_cast<size_t>(recv_total * cols)};
  if (two_level_ != nullptr) {
    check_plan_width(state, cols);
    two_level_->all_to_all_v<float>(state.row_plan, send, recv);
  } else {
    ep_.all_to_all_v<float>(send, scaled(state.send_rows, cols), recv,
                            scaled(state.recv_rows, cols));
  }
  regroup_rows(staged, Tensor(expert_rows, staged.shape), state.recv_counts, ranks,
               placement_.num_local(), /*to_expert_major=*/true);
}

void AllToAllDispatcher::to_sources(const AllToAllState& state, const float* expert_rows,
                                    float* slot_rows, int64_t cols) {
  const int ranks = ep_.size();
  const int64_t recv_total = sum_of(state.recv_rows);
  Tensor staged = scratch_b_.view({recv_total, cols});  // (S_recv, C) source-major
  regroup_rows(Tensor(const_cast<float*>(expert_rows), staged.shape), staged,
               state.recv_counts, ranks, placement_.num_local(), /*to_expert_major=*/false);
  const std::span<const float> send{staged.data, static_cast<size_t>(recv_total * cols)};
  const std::span<float> recv{slot_rows, static_cast<size_t>(sum_of(state.send_rows) * cols)};
  if (two_level_ != nullptr) {
    check_plan_width(state, cols);
    two_level_->all_to_all_v_reverse<float>(state.row_plan, send, recv);
  } else {
    ep_.all_to_all_v<float>(send, scaled(state.recv_rows, cols), recv,
                            scaled(state.send_rows, cols));
  }
}

void AllToAllDispatcher::combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) {
  const RoutingPlan& plan = handle.plan();
  const AllToAllState& state = state_as<AllToAllState>(handle, kName);
  const int64_t c = expert_out.cols();
  check_combine(kName, handle, expert_out, y);
  float* returned = state.returned->data();  // (S, C) slot order
  to_sources(state, expert_out.data, returned, c);
  // y_t = sum_k w_{t,k} returned[slot(t,k)], dropped slots skipped
  ops::combine_rows(Tensor(returned, {plan.num_slots(), c}), plan.slot, plan.weight, y);
}

void AllToAllDispatcher::combine_backward(const DispatchHandle& handle, Tensor expert_out,
                                          Tensor dy, Tensor d_expert_out, float* dweights) {
  const RoutingPlan& plan = handle.plan();
  const AllToAllState& state = state_as<AllToAllState>(handle, kName);
  const int64_t c = dy.cols();
  check_combine_backward(kName, handle, expert_out, dy, d_expert_out);
  Tensor d_slots = scratch_a_.view({plan.num_slots(), c});
  combine_backward_slots(plan, Tensor(state.returned->data(), d_slots.shape), dy, d_slots,
                         dweights);
  to_experts(state, d_slots.data, d_expert_out.data, c);
}

void AllToAllDispatcher::dispatch_backward(const DispatchHandle& handle, Tensor d_rows,
                                           Tensor dx) {
  const RoutingPlan& plan = handle.plan();
  const AllToAllState& state = state_as<AllToAllState>(handle, kName);
  const int64_t c = dx.cols();
  check_dispatch_backward(kName, handle, d_rows, dx);
  Tensor d_slots = scratch_a_.view({plan.num_slots(), c});
  to_sources(state, d_rows.data, d_slots.data, c);
  // dx_t = sum_k d_slots[slot(t,k)]
  ops::combine_rows(d_slots, plan.slot, {}, dx);
}

}  // namespace moe
