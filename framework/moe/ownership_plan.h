#pragma once
// Who owns which experts of one MoE layer under sharded sparse experts with re-planned
// ownership (parallel.reshard_interval; docs/parallelism.md): a pure function of the
// layer's loads, so every rank derives the same owners from the same gathered counts
// and no plan is exchanged (Hecate's heterogeneous sharding, arXiv 2502.02581: a rank
// may own more or fewer experts of a layer than another, and layers differ).
//
// Owners stay contiguous blocks (ExpertPlacement::bounds), each of at least one expert:
// a block is then a hyperslab of each (E, ., .) parameter, so checkpoints, the sparse
// collectives and the expert GEMMs need no permutation. Among the block splits:
//   1. the lowest maximum of the owners' loads (the busiest owner's rows, weight bytes
//      it serves and gradients it receives: the owner is a holder of every replica);
//   2. then the lowest sum of squared owner loads (balance below the maximum);
//   3. then the lowest sum of squared block sizes (even memory when loads tie);
//   4. then, of equal splits, the one whose last block starts earliest (and so on for
//      the blocks before it).
// All in integers: the plan is exact and the same on every rank.
//
// loads [E]: the rows of each expert over the window (kept assignments, all ranks).

#include <cstdint>
#include <span>
#include <vector>

namespace moe {

// Bounds [ranks + 1] of the blocks (ExpertPlacement::bounds): rank r owns experts
// [bounds[r], bounds[r + 1]). Needs 1 <= ranks <= E and loads >= 0.
std::vector<int64_t> plan_ownership(std::span<const int64_t> loads, int ranks);

}  // namespace moe
