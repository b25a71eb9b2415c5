#include "framework/moe/fssdp_dispatcher.h"

#include "framework/kernels/ops.h"

namespace moe {

namespace {

constexpr std::string_view kName = "fssdp dispatcher";

}  // namespace

FssdpDispatcher::FssdpDispatcher(Communicator& group, ExpertPlacement placement, int slots,
                                 std::vector<int> node)
    : group_(group), placement_(placement), slots_(slots), node_(std::move(node)) {
  MOE_CHECK(node_.empty() || static_cast<int>(node_.size()) == group.size(),
            "fssdp dispatcher: nodes of ", node_.size(), " ranks for a group of ", group.size());
  MOE_CHECK(placement.ep_size == group.size() && placement.ep_rank == group.rank(),
            "fssdp dispatcher: placement for rank ", placement.ep_rank, " of ",
            placement.ep_size, " on rank ", group.rank(), " of ", group.size());
}

std::vector<int64_t> FssdpDispatcher::gathered_counts(const RoutingPlan& plan) {
  const size_t size = static_cast<size_t>(group_.size() * placement_.num_experts);
  if (plan.group_counts_after.size() == size) return plan.group_counts_after;
  std::vector<int64_t> all(size);
  group_.all_gather<int64_t>(plan.counts_after, all);
  return all;
}

DispatchHandle FssdpDispatcher::dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) {
  const int64_t c = x.cols(), experts = placement_.num_experts;
  const int ranks = group_.size(), me = group_.rank();
  check_rows(kName, "dispatch input", x, plan->num_tokens, c);
  MOE_CHECK(plan->num_experts == experts, "fssdp dispatcher: plan over ", plan->num_experts,
            " experts, placement over ", experts);
  MOE_CHECK(plan->owner_bounds.empty() ||
                plan->owner_bounds.size() == static_cast<size_t>(ranks) + 1,
            "fssdp dispatcher: owners of ", plan->owner_bounds.size(), " bounds over ", ranks,
            " ranks");
  const std::vector<int64_t> counts = gathered_counts(*plan);  // [R * E]
  ExpertPlacement owners = placement_;  // the layer's owners: as built, or re-planned
  if (!plan->owner_bounds.empty()) owners.bounds = plan->owner_bounds;
  auto state = std::make_shared<FssdpState>();
  // the replicas follow the load window when there is one; the rows follow this step
  MOE_CHECK(plan->window_counts.empty() || plan->window_counts.size() == counts.size(),
            "fssdp dispatcher: a load window of ", plan->window_counts.size(), " counts");
  Holders holders =
      plan_holders(plan->window_counts.empty() ? counts : plan->window_counts, owners, slots_,
                   node_);
  // Send order: per destination d, its experts in its compute order, this rank's rows of
  // each (the chunk split_rows gives d, after the chunks of the holders before d).
  state->send_rows.assign(static_cast<size_t>(ranks), 0);
  for (int d = 0; d < ranks; ++d)
    for (int64_t e : computed_experts(holders, owners, d)) {
      const int64_t n = counts[me * experts + e];
      int64_t start = plan->expert_offsets[e];
      for (int h : holders[e]) {
        if (h == d) break;
        start += split_rows(holders[e], me, n, h, node_);
      }
      const int64_t rows = split_rows(holders[e], me, n, d, node_);
      for (int64_t j = 0; j < rows; ++j) state->send_slot.push_back(static_cast<int32_t>(start + j));
      state->send_rows[d] += rows;
    }
  MOE_CHECK(static_cast<int64_t>(state->send_slot.size()) == plan->num_slots(),
            "fssdp dispatcher: ", state->send_slot.size(), " rows sent of ", plan->num_slots());
  state->slot_pos.resize(state->send_slot.size());
  for (size_t i = 0; i < state->send_slot.size(); ++i)
    state->slot_pos[state->send_slot[i]] = static_cast<int32_t>(i);
  // Receive side: every source's chunk of every expert this rank computes.
  const std::vector<int64_t> mine = computed_experts(holders, owners, me);
  state->num_local = static_cast<int64_t>(mine.size());
  state->recv_counts.assign(static_cast<size_t>(ranks) * mine.size(), 0);
  state->recv_rows.assign(static_cast<size_t>(ranks), 0);
  std::vector<int64_t> expert_offsets(mine.size() + 1, 0);
  for (int s = 0; s < ranks; ++s)
    for (size_t i = 0; i < mine.size(); ++i) {
      const int64_t rows =
          split_rows(holders[mine[i]], s, counts[s * experts + mine[i]], me, node_);
      state->recv_counts[s * mine.size() + i] = rows;
      state->recv_rows[s] += rows;
      expert_offsets[i + 1] += rows;
    }
  for (size_t i = 0; i < mine.size(); ++i) expert_offsets[i + 1] += expert_offsets[i];
  state->items.owner.resize(static_cast<size_t>(experts));
  for (int64_t e = 0; e < experts; ++e) state->items.owner[e] = owners.owner(e);
  state->items.holders = std::move(holders);

  std::vector<int32_t> send_token(state->send_slot.size());
  for (size_t i = 0; i < send_token.size(); ++i)
    send_token[i] = plan->token_of_slot[state->send_slot[i]];
  Tensor send = scratch_a_.view({plan->num_slots(), c});
  ops::permute_rows(x, send_token, {}, send);
  std::shared_ptr<Buffer> storage = storage_.acquire();
  Tensor rows = storage->view({expert_offsets.back(), c});
  to_experts(*state, send, rows);
  state->returned = returned_.acquire();
  state->returned->resize(plan->num_slots() * c);
  return DispatchHandle(std::move(plan), std::move(storage), rows, std::move(expert_offsets),
                        owners.first_local(), std::move(state));
}

void FssdpDispatcher::to_experts(const FssdpState& state, Tensor send_order,
                                 Tensor expert_rows) {
  const int64_t c = send_order.cols(), total = sum_of(state.recv_rows);
  Tensor staged = scratch_b_.view({total, c});  // source-major
  group_.all_to_all_v<float>(
      {send_order.data, static_cast<size_t>(send_order.numel())}, scaled(state.send_rows, c),
      {staged.data, static_cast<size_t>(staged.numel())}, scaled(state.recv_rows, c));
  regroup_rows(staged, expert_rows, state.recv_counts, group_.size(), state.num_local,
               /*to_expert_major=*/true);
}

void FssdpDispatcher::to_sources(const FssdpState& state, Tensor expert_rows,
                                 Tensor send_order) {
  const int64_t c = expert_rows.cols(), total = sum_of(state.recv_rows);
  Tensor staged = scratch_b_.view({total, c});
  regroup_rows(expert_rows, staged, state.recv_counts, group_.size(), state.num_local,
               /*to_expert_major=*/false);
  group_.all_to_all_v<float>(
      {staged.data, static_cast<size_t>(staged.numel())}, scaled(state.recv_rows, c),
      {send_order.data, static_cast<size_t>(send_order.numel())}, scaled(state.send_rows, c));
}

void FssdpDispatcher::combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) {
  const RoutingPlan& plan = handle.plan();
  const FssdpState& state = state_as<FssdpState>(handle, kName);
  const int64_t c = expert_out.cols();
  check_combine(kName, handle, expert_out, y);
  Tensor back = scratch_a_.view({plan.num_slots(), c});  // send order
  to_sources(state, expert_out, back);
  Tensor returned(state.returned->data(), Shape{plan.num_slots(), c});  // slot order
  ops::permute_rows(back, state.slot_pos, {}, returned);
  ops::combine_rows(returned, plan.slot, plan.weight, y);
}

void FssdpDispatcher::combine_backward(const DispatchHandle& handle, Tensor expert_out,
                                       Tensor dy, Tensor d_expert_out, float* dweights) {
  const RoutingPlan& plan = handle.plan();
  const FssdpState& state = state_as<FssdpState>(handle, kName);
  const int64_t c = dy.cols();
  check_combine_backward(kName, handle, expert_out, dy, d_expert_out);
  Tensor d_slots = scratch_c_.view({plan.num_slots(), c});
  combine_backward_slots(plan, Tensor(state.returned->data(), d_slots.shape), dy, d_slots,
                         dweights);
  Tensor send = scratch_a_.view({plan.num_slots(), c});
  ops::permute_rows(d_slots, state.send_slot, {}, send);
  to_experts(state, send, d_expert_out);
}

void FssdpDispatcher::dispatch_backward(const DispatchHandle& handle, Tensor d_rows,
                                        Tensor dx) {
  const RoutingPlan& plan = handle.plan();
  const FssdpState& state = state_as<FssdpState>(handle, kName);
  const int64_t c = dx.cols();
  check_dispatch_backward(kName, handle, d_rows, dx);
  Tensor back = scratch_a_.view({plan.num_slots(), c});
  to_sources(state, d_rows, back);
  Tensor d_slots = scratch_c_.view({plan.num_slots(), c});
  ops::permute_rows(back, state.slot_pos, {}, d_slots);
  ops::combine_rows(d_slots, plan.slot, {}, dx);
}

}  // namespace moe
