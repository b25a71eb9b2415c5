#pragma once
// ShmDispatcher (moe.dispatcher = shm): expert parallelism over an ep group whose ranks
// share memory (one node), with no row exchange at all. Every dispatch owns one
// shared-memory window (SharedRows) in which each rank's segment holds four regions of
// `cap` rows, all in the expert-major order of that rank's experts:
//
//   region 0  rows      the experts' input, written by the sources (dispatch)
//   region 1  out       the experts' output (the MoE layer has the experts write there)
//   region 2  d_out     its gradient, written by the sources (combine_backward)
//   region 3  d_rows    the experts' input gradient (written there by the experts)
//
//   dispatch           counts all-gathered (with the window's pool index: every rank
//                      picks the same window); each source copies its rows from token
//                      order straight into their place at the owner (local expert i gets
//                      source 0's rows, then source 1's, ...: the single-process order);
//                      then a barrier
//   combine            all-gather of where each rank's expert outputs lie (the region
//                      its experts wrote: any region of its segment is read where it
//                      lies, rows elsewhere are copied into `out` first); then
//                      y_t = sum_k w_{t,k} out[row(t,k)], reading each row where its
//                      owner's experts wrote it
//   combine_backward   the same all-gather for the outputs; dweights from the out rows
//                      where they lie; w dy written straight into the owners' d_out;
//                      barrier
//   dispatch_backward  the same all-gather for the input gradients; dx_t = sum_k
//                      d_rows[row(t,k)] where they lie
//
// So each row is copied once in dispatch (as in the raw all-to-all, which copies it
// once through MPI's shared memory too) and read once by the weighted sum in combine,
// which replaces the return exchange. The sums run in the single-process order, so the
// results equal the flat dispatcher's bit for bit. The ep group's stats() count, as sent
// on the intra-node link, the rows a rank writes into or reads from another's segment
// (per forward, the bytes of the flat dispatcher's two row exchanges).
//
// Rows that the caller did not place in the window (expert_rows() not used) are copied
// there first, so any caller gets the same results; the MoE layer places them.
//
// Windows come from a pool (one per live handle plus one); a window is chosen and
// (re)allocated collectively from what every rank knows after the counts all-gather, so
// all ranks keep the same pool. The counts all-gather also orders every rank's dispatch
// after all earlier reads of the pool's windows.

#include <memory>
#include <vector>

#include "framework/moe/dispatcher.h"
#include "framework/moe/placement.h"
#include "framework/parallel/communicator.h"
#include "framework/parallel/shared_rows.h"

namespace moe {

struct ShmState final : DispatchState {
  std::shared_ptr<SharedRows> window;  // per rank: 4 regions of cap rows
  int64_t cap = 0;
  int64_t rows = 0;                    // S_recv: this rank's expert rows
  std::vector<int64_t> dest;           // [E] where this rank's rows of expert e start in
                                       // its owner's regions
  // [N*K] the row of each assignment in window->all() at the start of its owner's
  // segment (add region * cap for a region's row); -1 dropped
  std::vector<int32_t> row;
};

class ShmDispatcher final : public Dispatcher {
 public:
  // ep: the expert-parallel group, whose ranks share memory (a user error otherwise,
  // naming moe.dispatcher); placement.ep_size == ep.size(). Collective.
  ShmDispatcher(Communicator& ep, ExpertPlacement placement);

  DispatchHandle dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) override;
  void combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) override;
  void combine_backward(const DispatchHandle& handle, Tensor expert_out, Tensor dy,
                        Tensor d_expert_out, float* dweights) override;
  void dispatch_backward(const DispatchHandle& handle, Tensor d_rows, Tensor dx) override;
  Tensor expert_rows(const DispatchHandle& handle, ExpertRows which) const override;

 private:
  // The pool index every rank picks: the first window no live handle owns.
  int64_t free_window() const;
  // Window `index` with at least `rows` rows of `cols` floats per region; collective.
  std::shared_ptr<SharedRows> window(int64_t index, int64_t rows, int64_t cols);
  // A barrier of the ep group with the window's fences on both sides.
  void fence(const SharedRows& window);
  // rows of token_rows (scaled per slot, scale empty: 1) into `region` at their owners
  void push(const RoutingPlan& plan, const ShmState& state, Tensor token_rows,
            std::span<const float> scale, int region);

  // ep_.stats(): the bytes of `rows` rows moved between this rank and another's segment
  // (counted as sent by this rank, on the intra-node link)
  void count_rows(int64_t rows, int64_t cols);
  // how many of the assignments' rows lie in other ranks' segments
  int64_t pulled_rows(const ShmState& state) const;
  // The window row of every assignment's row in `rows` (S_recv, C) of every rank: rows
  // lying at the start of a region of this rank's segment are read there, others are
  // copied into region `fallback` first. Collective (it all-gathers the regions, and
  // orders the reads after every rank's writes).
  std::span<const int32_t> locate(const ShmState& state, Tensor rows, int64_t fallback);

  Communicator& ep_;
  ExpertPlacement placement_;
  std::vector<int> owner_;  // [E] ep rank of each expert
  std::vector<std::shared_ptr<SharedRows>> pool_;
  std::vector<int32_t> located_;  // [N*K] locate()'s answer, per call
  Buffer handle_storage_;  // what the handles' storage pointer names (the window owns rows)
};

}  // namespace moe
