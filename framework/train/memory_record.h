#pragma once
// Per-rank figures of the training state, gathered over the world for the records.
//
// Bytes each rank holds of the training state, from the buffers as allocated (not an
// estimate): parameters (fp32 values), their gradients and the AdamW moments. With
// parallel.shard_optimizer a rank's optimizer state is its 1/n slices
// (framework/parallel/grad_sync.h). With parallel.expert_sharding = fssdp also the peak
// over the steps of the replicas it materialised (values and gradients; 0 otherwise):
// every MoE layer's at once after a forward, or with parallel.rematerialize the most one
// layer held (the others have released theirs).
//
//   {"parameter_bytes": [rank 0, rank 1, ...], "gradient_bytes": [...],
//    "optimizer_state_bytes": [...], "replica_bytes": [...]}

#include <vector>

#include "framework/moe/moe_layer.h"
#include "framework/optim/adamw.h"
#include "framework/parallel/communicator.h"
#include "framework/tensor/param_store.h"
#include <nlohmann/json.hpp>

namespace moe {

// Collective over `world`: every rank's figures, in world-rank order. replica_bytes:
// this rank's peak of fssdp's materialised replicas (replica_bytes below), listed as
// "replica_bytes".
nlohmann::json memory_record(const ParamStore& store, const AdamW& optimizer,
                             int64_t replica_bytes, Communicator& world);

// Bytes of the materialised expert replicas (values and gradients) the layers hold now,
// from their buffers as allocated: after a forward, every layer's replicas at once.
int64_t replica_bytes(const std::vector<MoELayer*>& layers);
// The most replica bytes one layer has held at once (GroupedExperts::replica_peak).
int64_t layer_replica_peak(const std::vector<MoELayer*>& layers);

// Rows the ranks' experts computed in a MoE layer's last forward: the busiest rank sets
// the pace of expert parallelism, so max / mean is the imbalance that matters for time.
struct RankBalance {
  int64_t max = 0;
  double mean = 0.0;
  double max_over_mean() const { return mean > 0.0 ? static_cast<double>(max) / mean : 1.0; }
};
// Collective over `world`: one entry per layer.
std::vector<RankBalance> rank_balance(const std::vector<MoELayer*>& layers,
                                      Communicator& world);

}  // namespace moe
