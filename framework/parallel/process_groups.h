#pragma once
// The process groups of this rank: one Communicator per group kind of the rank grid
// (rank_grid.h), split once at start-up and passed explicitly (STYLE rule 5).
//
//   ProcessGroups groups = make_process_groups(env, config.parallel);
//   groups.dp->all_reduce(dense_grads);   // replicated parameters
//   groups.edp->all_reduce(expert_grads); // expert parameters
//   groups.ep->all_to_all_v(...);         // token dispatch
//
// Invariant: get(g).rank() == grid.coord(g, world rank) and get(g).size() ==
// grid.size(g) for every kind g; the members of get(g) are grid.members(g, rank).

#include <cstdint>
#include <memory>
#include <string_view>

#include "framework/config/config.h"
#include "framework/parallel/communicator.h"
#include "framework/parallel/rank_grid.h"
#include "framework/parallel/topology.h"

namespace moe {

class MpiEnv;  // mpi_env.h; declared only, so users of ProcessGroups need no mpi.h

struct ProcessGroups {
  RankGrid grid;
  Topology topology;  // node of every world rank (parallel.ranks_per_node or MPI)
  std::unique_ptr<Communicator> world, dp, tp, ep, edp, etp;

  Communicator& get(Group g) const;
  // The nodes of this rank's group of kind g (topology restricted to its members).
  NodeMap nodes(Group g) const;
};

// Builds the grid (user errors for sizes that do not factor), checks that every rank
// was given the same layout, discovers the topology (parallel.ranks_per_node, else
// MPI's shared-memory split), then splits world once per group kind (color = group
// index, key = group-rank). Every communicator knows the node of each of its ranks, so
// its statistics split bytes into intra- and inter-node. Collective over the world.
ProcessGroups make_process_groups(const MpiEnv& env, const ParallelConfig& parallel,
                                  std::string_view order = kDefaultRankOrder);

// Collective over `world`: all-gathers the 64-bit FNV-1a hash of `text` (hash_name)
// and, if any rank's differs from rank 0's, throws the same user error on every rank:
//   "config differs between ranks: rank 0 vs rank 3 (<what>; ...)".
void check_same_on_all_ranks(Communicator& world, std::string_view text,
                             std::string_view what);

}  // namespace moe
