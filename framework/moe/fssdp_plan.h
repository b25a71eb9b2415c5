#pragma once
// Where the experts of one MoE layer are computed in one step under sharded sparse
// experts (parallel.expert_sharding = fssdp; docs/parallelism.md): pure functions of the
// step's row counts, so that every rank computes the same plan from the same gathered
// counts and no plan is ever exchanged.
//
//   owners     expert e is owned by placement.owner(e) (contiguous blocks over the dp
//              group), which alone keeps its weights and AdamW moments between steps;
//   holders    the ranks computing e this step: its owner plus the ranks that
//              materialise a replica, at most `slots` replicas per rank (plan_holders);
//   split      which holder a source rank's rows of e go to (split_rows): all of them to
//              the source itself when it holds e, else evenly over the holders on the
//              source's node when there are any, else over all holders, the remainder
//              going to those holders from position (source mod their number) on.
//
// node [R]: the node of every rank (parallel.ranks_per_node or MPI's shared-memory
// split, framework/parallel/topology.h); empty: one node. The replica plan evaluates its
// choices with the same split, so it sees that a replica on a source's node draws all of
// that node's rows.
//
// counts [R * E]: rows (kept assignments) of expert e on source rank s at s * E + e.

#include <cstdint>
#include <span>
#include <vector>

#include "framework/moe/placement.h"

namespace moe {

using Holders = std::vector<std::vector<int>>;  // [E] ranks computing expert e, ascending

// Rows of `source`'s `rows` rows of an expert held by `holders` that go to `dest`.
int64_t split_rows(const std::vector<int>& holders, int source, int64_t rows, int dest,
                   std::span<const int> node = {});
// Rows every rank computes under `holders` ([R]).
std::vector<int64_t> rows_per_rank(std::span<const int64_t> counts, const Holders& holders,
                                   int ranks, std::span<const int> node = {});
// Greedy form of Hecate's materialisation: start from the owners; while it lowers the
// busiest rank's rows, or keeps them and leaves fewer ranks that busy (so that ranks tied
// at the maximum are relieved one after the other), give one of the busiest rank's
// experts a replica on another rank with a free slot, the pair that leaves the lowest
// (maximum, ranks at the maximum) (ties: lower expert, lower rank).
Holders plan_holders(std::span<const int64_t> counts, const ExpertPlacement& placement,
                     int slots, std::span<const int> node = {});
// The experts rank r computes, in the order of its expert-ordered rows: the block it
// owns, then its replicas in ascending order.
std::vector<int64_t> computed_experts(const Holders& holders, const ExpertPlacement& placement,
                                      int rank);

}  // namespace moe
