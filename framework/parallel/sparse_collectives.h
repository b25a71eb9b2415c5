#pragma once
// The two collectives of fully sharded sparse experts (Hecate's SparseAllGather and
// SparseReduceScatter, arXiv 2502.02581; parallel.expert_sharding = fssdp,
// framework/moe/experts.h), and the move of owned items that a re-shard of ownership
// needs (parallel.reshard_interval, framework/train/expert_ownership.h).
//
// Items are the unit of ownership (one expert's weights, `item` floats each). Every item
// has one owner and a set of holders, the ranks that compute it this step (its owner
// among them); owners are nondecreasing in the item index (each rank owns a contiguous
// range), and every rank passes the same owners and holders.
//
//   sparse_all_gather      every holder that is not the owner receives the owner's item:
//                          replicas = the held, not owned items, in item order
//   sparse_reduce_scatter  every owner adds the holders' gradients of its items to its
//                          own, in ascending rank order of the holders (a fixed order:
//                          the same rounding on every run of a layout)
//
// Both are one all_to_all_v over `group` in which only the items move: a rank sends each
// of its items once to every other holder (and back), so the job moves exactly
// sum over items of (holders - 1) * item floats each way, lambda * S in Hecate's terms.
// No counts are exchanged: every rank derives them from the owners and holders.
//
//   sparse_move            a change of owners (a re-shard): every item whose owner changes
//                          goes from the old owner to the new one

#include <cstdint>
#include <span>
#include <vector>

#include "framework/parallel/communicator.h"

namespace moe {

struct SparseItems {
  std::vector<int> owner;                 // [I] owner rank of each item, nondecreasing
  std::vector<std::vector<int>> holders;  // [I] ranks holding each item, ascending, owner in
  int64_t item = 0;                       // floats per item

  // Items `rank` owns, and those it holds without owning, in item order.
  std::vector<int64_t> owned(int rank) const;
  std::vector<int64_t> replicas(int rank) const;
};

// owned [owned(rank) x item] the owner's values; replicas [replicas(rank) x item] filled.
void sparse_all_gather(Communicator& group, const SparseItems& items,
                       std::span<const float> owned, std::span<float> replicas);

// replica_grads [replicas(rank) x item] this rank's gradients of the items it holds without
// owning; owned_grads [owned(rank) x item] this rank's own gradients, to which the other
// holders' are added.
void sparse_reduce_scatter(Communicator& group, const SparseItems& items,
                           std::span<const float> replica_grads, std::span<float> owned_grads);

// from, to [I]: the owner of every item before and after (both nondecreasing); item floats
// per item. src holds this rank's items under `from`, in item order; returns its items
// under `to`, in item order.
std::vector<float> sparse_move(Communicator& group, std::span<const int> from,
                               std::span<const int> to, int64_t item, std::span<const float> src);

}  // namespace moe
