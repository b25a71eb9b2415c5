#include "framework/moe/shm_dispatcher.h"

#include <algorithm>
#include <climits>

#include "framework/core/error.h"
#include "framework/kernels/ops.h"

namespace moe {

namespace {

constexpr std::string_view kName = "shared-memory dispatcher";
enum Region : int64_t { kRows = 0, kOut = 1, kDOut = 2, kDRows = 3, kRegions = 4 };

int64_t region_of(Dispatcher::ExpertRows which) {
  switch (which) {
    case Dispatcher::ExpertRows::kOutput: return kOut;
    case Dispatcher::ExpertRows::kOutputGrad: return kDOut;
    case Dispatcher::ExpertRows::kInputGrad: return kDRows;
  }
  return kOut;
}

// This rank's rows of `region` (S_recv, C).
Tensor region_rows(const ShmState& state, int me, int64_t region) {
  return state.window->rows(me, region * state.cap, state.rows);
}

// rows copied into `dst` unless the caller wrote them there already
void place(Tensor rows, Tensor dst) {
  if (rows.data != dst.data) ops::copy(rows, dst);
}

}  // namespace

ShmDispatcher::ShmDispatcher(Communicator& ep, ExpertPlacement placement)
    : ep_(ep), placement_(std::move(placement)) {
  MOE_CHECK(placement_.ep_size == ep.size() && placement_.ep_rank == ep.rank(), kName,
            ": placement for ep rank ", placement_.ep_rank, " of ", placement_.ep_size,
            " on ep rank ", ep.rank(), " of ", ep.size());
  MOE_USER_CHECK(shares_memory(ep.mpi_comm()), "moe.dispatcher: shm needs every rank of an "
                 "ep group on one node (MPI shared memory), but the ", ep.size(),
                 " ranks of this one are not; use flat or two_level");
  for (int64_t e = 0; e < placement_.num_experts; ++e) owner_.push_back(placement_.owner(e));
}

int64_t ShmDispatcher::free_window() const {
  for (size_t i = 0; i < pool_.size(); ++i)
    if (pool_[i].use_count() == 1) return static_cast<int64_t>(i);
  return static_cast<int64_t>(pool_.size());
}

std::shared_ptr<SharedRows> ShmDispatcher::window(int64_t index, int64_t rows, int64_t cols) {
  if (index == static_cast<int64_t>(pool_.size())) pool_.emplace_back();
  std::shared_ptr<SharedRows>& w = pool_[index];
  if (w == nullptr || w->cols() != cols || w->segment_rows() < kRegions * rows) {
    w.reset();  // collective free before the collective allocation
    // a quarter to spare: routing counts move from step to step
    const int64_t cap = std::max<int64_t>(1, rows + rows / 4);
    MOE_CHECK(ep_.size() * kRegions * cap <= INT32_MAX, kName, ": ", cap,
              " rows per region overflow int32 row indexes");
    w = std::make_shared<SharedRows>(ep_.mpi_comm(), kRegions * cap, cols);
  }
  return w;
}

void ShmDispatcher::fence(const SharedRows& window) {
  window.sync();
  ep_.barrier();
  window.sync();
}

DispatchHandle ShmDispatcher::dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) {
  const int64_t c = x.cols(), e = placement_.num_experts;
  const int ranks = ep_.size(), me = ep_.rank();
  check_rows(kName, "dispatch input", x, plan->num_tokens, c);
  MOE_CHECK(plan->num_experts == e, kName, ": plan over ", plan->num_experts,
            " experts, placement over ", e);

  // counts [R, E + 1]: the kept rows of every source for every expert, and its choice
  // of window
  const int64_t index = free_window();
  std::vector<int64_t> mine(plan->counts_after.begin(), plan->counts_after.end());
  mine.push_back(index);
  std::vector<int64_t> counts(static_cast<size_t>(ranks * (e + 1)));
  ep_.all_gather<int64_t>(mine, counts);
  auto count = [&](int s, int64_t x) { return counts[s * (e + 1) + x]; };
  for (int s = 0; s < ranks; ++s)
    MOE_CHECK(count(s, e) == index, kName, ": ep rank ", s, " picks window ", count(s, e),
              ", this rank ", index, " (handles released in different orders)");

  auto state = std::make_shared<ShmState>();
  // Expert x's rows at its owner d: after those of d's earlier experts, source 0's
  // first, then source 1's, ...; dest[x] = where this rank's start.
  std::vector<int64_t> start(static_cast<size_t>(e), 0), load(static_cast<size_t>(ranks), 0);
  state->dest.assign(static_cast<size_t>(e), 0);
  for (int d = 0; d < ranks; ++d) {
    for (int64_t x = placement_.first(d); x < placement_.first(d + 1); ++x) {
      start[x] = load[d];
      for (int s = 0; s < ranks; ++s) {
        if (s == me) state->dest[x] = load[d];
        load[d] += count(s, x);
      }
    }
  }
  const int64_t first = placement_.first_local(), num_local = placement_.num_local();
  std::vector<int64_t> expert_offsets(static_cast<size_t>(num_local + 1), 0);
  for (int64_t i = 0; i < num_local; ++i) expert_offsets[i] = start[first + i];
  expert_offsets[num_local] = load[me];
  state->rows = load[me];
  state->window = window(index, *std::max_element(load.begin(), load.end()), c);
  state->cap = state->window->segment_rows() / kRegions;

  // row of each assignment in the window: its owner's segment, the expert's rows there
  const int64_t segment = state->window->segment_rows();
  const RoutingPlan& p = *plan;
  state->row.assign(static_cast<size_t>(p.num_assignments()), -1);
  for (int64_t a = 0; a < p.num_assignments(); ++a) {
    const int64_t slot = p.slot[a];
    if (slot < 0) continue;  // dropped
    const int64_t x = p.expert[a];
    state->row[a] = static_cast<int32_t>(owner_[x] * segment + state->dest[x] +
                                         (slot - p.expert_offsets[x]));
  }
  push(p, *state, x, {}, kRows);
  fence(*state->window);
  const Tensor rows = region_rows(*state, me, kRows);
  std::shared_ptr<Buffer> storage(state->window, &handle_storage_);  // keeps the window
  return DispatchHandle(std::move(plan), std::move(storage), rows, std::move(expert_offsets),
                        first, std::move(state));
}

void ShmDispatcher::push(const RoutingPlan& plan, const ShmState& state, Tensor token_rows,
                         std::span<const float> scale, int region) {
  int64_t remote = 0;  // rows written into other ranks' segments
  for (int64_t x = 0; x < placement_.num_experts; ++x) {
    const int64_t n = plan.counts_after[x], slot = plan.expert_offsets[x];
    if (n == 0) continue;
    if (owner_[x] != ep_.rank()) remote += n;
    const Tensor dst = state.window->rows(owner_[x], region * state.cap + state.dest[x], n);
    ops::permute_rows(token_rows, std::span(plan.token_of_slot).subspan(slot, n),
                      scale.empty() ? scale : scale.subspan(slot, n), dst);
  }
  count_rows(remote, token_rows.cols());
}

void ShmDispatcher::count_rows(int64_t rows, int64_t cols) {
  const int64_t bytes = rows * cols * int64_t{sizeof(float)};
  ep_.stats().bytes_sent += bytes;
  ep_.stats().intra_node_bytes += bytes;
}

int64_t ShmDispatcher::pulled_rows(const ShmState& state) const {
  const int64_t mine = ep_.rank() * state.window->segment_rows();
  const int64_t end = mine + state.window->segment_rows();
  return std::count_if(state.row.begin(), state.row.end(),
                       [&](int32_t r) { return r >= 0 && (r < mine || r >= end); });
}

std::span<const int32_t> ShmDispatcher::locate(const ShmState& state, Tensor rows,
                                               int64_t fallback) {
  const int me = ep_.rank();
  int64_t region = -1;
  for (int64_t r = 0; r < kRegions; ++r)
    if (rows.data == region_rows(state, me, r).data) region = r;
  if (region < 0 || state.rows == 0) {
    region = fallback;
    place(rows, region_rows(state, me, region));
  }
  state.window->sync();
  std::vector<int64_t> regions(static_cast<size_t>(ep_.size()));  // [R]
  ep_.all_gather<int64_t>(std::span<const int64_t>(&region, 1), regions);
  state.window->sync();
  const int64_t segment = state.window->segment_rows();
  located_.resize(state.row.size());
  for (size_t a = 0; a < state.row.size(); ++a) {
    const int32_t row = state.row[a];
    located_[a] = row < 0 ? -1 : static_cast<int32_t>(row + regions[row / segment] * state.cap);
  }
  return located_;
}

Tensor ShmDispatcher::expert_rows(const DispatchHandle& handle, ExpertRows which) const {
  return region_rows(state_as<ShmState>(handle, kName), ep_.rank(), region_of(which));
}

void ShmDispatcher::combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) {
  const ShmState& state = state_as<ShmState>(handle, kName);
  check_combine(kName, handle, expert_out, y);
  // y_t = sum_k w_{t,k} out[row(t,k)], each row where its experts wrote it
  ops::combine_rows(state.window->all(), locate(state, expert_out, kOut), handle.plan().weight,
                    y);
  count_rows(pulled_rows(state), y.cols());
}

void ShmDispatcher::combine_backward(const DispatchHandle& handle, Tensor expert_out,
                                     Tensor dy, Tensor d_expert_out, float* dweights) {
  const RoutingPlan& plan = handle.plan();
  const ShmState& state = state_as<ShmState>(handle, kName);
  check_combine_backward(kName, handle, expert_out, dy, d_expert_out);
  const int64_t assignments = plan.num_assignments();
  const SlotScales scales(plan);
  // dweights_{t,k} = <dy_t, out[row(t,k)]> where the outputs lie
  ops::gather_dot(dy, scales.token_of_assignment, state.window->all(),
                  locate(state, expert_out, kOut), {dweights, static_cast<size_t>(assignments)});
  count_rows(pulled_rows(state), dy.cols());
  // d_out[row(t,k)] = w_{t,k} dy_t at the expert's owner
  push(plan, state, dy, scales.slot_weight, kDOut);
  fence(*state.window);
  place(region_rows(state, ep_.rank(), kDOut), d_expert_out);
}

void ShmDispatcher::dispatch_backward(const DispatchHandle& handle, Tensor d_rows, Tensor dx) {
  const ShmState& state = state_as<ShmState>(handle, kName);
  check_dispatch_backward(kName, handle, d_rows, dx);
  // dx_t = sum_k d_rows[row(t,k)] where the experts wrote them
  ops::combine_rows(state.window->all(), locate(state, d_rows, kDRows), {}, dx);
  count_rows(pulled_rows(state), dx.cols());
}

}  // namespace moe
