#include "framework/moe/routing_plan.h"

#include <algorithm>
#include <cmath>
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
                               RoutingPriority priority) {
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

  // Admission: an assignment is kept while its expert has room.
  std::vector<bool> kept(static_cast<size_t>(n_assign), false);
  for (int64_t a : admission_order(priority, weights, num_tokens, top_k)) {
    const int32_t e = experts[a];
    ++plan.counts_before[e];
    if (capacity < 0 || plan.counts_after[e] < capacity) {
      ++plan.counts_after[e];
      kept[a] = true;
    }
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

}  // namespace moe
