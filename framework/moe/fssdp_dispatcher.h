#pragma once
// FssdpDispatcher: the rows of sharded sparse experts (parallel.expert_sharding = fssdp;
// docs/parallelism.md). The experts are owned in contiguous blocks over the group (the
// dp ranks: `placement`, or the layer's re-planned blocks, RoutingPlan::owner_bounds,
// with parallel.reshard_interval), and each step every rank derives from the gathered row
// counts the same holders of every expert (fssdp_plan.h: owners plus replicas of the
// busy experts) and the same split of every source's rows over them. One all_to_all_v
// then moves each kept row to its holder, where the local experts are the owned block
// followed by the replicas (the order GroupedExperts::materialize lays out).
//
// The handle's plan stays the router's plan (slots in expert order); the state keeps
// the permutation between slot order and send order (by destination, then local
// expert, then token), so combine and the backward passes reverse the exchange and
// leave rows in slot order as the all-to-all dispatcher does. Counts come from the
// plan's group counts when they cover the group, else from one all-gather of each
// rank's [E] counts.

#include <memory>
#include <vector>

#include "framework/moe/dispatcher.h"
#include "framework/moe/fssdp_plan.h"
#include "framework/parallel/communicator.h"
#include "framework/parallel/sparse_collectives.h"

namespace moe {

struct FssdpState final : DispatchState {
  SparseItems items;               // owners and holders of every expert (item size unset)
  std::vector<int32_t> send_slot;  // [S] the slot of each row in send order
  std::vector<int32_t> slot_pos;   // [S] the send position of each slot
  std::vector<int64_t> send_rows, recv_rows;  // [R] rows to and from each rank
  std::vector<int64_t> recv_counts;  // [R * L] rows of local expert i from source s
  int64_t num_local = 0;             // L: experts this rank computes
  std::shared_ptr<Buffer> returned;  // (S, C) expert outputs in slot order (combine)
};

class FssdpDispatcher final : public Dispatcher {
 public:
  // group: the ranks the experts are sharded over (placement.ep_size == group.size());
  // slots: parallel.materialize_slots; node [R]: the node of every group rank, whose
  // rows prefer replicas on their node (fssdp_plan.h; empty: one node). The group must
  // outlive the dispatcher.
  FssdpDispatcher(Communicator& group, ExpertPlacement placement, int slots,
                  std::vector<int> node = {});

  DispatchHandle dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) override;
  void combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) override;
  void combine_backward(const DispatchHandle& handle, Tensor expert_out, Tensor dy,
                        Tensor d_expert_out, float* dweights) override;
  void dispatch_backward(const DispatchHandle& handle, Tensor d_rows, Tensor dx) override;

 private:
  std::vector<int64_t> gathered_counts(const RoutingPlan& plan);
  // rows in send order -> expert-major rows of the local experts, and back
  void to_experts(const FssdpState& state, Tensor send_order, Tensor expert_rows);
  void to_sources(const FssdpState& state, Tensor expert_rows, Tensor send_order);

  Communicator& group_;
  ExpertPlacement placement_;
  int slots_;
  std::vector<int> node_;  // [R] node of every group rank; empty: one node
  RowStoragePool storage_, returned_;
  Buffer scratch_a_, scratch_b_, scratch_c_;  // (S, C) send order; staged receive; slot order
};

}  // namespace moe
