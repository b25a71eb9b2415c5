#include "framework/moe/placement.h"

#include <algorithm>

#include "framework/core/error.h"

namespace moe {

int64_t ExpertPlacement::count(int rank) const {
  MOE_CHECK(rank >= 0 && rank < ep_size, "expert placement: rank ", rank, " of ", ep_size);
  if (!bounds.empty()) return bounds[rank + 1] - bounds[rank];
  return num_experts / ep_size + (rank < num_experts % ep_size ? 1 : 0);
}

int64_t ExpertPlacement::first(int rank) const {
  MOE_CHECK(rank >= 0 && rank <= ep_size, "expert placement: rank ", rank, " of ", ep_size);
  if (!bounds.empty()) return bounds[rank];
  const int64_t base = num_experts / ep_size, extra = num_experts % ep_size;
  // ranks below `extra` hold base + 1 experts
  return rank * base + std::min<int64_t>(rank, extra);
}

int ExpertPlacement::owner(int64_t expert) const {
  MOE_CHECK(expert >= 0 && expert < num_experts, "expert placement: expert ", expert, " of ",
            num_experts);
  if (!bounds.empty())  // the last rank whose block starts at or before `expert`
    return static_cast<int>(std::upper_bound(bounds.begin(), bounds.end(), expert) -
                            bounds.begin()) - 1;
  const int64_t base = num_experts / ep_size, extra = num_experts % ep_size;
  const int64_t in_wide = extra * (base + 1);  // experts held by the wider ranks
  if (expert < in_wide) return static_cast<int>(expert / (base + 1));
  return static_cast<int>(extra + (expert - in_wide) / base);
}

ExpertLocality ExpertLocality::of(const ExpertPlacement& placement,
                                  const std::vector<int>& ep_rank_node, int num_nodes) {
  MOE_CHECK(static_cast<int>(ep_rank_node.size()) == placement.ep_size,
            "expert locality: nodes of ", ep_rank_node.size(), " ep ranks, placement over ",
            placement.ep_size);
  ExpertLocality loc;
  loc.num_nodes = num_nodes;
  loc.expert_node.resize(static_cast<size_t>(placement.num_experts));
  for (int64_t e = 0; e < placement.num_experts; ++e)
    loc.expert_node[e] = ep_rank_node[placement.owner(e)];
  loc.token_node = ep_rank_node[placement.ep_rank];
  return loc;
}

int64_t ExpertLocality::experts_on(int node) const {
  int64_t count = 0;
  for (int n : expert_node) count += n == node ? 1 : 0;
  return count;
}

}  // namespace moe
