#pragma once
// ExpertPlacement: which experts of a layer live on which expert-parallel rank.
//
// Contiguous blocks: ep rank r holds experts [first(r), first(r) + count(r)). When ep
// does not divide E, the first E % ep ranks hold one expert more than the others
// (E = 10, ep = 4: 3, 3, 2, 2). Every rank of an ep group holds at least one expert
// (ep <= E, checked by the config).
//
// Token order is preserved by the placement: expert e's rows, wherever e lives, are
// the assignments of the global batch to e in (choice, token) order, so a layer
// computes the same rows whatever the layout.

#include <cstdint>

namespace moe {

struct ExpertPlacement {
  int64_t num_experts = 0;  // E, all experts of the layer
  int ep_size = 1;
  int ep_rank = 0;

  // Every expert on this one rank.
  static ExpertPlacement single(int64_t num_experts) { return {num_experts, 1, 0}; }

  int64_t first(int rank) const;  // global index of rank's first expert
  int64_t count(int rank) const;  // experts rank holds
  int owner(int64_t expert) const;  // ep rank holding `expert`
  int64_t first_local() const { return first(ep_rank); }
  int64_t num_local() const { return count(ep_rank); }
};

}  // namespace moe
