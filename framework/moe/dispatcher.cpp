#include "framework/moe/dispatcher.h"

#include <cstring>

#include "framework/kernels/ops.h"

namespace moe {

void check_rows(std::string_view dispatcher, const char* what, Tensor t, int64_t rows,
                int64_t cols) {
  MOE_CHECK(t.rows() == rows && t.cols() == cols, dispatcher, " ", what, ": shape ",
            t.shape.str(), ", expected (", rows, ", ", cols, ")");
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
  std::shared_ptr<Buffer> storage = storage_.acquire();
  Tensor rows = storage->view({s, c});  // (S, C)
  // rows[s] = x[token_of_slot[s]]
  cpu::permute_rows(x.data, plan->token_of_slot.data(), nullptr, rows.data, s, c);
  std::vector<int64_t> offsets = plan->expert_offsets;
  return DispatchHandle(std::move(plan), std::move(storage), rows, std::move(offsets), 0);
}

std::shared_ptr<Buffer> RowStoragePool::acquire() {
  // A buffer only the pool still owns has no live handle: its rows are free to reuse.
  for (const auto& storage : pool_)
    if (storage.use_count() == 1) return storage;
  return pool_.emplace_back(std::make_shared<Buffer>());
}

void LocalDispatcher::combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) {
  const RoutingPlan& plan = handle.plan();
  const int64_t c = expert_out.cols();
  check_rows("dispatcher", "combine input", expert_out, plan.num_slots(), c);
  check_rows("dispatcher", "combine output", y, plan.num_tokens, c);
  // y_t = sum_k w_{t,k} expert_out[slot(t,k)], dropped slots skipped
  cpu::combine_rows(expert_out.data, plan.slot.data(), plan.weight.data(), y.data,
                    plan.num_tokens, plan.top_k, c);
}

void LocalDispatcher::combine_backward(const DispatchHandle& handle, Tensor expert_out,
                                       Tensor dy, Tensor d_expert_out, float* dweights) {
  const RoutingPlan& plan = handle.plan();
  const int64_t c = dy.cols();
  const int64_t s = plan.num_slots();
  check_rows("dispatcher", "combine_backward dy", dy, plan.num_tokens, c);
  check_rows("dispatcher", "combine_backward expert_out", expert_out, s, c);
  check_rows("dispatcher", "combine_backward d_expert_out", d_expert_out, s, c);

  combine_backward_slots(plan, expert_out.data, dy.data, d_expert_out.data, dweights, c);
}

void combine_backward_slots(const RoutingPlan& plan, const float* slot_out, const float* dy,
                            float* d_slot_out, float* dweights, int64_t cols) {
  const int64_t c = cols;
  const int64_t s = plan.num_slots();
  std::vector<float> slot_weight(static_cast<size_t>(s));  // [S] w of the slot's assignment
  // One dot product of C per assignment (N*K*C multiply-adds): split over the threads.
  // Each assignment writes only its own dweights entry and slot.
#pragma omp parallel for if (plan.num_assignments() * c > (1 << 15))
  for (int64_t a = 0; a < plan.num_assignments(); ++a) {
    const int32_t slot = plan.slot[a];
    if (slot >= 0) slot_weight[slot] = plan.weight[a];
    dweights[a] = 0.0f;
    if (slot < 0) continue;
    // dweights_{t,k} = <dy_t, slot_out[slot]>
    const float* g = dy + (a / plan.top_k) * c;
    const float* o = slot_out + slot * c;
    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < c; ++j) acc += g[j] * o[j];
    dweights[a] = acc;
  }
  // d_slot_out[s] = w_s dy[token_of_slot[s]]
  cpu::permute_rows(dy, plan.token_of_slot.data(), slot_weight.data(), d_slot_out, s, c);
}

void LocalDispatcher::dispatch_backward(const DispatchHandle& handle, Tensor d_rows,
                                        Tensor dx) {
  const RoutingPlan& plan = handle.plan();
  const int64_t c = dx.cols();
  check_rows("dispatcher", "dispatch_backward d_rows", d_rows, plan.num_slots(), c);
  check_rows("dispatcher", "dispatch_backward dx", dx, plan.num_tokens, c);
  // dx_t = sum_k d_rows[slot(t,k)]
  cpu::combine_rows(d_rows.data, plan.slot.data(), nullptr, dx.data, plan.num_tokens,
                    plan.top_k, c);
}

void regroup_rows(const float* src, float* dst, std::span<const int64_t> counts, int ranks,
                  int64_t num_local, int64_t cols, bool to_expert_major) {
  MOE_CHECK(static_cast<int64_t>(counts.size()) == ranks * num_local, "regroup_rows: ",
            counts.size(), " counts for ", ranks, " x ", num_local, " blocks");
  // row offsets of every block in both layouts
  std::vector<int64_t> source_major(counts.size()), expert_major(counts.size());
  int64_t offset = 0;
  for (int s = 0; s < ranks; ++s)
    for (int64_t i = 0; i < num_local; ++i) {
      source_major[s * num_local + i] = offset;
      offset += counts[s * num_local + i];
    }
  offset = 0;
  for (int64_t i = 0; i < num_local; ++i)
    for (int s = 0; s < ranks; ++s) {
      expert_major[s * num_local + i] = offset;
      offset += counts[s * num_local + i];
    }
  const int64_t blocks = static_cast<int64_t>(counts.size());
#pragma omp parallel for schedule(dynamic, 1) if (offset * cols > (1 << 16))
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t from = to_expert_major ? source_major[b] : expert_major[b];
    const int64_t to = to_expert_major ? expert_major[b] : source_major[b];
    std::memcpy(dst + to * cols, src + from * cols,
                static_cast<size_t>(counts[b] * cols) * sizeof(float));
  }
}

}  // namespace moe
