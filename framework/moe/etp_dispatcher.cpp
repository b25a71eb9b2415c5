#include "framework/moe/etp_dispatcher.h"

#include <algorithm>
#include <cstring>

#include "framework/core/error.h"

namespace moe {

namespace {

constexpr std::string_view kName = "etp dispatcher";

}  // namespace

RoutingPlan slice_routing_plan(const RoutingPlan& plan, int64_t begin, int64_t end) {
  MOE_CHECK(0 <= begin && begin <= end && end <= plan.num_tokens, "routing plan slice [",
            begin, ", ", end, ") of ", plan.num_tokens, " tokens");
  const int64_t k = plan.top_k;
  const auto first = static_cast<size_t>(begin * k), last = static_cast<size_t>(end * k);
  std::vector<uint8_t> kept(last - first);
  for (size_t a = first; a < last; ++a) kept[a - first] = plan.slot[a] >= 0 ? 1 : 0;
  Admission admission;
  admission.kept = kept;
  return build_routing_plan(std::span(plan.expert).subspan(first, last - first),
                            std::span(plan.weight).subspan(first, last - first), end - begin,
                            k, plan.num_experts, plan.capacity, admission);
}

EtpDispatcher::EtpDispatcher(Dispatcher& inner, Communicator& etp, Communicator* tp)
    : inner_(inner), etp_(etp), tp_(tp != nullptr && tp->size() > 1 ? tp : nullptr) {}

DispatchHandle EtpDispatcher::dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) {
  const int64_t c = x.cols(), n = plan->num_tokens;
  check_rows(kName, "dispatch input", x, n, c);
  auto state = std::make_shared<EtpState>();
  // tp slicing: this rank's share of the tokens, with the whole plan's decisions
  std::shared_ptr<const RoutingPlan> mine = plan;
  Tensor x_mine = x;
  if (tp_ != nullptr) {
    const int ranks = tp_->size();
    for (int r = 0; r <= ranks; ++r) state->slices.push_back(r * n / ranks);
    const int64_t begin = state->slices[tp_->rank()], end = state->slices[tp_->rank() + 1];
    mine = std::make_shared<const RoutingPlan>(slice_routing_plan(*plan, begin, end));
    x_mine = Tensor(x.data + begin * c, {end - begin, c});
  }
  state->inner.emplace(inner_.dispatch(x_mine, std::move(mine)));
  const DispatchHandle& inner = *state->inner;

  // every member's rows per local expert ([etp, E_local]), then the rows themselves
  const int members = etp_.size();
  const int64_t num_local = inner.num_local_experts();
  std::vector<int64_t> counts(inner.expert_offsets().size() - 1);
  for (int64_t i = 0; i < num_local; ++i) counts[i] = inner.local_count(i);
  state->member_counts.resize(static_cast<size_t>(members * num_local));
  etp_.all_gather<int64_t>(counts, state->member_counts);
  state->member_rows.assign(static_cast<size_t>(members), 0);
  std::vector<int64_t> offsets(static_cast<size_t>(num_local + 1), 0);
  for (int j = 0; j < members; ++j)
    for (int64_t i = 0; i < num_local; ++i) {
      state->member_rows[j] += state->member_counts[j * num_local + i];
      offsets[i + 1] += state->member_counts[j * num_local + i];
    }
  for (int64_t i = 0; i < num_local; ++i) offsets[i + 1] += offsets[i];
  std::shared_ptr<Buffer> storage = storage_.acquire();
  Tensor rows = storage->view({offsets.back(), c});  // (S, C)
  gather_rows(*state, inner.rows().data, rows.data, c);
  state->reduced = reduced_.acquire();
  state->reduced->resize(inner.rows().rows() * c);
  const int64_t first_expert = inner.first_expert();
  return DispatchHandle(std::move(plan), std::move(storage), rows, std::move(offsets),
                        first_expert, std::move(state));
}

void EtpDispatcher::gather_rows(const EtpState& state, const float* mine, float* expert_rows,
                                int64_t cols) {
  const int members = etp_.size();
  const int64_t total = sum_of(state.member_rows);
  Tensor member_major = scratch_a_.view({total, cols});
  const std::vector<int64_t> counts = scaled(state.member_rows, cols);
  etp_.all_gather_v<float>({mine, static_cast<size_t>(counts[etp_.rank()])},
                           {member_major.data, static_cast<size_t>(member_major.numel())},
                           counts);
  regroup_rows(member_major, Tensor(expert_rows, member_major.shape), state.member_counts,
               members, state.inner->num_local_experts(), /*to_expert_major=*/true);
}

void EtpDispatcher::reduce_rows(const EtpState& state, const float* expert_rows, float* mine,
                                int64_t cols) {
  const int members = etp_.size();
  const int64_t total = sum_of(state.member_rows);
  Tensor member_major = scratch_a_.view({total, cols});
  regroup_rows(Tensor(const_cast<float*>(expert_rows), member_major.shape), member_major,
               state.member_counts, members, state.inner->num_local_experts(),
               /*to_expert_major=*/false);
  const std::vector<int64_t> counts = scaled(state.member_rows, cols);
  etp_.reduce_scatter_v<float>({member_major.data, static_cast<size_t>(member_major.numel())},
                               counts, {mine, static_cast<size_t>(counts[etp_.rank()])});
}

void EtpDispatcher::gather_slices(const EtpState& state, float* data, int64_t per_token) {
  if (state.slices.empty()) return;
  const int ranks = tp_->size();
  std::vector<int64_t> counts(static_cast<size_t>(ranks));
  for (int r = 0; r < ranks; ++r) counts[r] = (state.slices[r + 1] - state.slices[r]) * per_token;
  const int64_t begin = state.slices[tp_->rank()] * per_token;
  float* mine = slice_.view({counts[tp_->rank()]}).data;
  std::memcpy(mine, data + begin, static_cast<size_t>(counts[tp_->rank()]) * sizeof(float));
  tp_->all_gather_v<float>({mine, static_cast<size_t>(counts[tp_->rank()])},
                          {data, static_cast<size_t>(sum_of(counts))}, counts);
}

void EtpDispatcher::combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) {
  const EtpState& state = state_as<EtpState>(handle, kName);
  const DispatchHandle& inner = *state.inner;
  const int64_t c = expert_out.cols();
  check_combine(kName, handle, expert_out, y);
  Tensor reduced(state.reduced->data(), {inner.rows().rows(), c});
  reduce_rows(state, expert_out.data, reduced.data, c);
  const int64_t begin = state.slices.empty() ? 0 : state.slices[tp_->rank()];
  inner_.combine(inner, reduced, Tensor(y.data + begin * c, {inner.plan().num_tokens, c}));
  gather_slices(state, y.data, c);
}

void EtpDispatcher::combine_backward(const DispatchHandle& handle, Tensor expert_out,
                                     Tensor dy, Tensor d_expert_out, float* dweights) {
  const EtpState& state = state_as<EtpState>(handle, kName);
  const DispatchHandle& inner = *state.inner;
  const int64_t c = dy.cols(), k = handle.plan().top_k;
  check_combine_backward(kName, handle, expert_out, dy, d_expert_out);
  const int64_t rows = inner.rows().rows();
  Tensor reduced(state.reduced->data(), {rows, c});
  Tensor d_mine = mine_.view({rows, c});
  const int64_t begin = state.slices.empty() ? 0 : state.slices[tp_->rank()];
  inner_.combine_backward(inner, reduced, Tensor(dy.data + begin * c, {inner.plan().num_tokens, c}),
                          d_mine, dweights + begin * k);
  gather_rows(state, d_mine.data, d_expert_out.data, c);
  gather_slices(state, dweights, k);
}

void EtpDispatcher::dispatch_backward(const DispatchHandle& handle, Tensor d_rows, Tensor dx) {
  const EtpState& state = state_as<EtpState>(handle, kName);
  const DispatchHandle& inner = *state.inner;
  const int64_t c = dx.cols();
  check_dispatch_backward(kName, handle, d_rows, dx);
  Tensor d_mine = mine_.view({inner.rows().rows(), c});
  reduce_rows(state, d_rows.data, d_mine.data, c);
  const int64_t begin = state.slices.empty() ? 0 : state.slices[tp_->rank()];
  inner_.dispatch_backward(inner, d_mine,
                           Tensor(dx.data + begin * c, {inner.plan().num_tokens, c}));
  gather_slices(state, dx.data, c);
}

}  // namespace moe
