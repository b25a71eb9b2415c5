#include "framework/moe/ownership_plan.h"

#include <algorithm>
#include <limits>
#include <tuple>

#include "framework/core/error.h"

namespace moe {

namespace {

constexpr int64_t kNone = std::numeric_limits<int64_t>::max();

// The lowest achievable maximum block load (criterion 1): the classic linear-partition
// recurrence over prefixes, best[r][j] = min_i max(best[r-1][i], load[i, j)).
int64_t lowest_maximum(const std::vector<int64_t>& prefix, int ranks) {
  const int64_t experts = static_cast<int64_t>(prefix.size()) - 1;
  std::vector<int64_t> best(prefix.begin(), prefix.end()), next(prefix.size(), kNone);
  for (int r = 2; r <= ranks; ++r) {  // blocks may be empty: i == j
    std::fill(next.begin(), next.end(), kNone);
    for (int64_t j = 0; j <= experts; ++j)
      for (int64_t i = 0; i <= j; ++i)
        next[j] = std::min(next[j], std::max(best[i], prefix[j] - prefix[i]));
    best.swap(next);
  }
  return best[experts];
}

}  // namespace

std::vector<int64_t> plan_ownership(std::span<const int64_t> loads, int ranks) {
  const int64_t experts = static_cast<int64_t>(loads.size());
  MOE_CHECK(ranks >= 1 && experts >= 1, "ownership plan: ", ranks, " ranks for ", experts,
            " experts");
  std::vector<int64_t> prefix(loads.size() + 1, 0);  // [E + 1] load of experts [0, j)
  for (int64_t e = 0; e < experts; ++e) {
    MOE_CHECK(loads[e] >= 0, "ownership plan: load ", loads[e], " of expert ", e);
    prefix[e + 1] = prefix[e] + loads[e];
  }
  const int64_t cap = lowest_maximum(prefix, ranks);
  // Criteria 2 and 3 are sums over the blocks, so the best split of a prefix into r
  // blocks extends to the best of the whole (with every block at most `cap`).
  using Cost = std::tuple<int64_t, int64_t>;  // (sum of squared loads, of squared sizes)
  const Cost kInfinite{kNone, kNone};
  std::vector<std::vector<Cost>> cost(static_cast<size_t>(ranks) + 1,
                                      std::vector<Cost>(prefix.size(), kInfinite));
  std::vector<std::vector<int64_t>> start(cost.size(), std::vector<int64_t>(prefix.size(), -1));
  cost[0][0] = {0, 0};
  for (int r = 1; r <= ranks; ++r)
    for (int64_t j = 0; j <= experts; ++j)
      for (int64_t i = 0; i <= j; ++i) {  // ascending: ties keep the earliest start
        const int64_t load = prefix[j] - prefix[i], size = j - i;
        if (load > cap || cost[r - 1][i] == kInfinite) continue;
        const Cost c{std::get<0>(cost[r - 1][i]) + load * load,
                     std::get<1>(cost[r - 1][i]) + size * size};
        if (c < cost[r][j]) {
          cost[r][j] = c;
          start[r][j] = i;
        }
      }
  std::vector<int64_t> bounds(static_cast<size_t>(ranks) + 1, experts);
  for (int r = ranks; r >= 1; --r) bounds[r - 1] = start[r][bounds[r]];
  MOE_CHECK(bounds[0] == 0, "ownership plan: no split of ", experts, " experts over ", ranks,
            " ranks");
  return bounds;
}

}  // namespace moe
