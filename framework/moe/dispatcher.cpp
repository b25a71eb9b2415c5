#include "framework/moe/dispatcher.h"

#include "framework/kernels/ops.h"

namespace moe {

void check_rows(std::string_view dispatcher, const char* what, Tensor t, int64_t rows,
                int64_t cols) {
  MOE_CHECK(t.rows() == rows && t.cols() == cols, dispatcher, " ", what, ": shape ",
            t.shape.str(), ", expected (", rows, ", ", cols, ")");
}

void check_combine(std::string_view dispatcher, const DispatchHandle& handle,
                   Tensor expert_out, Tensor y) {
  const int64_t c = expert_out.cols();
  check_rows(dispatcher, "combine input", expert_out, handle.rows().rows(), c);
  check_rows(dispatcher, "combine output", y, handle.plan().num_tokens, c);
}

void check_combine_backward(std::string_view dispatcher, const DispatchHandle& handle,
                            Tensor expert_out, Tensor dy, Tensor d_expert_out) {
  const int64_t c = dy.cols();
  check_rows(dispatcher, "combine_backward dy", dy, handle.plan().num_tokens, c);
  check_rows(dispatcher, "combine_backward expert_out", expert_out, handle.rows().rows(), c);
  check_rows(dispatcher, "combine_backward d_expert_out", d_expert_out, handle.rows().rows(),
             c);
}

void check_dispatch_backward(std::string_view dispatcher, const DispatchHandle& handle,
                             Tensor d_rows, Tensor dx) {
  const int64_t c = dx.cols();
  check_rows(dispatcher, "dispatch_backward d_rows", d_rows, handle.rows().rows(), c);
  check_rows(dispatcher, "dispatch_backward dx", dx, handle.plan().num_tokens, c);
}

SlotScales::SlotScales(const RoutingPlan& plan)
    : token_of_assignment(static_cast<size_t>(plan.num_assignments())),
      slot_weight(static_cast<size_t>(plan.num_slots())) {
  for (int64_t a = 0; a < plan.num_assignments(); ++a) {
    token_of_assignment[a] = static_cast<int32_t>(a / plan.top_k);
    if (plan.slot[a] >= 0) slot_weight[plan.slot[a]] = plan.weight[a];
  }
}

int64_t sum_of(std::span<const int64_t> counts) {
  int64_t sum = 0;
  for (int64_t x : counts) sum += x;
  return sum;
}

std::vector<int64_t> scaled(std::span<const int64_t> counts, int64_t factor) {
  std::vector<int64_t> out(counts.size());
  for (size_t i = 0; i < counts.size(); ++i) out[i] = counts[i] * factor;
  return out;
}

DispatchHandle::DispatchHandle(std::shared_ptr<const RoutingPlan> plan,
                               std::shared_ptr<Buffer> storage, Tensor rows,
                               std::vector<int64_t> expert_offsets, int64_t first_expert,
                               std::shared_ptr<const DispatchState> state)
    : plan_(std::move(plan)),
      storage_(std::move(storage)),
      rows_(rows),
      expert_offsets_(std::move(expert_offsets)),
      first_expert_(first_expert),
      state_(std::move(state)) {
  MOE_CHECK(plan_ != nullptr, "dispatch handle without a routing plan");
  MOE_CHECK(!expert_offsets_.empty() && expert_offsets_.back() == rows_.rows(),
            "dispatch handle: expert offsets do not cover its ", rows_.rows(), " rows");
}

DispatchHandle LocalDispatcher::dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) {
  const int64_t c = x.cols();
  check_rows("dispatcher", "dispatch input", x, plan->num_tokens, c);
  const int64_t s = plan->num_slots();
  std::shared_ptr<Buffer> storage = storage_.acquire(x.device);
  Tensor rows = storage->view({s, c});  // (S, C)
  ops::permute_rows(x, plan->token_of_slot, {}, rows);  // rows[s] = x[token_of_slot[s]]
  std::vector<int64_t> offsets = plan->expert_offsets;
  return DispatchHandle(std::move(plan), std::move(storage), rows, std::move(offsets), 0);
}

std::shared_ptr<Buffer> RowStoragePool::acquire(Device device) {
  // A buffer only the pool still owns has no live handle: its rows are free to reuse.
  for (const auto& storage : pool_)
    if (storage.use_count() == 1 && storage->device() == device) return storage;
  return pool_.emplace_back(std::make_shared<Buffer>(device, dtype_));
}

void LocalDispatcher::combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) {
  const RoutingPlan& plan = handle.plan();
  check_combine("dispatcher", handle, expert_out, y);
  // y_t = sum_k w_{t,k} expert_out[slot(t,k)], dropped slots skipped
  ops::combine_rows(expert_out, plan.slot, plan.weight, y);
}

void LocalDispatcher::combine_backward(const DispatchHandle& handle, Tensor expert_out,
                                       Tensor dy, Tensor d_expert_out, float* dweights) {
  check_combine_backward("dispatcher", handle, expert_out, dy, d_expert_out);
  combine_backward_slots(handle.plan(), expert_out, dy, d_expert_out, dweights);
}

void combine_backward_slots(const RoutingPlan& plan, Tensor slot_out, Tensor dy,
                            Tensor d_slot_out, float* dweights) {
  // dweights_{t,k} = <dy_t, slot_out[slot(t,k)]>, 0 for dropped assignments
  const SlotScales scales(plan);
  ops::gather_dot(dy, scales.token_of_assignment, slot_out, plan.slot,
                  {dweights, static_cast<size_t>(plan.num_assignments())});
  // d_slot_out[s] = w_s dy[token_of_slot[s]]
  ops::permute_rows(dy, plan.token_of_slot, scales.slot_weight, d_slot_out);
}

void LocalDispatcher::dispatch_backward(const DispatchHandle& handle, Tensor d_rows,
                                        Tensor dx) {
  const RoutingPlan& plan = handle.plan();
  check_dispatch_backward("dispatcher", handle, d_rows, dx);
  // dx_t = sum_k d_rows[slot(t,k)]
  ops::combine_rows(d_rows, plan.slot, {}, dx);
}

void regroup_rows(Tensor src, Tensor dst, std::span<const int64_t> counts, int ranks,
                  int64_t num_local, bool to_expert_major) {
  MOE_CHECK(src.cols() == dst.cols() && src.numel() == dst.numel(), "regroup_rows: ",
            src.shape.str(), " into ", dst.shape.str());
  ops::transpose_blocks(src.device, src.raw(), dst.raw(), counts, ranks, num_local,
                        static_cast<size_t>(src.cols()) * dtype_size(src.dtype),
                        /*inverse=*/!to_expert_major);
}

}  // namespace moe
