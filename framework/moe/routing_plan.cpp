#include "framework/moe/routing_plan.h"

#include <algorithm>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <numeric>

#include "framework/core/error.h"

namespace moe {

namespace {

// Assignment indices a = t*K + k in the order they are admitted against capacity.
std::vector<int64_t> admission_order(RoutingPriority priority, std::span<const float> weights,
                                     int64_t num_tokens, int64_t top_k) {
  // Token order within each round of choices.
  std::vector<int64_t> tokens(static_cast<size_t>(num_tokens));
  std::iota(tokens.begin(), tokens.end(), int64_t{0});
  if (priority == RoutingPriority::kBatchPriority) {
    std::vector<float> score(static_cast<size_t>(num_tokens));
    for (int64_t t = 0; t < num_tokens; ++t)
      score[t] = *std::max_element(weights.begin() + t * top_k,
                                   weights.begin() + (t + 1) * top_k);
    std::stable_sort(tokens.begin(), tokens.end(),
                     [&](int64_t a, int64_t b) { return score[a] > score[b]; });
  }
  std::vector<int64_t> order;
  order.reserve(static_cast<size_t>(num_tokens * top_k));
  for (int64_t k = 0; k < top_k; ++k)
    for (int64_t t : tokens) order.push_back(t * top_k + k);
  return order;
}

void check_choices(std::span<const int32_t> experts, int64_t num_tokens, int64_t top_k,
                   int64_t num_experts) {
  for (int64_t t = 0; t < num_tokens; ++t)
    for (int64_t k = 0; k < top_k; ++k) {
      const int32_t e = experts[t * top_k + k];
      MOE_CHECK(e >= 0 && e < num_experts, "routing: token ", t, " chose expert ", e,
                " of ", num_experts);
      for (int64_t j = 0; j < k; ++j)
        MOE_CHECK(experts[t * top_k + j] != e, "routing: token ", t,
                  " chose expert ", e, " twice");
    }
}

}  // namespace

int64_t expert_capacity(float capacity_factor, int64_t num_tokens, int64_t top_k,
                        int64_t num_experts) {
  if (capacity_factor <= 0.0f) return -1;
  const double exact = static_cast<double>(capacity_factor) *
                       static_cast<double>(num_tokens * top_k) /
                       static_cast<double>(num_experts);
  return static_cast<int64_t>(std::ceil(exact * (1.0 - 1e-7)));
}

RoutingPlan build_routing_plan(std::span<const int32_t> experts,
                               std::span<const float> weights, int64_t num_tokens,
                               int64_t top_k, int64_t num_experts, int64_t capacity,
                               const Admission& admission) {
  const std::span<const int64_t> queued_ahead = admission.queued_ahead;
  const int64_t n_assign = num_tokens * top_k;
  MOE_CHECK(static_cast<int64_t>(experts.size()) == n_assign &&
                static_cast<int64_t>(weights.size()) == n_assign,
            "routing plan: expected ", n_assign, " choices and weights, got ",
            experts.size(), " and ", weights.size());
  check_choices(experts, num_tokens, top_k, num_experts);

  RoutingPlan plan;
  plan.num_tokens = num_tokens;
  plan.top_k = top_k;
  plan.num_experts = num_experts;
  plan.capacity = capacity;
  plan.expert.assign(experts.begin(), experts.end());
  plan.weight.assign(weights.begin(), weights.end());
  plan.counts_before.assign(static_cast<size_t>(num_experts), 0);
  plan.counts_after.assign(static_cast<size_t>(num_experts), 0);

  MOE_CHECK(queued_ahead.empty() ||
                (static_cast<int64_t>(queued_ahead.size()) == top_k * num_experts &&
                 admission.priority == RoutingPriority::kChoiceMajor),
            "routing plan: queued_ahead needs choice-major priority and ", top_k * num_experts,
            " entries, got ", queued_ahead.size());
  MOE_CHECK(admission.kept.empty() || static_cast<int64_t>(admission.kept.size()) == n_assign,
            "routing plan: ", admission.kept.size(), " kept flags for ", n_assign,
            " assignments");
  // Admission: an assignment is kept iff its position in its expert's queue is below
  // the capacity. Without queued_ahead the queue is this rank's alone; in choice-major
  // order the position is the expert's running count.
  std::vector<bool> kept(static_cast<size_t>(n_assign), false);
  std::vector<int64_t> position(static_cast<size_t>(top_k * num_experts), 0);  // [K, E]
  if (!queued_ahead.empty()) position.assign(queued_ahead.begin(), queued_ahead.end());
  for (int64_t a : admission_order(admission.priority, weights, num_tokens, top_k)) {
    const int32_t e = experts[a];
    const int64_t k = a % top_k;
    ++plan.counts_before[e];
    int64_t& pos = queued_ahead.empty() ? position[e] : position[k * num_experts + e];
    const bool keep = admission.kept.empty() ? capacity < 0 || pos < capacity
                                             : admission.kept[a] != 0;
    if (keep) {
      ++plan.counts_after[e];
      kept[a] = true;
    }
    ++pos;
  }

  plan.expert_offsets.assign(static_cast<size_t>(num_experts + 1), 0);
  for (int64_t e = 0; e < num_experts; ++e)
    plan.expert_offsets[e + 1] = plan.expert_offsets[e] + plan.counts_after[e];

  // Slots: walking tokens in order fills each expert's range in token order.
  std::vector<int64_t> cursor(plan.expert_offsets.begin(), plan.expert_offsets.end() - 1);
  plan.slot.assign(static_cast<size_t>(n_assign), -1);
  plan.token_of_slot.assign(static_cast<size_t>(plan.num_slots()), -1);
  for (int64_t a = 0; a < n_assign; ++a) {
    if (!kept[a]) continue;
    const int64_t s = cursor[experts[a]]++;
    plan.slot[a] = static_cast<int32_t>(s);
    plan.token_of_slot[s] = static_cast<int32_t>(a / top_k);
  }
  return plan;
}

std::vector<int64_t> choice_counts(std::span<const int32_t> experts, int64_t num_tokens,
                                   int64_t top_k, int64_t num_experts) {
  std::vector<int64_t> counts(static_cast<size_t>(top_k * num_experts), 0);
  for (int64_t a = 0; a < num_tokens * top_k; ++a) ++counts[(a % top_k) * num_experts + experts[a]];
  return counts;
}

namespace {

// Walks every expert's global queue in admission order (choice 0 of rank 0, 1, ..., then
// choice 1, ...) and calls visit(rank, k, e, queued, count): `count` assignments of that
// rank's k-th choices of e, `queued` assignments ahead of them in e's queue.
template <typename Visit>
void walk_global_queues(std::span<const int64_t> all_counts, int ranks, int64_t top_k,
                        int64_t num_experts, const char* caller, Visit visit) {
  const int64_t ke = top_k * num_experts;
  MOE_CHECK(static_cast<int64_t>(all_counts.size()) == ranks * ke, caller, ": ",
            all_counts.size(), " counts for ", ranks, " ranks");
  for (int64_t e = 0; e < num_experts; ++e) {
    int64_t queued = 0;
    for (int64_t k = 0; k < top_k; ++k)
      for (int r = 0; r < ranks; ++r) {
        const int64_t c = all_counts[r * ke + k * num_experts + e];
        visit(r, k, e, queued, c);
        queued += c;
      }
  }
}

}  // namespace

std::vector<int64_t> queued_ahead_of_rank(std::span<const int64_t> all_counts, int ranks,
                                          int rank, int64_t top_k, int64_t num_experts) {
  MOE_CHECK(rank >= 0 && rank < ranks, "queued_ahead_of_rank: rank ", rank, " of ", ranks);
  std::vector<int64_t> ahead(static_cast<size_t>(top_k * num_experts), 0);
  walk_global_queues(all_counts, ranks, top_k, num_experts, "queued_ahead_of_rank",
                     [&](int r, int64_t k, int64_t e, int64_t queued, int64_t) {
                       if (r == rank) ahead[k * num_experts + e] = queued;
                     });
  return ahead;
}

std::vector<int64_t> kept_counts_of_ranks(std::span<const int64_t> all_counts, int ranks,
                                          int64_t top_k, int64_t num_experts,
                                          int64_t capacity) {
  std::vector<int64_t> kept(static_cast<size_t>(ranks * num_experts), 0);
  walk_global_queues(all_counts, ranks, top_k, num_experts, "kept_counts_of_ranks",
                     [&](int r, int64_t, int64_t e, int64_t queued, int64_t c) {
                       kept[r * num_experts + e] +=
                           capacity < 0 ? c : std::clamp<int64_t>(capacity - queued, 0, c);
                     });
  return kept;
}

}  // namespace moe
