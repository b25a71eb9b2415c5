#include "framework/moe/fssdp_plan.h"

#include <algorithm>
#include <utility>

#include "framework/core/error.h"

namespace moe {

namespace {

bool holds(const std::vector<int>& holders, int rank) {
  return std::binary_search(holders.begin(), holders.end(), rank);
}

}  // namespace

int64_t split_rows(const std::vector<int>& holders, int source, int64_t rows, int dest,
                   std::span<const int> node) {
  if (holds(holders, source)) return dest == source ? rows : 0;
  auto near = [&](int rank) { return node.empty() || node[rank] == node[source]; };
  const bool local = std::any_of(holders.begin(), holders.end(), near);
  if (local && !near(dest)) return 0;  // a holder on the source's node takes its rows
  const auto at = std::lower_bound(holders.begin(), holders.end(), dest);
  if (at == holders.end() || *at != dest) return 0;
  // position of dest among the holders the rows go to, and their number
  const auto counted = [&](auto first, auto last) {
    return local ? std::count_if(first, last, near) : last - first;
  };
  const int64_t h = counted(holders.begin(), holders.end());
  const int64_t position = counted(holders.begin(), at);
  // the remainder goes to the holders at positions source, source + 1, ... (mod h)
  const int64_t after = ((position - source) % h + h) % h;
  return rows / h + (after < rows % h ? 1 : 0);
}

std::vector<int64_t> rows_per_rank(std::span<const int64_t> counts, const Holders& holders,
                                   int ranks, std::span<const int> node) {
  const int64_t experts = static_cast<int64_t>(holders.size());
  std::vector<int64_t> rows(static_cast<size_t>(ranks), 0);
  for (int64_t e = 0; e < experts; ++e)
    for (int s = 0; s < ranks; ++s) {
      const int64_t n = counts[s * experts + e];
      if (n == 0) continue;
      for (int d : holders[e]) rows[d] += split_rows(holders[e], s, n, d, node);
    }
  return rows;
}

Holders plan_holders(std::span<const int64_t> counts, const ExpertPlacement& placement,
                     int slots, std::span<const int> node) {
  const int ranks = placement.ep_size;
  const int64_t experts = placement.num_experts;
  MOE_CHECK(static_cast<int64_t>(counts.size()) == ranks * experts, "fssdp plan: ",
            counts.size(), " counts for ", ranks, " ranks x ", experts, " experts");
  Holders holders(static_cast<size_t>(experts));
  for (int64_t e = 0; e < experts; ++e) holders[e] = {placement.owner(e)};
  std::vector<int> used(static_cast<size_t>(ranks), 0);
  // (the busiest rank's rows, how many ranks have as many): a step must lower it, so
  // ranks tied at the maximum are relieved one after the other
  auto load = [](const std::vector<int64_t>& rows) {
    const int64_t top = *std::max_element(rows.begin(), rows.end());
    return std::pair{top, std::count(rows.begin(), rows.end(), top)};
  };
  for (;;) {
    const std::vector<int64_t> rows = rows_per_rank(counts, holders, ranks, node);
    const int busiest = static_cast<int>(std::max_element(rows.begin(), rows.end()) - rows.begin());
    std::pair<int64_t, int64_t> best = load(rows);
    int64_t best_e = -1;
    int best_r = -1;
    for (int64_t e = 0; e < experts; ++e) {
      if (!holds(holders[e], busiest)) continue;
      for (int r = 0; r < ranks; ++r) {
        if (used[r] >= slots || holds(holders[e], r)) continue;
        std::vector<int>& h = holders[e];
        h.insert(std::lower_bound(h.begin(), h.end(), r), r);
        const std::vector<int64_t> trial = rows_per_rank(counts, holders, ranks, node);
        h.erase(std::lower_bound(h.begin(), h.end(), r));
        const std::pair<int64_t, int64_t> m = load(trial);
        if (m < best) {
          best = m;
          best_e = e;
          best_r = r;
        }
      }
    }
    if (best_e < 0) return holders;
    std::vector<int>& h = holders[best_e];
    h.insert(std::lower_bound(h.begin(), h.end(), best_r), best_r);
    ++used[best_r];
  }
}

std::vector<int64_t> computed_experts(const Holders& holders, const ExpertPlacement& placement,
                                      int rank) {
  std::vector<int64_t> out;
  for (int64_t e = placement.first(rank); e < placement.first(rank + 1); ++e) out.push_back(e);
  for (int64_t e = 0; e < static_cast<int64_t>(holders.size()); ++e)
    if (placement.owner(e) != rank && holds(holders[e], rank)) out.push_back(e);
  return out;
}

}  // namespace moe
