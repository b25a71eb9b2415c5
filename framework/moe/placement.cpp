#include "framework/moe/placement.h"

#include <algorithm>

#include "framework/core/error.h"

namespace moe {

int64_t ExpertPlacement::count(int rank) const {
  MOE_CHECK(rank >= 0 && rank < ep_size, "expert placement: rank ", rank, " of ", ep_size);
  return num_experts / ep_size + (rank < num_experts % ep_size ? 1 : 0);
}

int64_t ExpertPlacement::first(int rank) const {
  MOE_CHECK(rank >= 0 && rank <= ep_size, "expert placement: rank ", rank, " of ", ep_size);
  const int64_t base = num_experts / ep_size, extra = num_experts % ep_size;
  // ranks below `extra` hold base + 1 experts
  return rank * base + std::min<int64_t>(rank, extra);
}

int ExpertPlacement::owner(int64_t expert) const {
  MOE_CHECK(expert >= 0 && expert < num_experts, "expert placement: expert ", expert, " of ",
            num_experts);
  const int64_t base = num_experts / ep_size, extra = num_experts % ep_size;
  const int64_t in_wide = extra * (base + 1);  // experts held by the wider ranks
  if (expert < in_wide) return static_cast<int>(expert / (base + 1));
  return static_cast<int>(extra + (expert - in_wide) / base);
}

}  // namespace moe
