#pragma once
// Who owns which experts of one MoE layer under sharded sparse experts with re-planned
// ownership (parallel.reshard_interval; docs/parallelism.md): a pure function of the
// layer's loads, so every rank derives the same owners from the same gathered counts
// and no plan is exchanged (Hecate's heterogeneous sharding, arXiv 2502.02581: a rank
// may own more or fewer experts of a layer than another, and layers differ).
//
// Owners stay contiguous blocks (ExpertPlacement::bounds) in rank order, each of zero or
// more experts: a block is then a hyperslab of each (E, ., .) parameter (an empty one
// selects nothing), so checkpoints, the sparse collectives and the expert GEMMs need no
// permutation. Among the block splits:
//   1. the lowest maximum of the owners' loads (the busiest owner's rows, weight bytes
//      it serves and gradients it receives: the owner is a holder of every replica);
//   2. then the lowest sum of squared owner loads (balance below the maximum);
//   3. then the lowest sum of squared block sizes (even memory when loads tie);
//   4. then, of equal splits, the one whose last block starts earliest (and so on for
//      the blocks before it).
// When a rank owns none: splitting a block of two or more experts in two never raises
// 1 or 2 and strictly lowers 3, so a split with an empty block is never the best while
// another rank owns two or more. Hence with E >= R every rank owns at least one expert
// (a hot expert's owner owns it alone when criterion 1 says so), and with E < R every
// owner owns exactly one and the R - E ranks that own none are the first (criterion 4:
// the last block starts at E - 1, not at E, and so on); a rank without experts still
// computes replicas (fssdp_plan.h).
// All in integers: the plan is exact and the same on every rank.
//
// loads [E]: the rows of each expert over the window (kept assignments, all ranks).

#include <cstdint>
#include <span>
#include <vector>

namespace moe {

// Bounds [ranks + 1] of the blocks (ExpertPlacement::bounds): rank r owns experts
// [bounds[r], bounds[r + 1]) (empty when equal). Needs ranks >= 1, E >= 1, loads >= 0.
std::vector<int64_t> plan_ownership(std::span<const int64_t> loads, int ranks);

}  // namespace moe
