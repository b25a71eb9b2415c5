#pragma once
// ExpertPlacement: which experts of a layer live on which expert-parallel rank.
//
// Contiguous blocks: ep rank r holds experts [first(r), first(r) + count(r)). When ep
// does not divide E, the first E % ep ranks hold one expert more than the others
// (E = 10, ep = 4: 3, 3, 2, 2). Every rank of an ep group holds at least one expert
// (ep <= E, checked by the config). Sharded sparse experts with re-planned owners
// (parallel.reshard_interval, ownership_plan.h) set `bounds` instead: blocks of any
// sizes >= 1.
//
// Token order is preserved by the placement: expert e's rows, wherever e lives, are
// the assignments of the global batch to e in (choice, token) order, so a layer
// computes the same rows whatever the layout.

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace moe {

struct ExpertPlacement {
  int64_t num_experts = 0;  // E, all experts of the layer
  int ep_size = 1;
  int ep_rank = 0;
  // [ep_size + 1] the first expert of every rank, then E; empty: the even blocks above
  std::vector<int64_t> bounds;

  ExpertPlacement() = default;
  ExpertPlacement(int64_t experts, int size, int rank, std::vector<int64_t> blocks = {})
      : num_experts(experts), ep_size(size), ep_rank(rank), bounds(std::move(blocks)) {}

  // Every expert on this one rank.
  static ExpertPlacement single(int64_t num_experts) { return {num_experts, 1, 0}; }

  int64_t first(int rank) const;  // global index of rank's first expert
  int64_t count(int rank) const;  // experts rank holds
  int owner(int64_t expert) const;  // ep rank holding `expert`
  int64_t first_local() const { return first(ep_rank); }
  int64_t num_local() const { return count(ep_rank); }
};

// Which node every expert lives on, seen from this rank's tokens: the nodes of the ep
// group (framework/parallel/topology.h), numbered 0 .. num_nodes-1. Node-limited routing,
// the locality loss and the node-local share of the telemetry read it. One process, or
// an ep group inside one node: every expert and token on node 0.
struct ExpertLocality {
  int num_nodes = 1;
  std::vector<int> expert_node;  // [E] node of each expert's owner
  int token_node = 0;            // node of this rank, whose tokens the layer routes

  static ExpertLocality single(int64_t num_experts) {
    return {1, std::vector<int>(static_cast<size_t>(num_experts), 0), 0};
  }
  // ep_rank_node [ep]: node of each ep rank (NodeMap::node of the ep group).
  static ExpertLocality of(const ExpertPlacement& placement,
                           const std::vector<int>& ep_rank_node, int num_nodes);
  // Experts on node n.
  int64_t experts_on(int node) const;
};

}  // namespace moe
