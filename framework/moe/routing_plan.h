#pragma once
// RoutingPlan: where every (token, choice) assignment of one MoE layer goes.
//
// An assignment a = t*K + k is token t's k-th choice (k = 0 is the highest score).
// Kept assignments get a slot in the expert-ordered buffer (S, C): the slots of expert
// e are [expert_offsets[e], expert_offsets[e+1]), and within an expert the slots are
// in token order. Assignments over an expert's capacity are dropped (slot -1): their
// contribution is zero and the residual connection carries the token.
//
// The plan is a plain value built by a pure function of the chosen experts, their
// combine weights and the capacity, so dispatchers and tests can reason about it
// without a router.

#include <cstdint>
#include <span>
#include <vector>

namespace moe {

// Order in which assignments are admitted against the capacity.
enum class RoutingPriority : uint8_t {
  // GShard: all first choices in token order, then all second choices, and so on,
  // so a token's first choice is never dropped in favour of another's second.
  kChoiceMajor,
  // V-MoE Batch Priority Routing: the same choice-major rounds, but within a round the
  // tokens go in order of their priority max_k w_{t,k} (highest first, ties to the
  // lower token index), so confident tokens keep their experts when capacity is short.
  kBatchPriority,
};

struct RoutingPlan {
  int64_t num_tokens = 0;   // N
  int64_t top_k = 0;        // K
  int64_t num_experts = 0;  // E
  int64_t capacity = -1;    // C_e, assignments an expert may take; -1 = dropless

  std::vector<int32_t> expert;          // [N*K] chosen expert of assignment t*K+k
  std::vector<float> weight;            // [N*K] combine weight of the assignment
  std::vector<int32_t> slot;            // [N*K] row in the (S, C) buffer, -1 = dropped
  std::vector<int64_t> expert_offsets;  // [E+1] slots of expert e: [off[e], off[e+1])
  std::vector<int32_t> token_of_slot;   // [S] token whose row fills each slot
  std::vector<int64_t> counts_before;   // [E] assignments chosen, before dropping
  std::vector<int64_t> counts_after;    // [E] assignments kept, = rows of expert e
  // Under data parallelism: counts_after of every rank of the token group, [R * E] in
  // rank order (empty when unknown). Lets an all-to-all dispatcher size its receives
  // without exchanging counts.
  std::vector<int64_t> group_counts_after;
  // Sharded sparse experts with re-planned owners (parallel.reshard_interval): the
  // layer's ExpertPlacement::bounds [R + 1]; empty: the dispatcher's placement.
  std::vector<int64_t> owner_bounds;
  // Sharded sparse experts with a load window (parallel.load_window > 1): the [R * E]
  // counts the replica plan reads (load_window.h); empty: group_counts_after.
  std::vector<int64_t> window_counts;

  int64_t num_assignments() const { return num_tokens * top_k; }
  int64_t num_slots() const { return expert_offsets.empty() ? 0 : expert_offsets.back(); }
  int64_t num_dropped() const { return num_assignments() - num_slots(); }
};

// Per-expert capacity C_e = ceil(cf * N * K / E) for cf > 0, or -1 (dropless) for
// cf <= 0. cf arrives as a float (1.1f = 1.10000002), so the product is shrunk by a
// relative 1e-7 before rounding up: cf = 1.1 with N*K/E = 10 gives 11, not 12.
int64_t expert_capacity(float capacity_factor, int64_t num_tokens, int64_t top_k,
                        int64_t num_experts);

// How assignments are admitted against the capacity.
//
// On one process the N tokens are the whole batch and only `priority` matters. Under
// data parallelism they are one rank's slice of the global batch, the capacity is that
// of the global batch, and the plan must keep exactly what one process holding the
// whole batch keeps. Two ways, both exact:
//   queued_ahead [K*E] (choice-major priority): for choice k and expert e, the
//     assignments of the global batch admitted before this rank's k-th choices of e:
//     all (k' < k) choices of every rank plus the k-th choices of the ranks before it
//     (choice_counts and queued_ahead_of_rank below); an assignment is kept iff its
//     position in its expert's global queue is below the capacity;
//   kept [N*K]: the decision made elsewhere (batch priority, whose order within a round
//     depends on every rank's priorities: the caller plans the gathered global batch
//     and passes its slice of the kept flags).
struct Admission {
  RoutingPriority priority = RoutingPriority::kChoiceMajor;
  std::span<const int64_t> queued_ahead;  // empty: this rank's queue is the whole queue
  std::span<const uint8_t> kept;          // empty: decide here
};

// Builds the plan from the chosen experts [N*K] (distinct within a token, each in
// [0, E)) and their combine weights [N*K]. capacity < 0 keeps every assignment.
RoutingPlan build_routing_plan(std::span<const int32_t> experts,
                               std::span<const float> weights, int64_t num_tokens,
                               int64_t top_k, int64_t num_experts, int64_t capacity,
                               const Admission& admission = {});

// counts [K*E]: this rank's k-th choices of expert e, at k*E + e.
std::vector<int64_t> choice_counts(std::span<const int32_t> experts, int64_t num_tokens,
                                   int64_t top_k, int64_t num_experts);

// all_counts [R*K*E]: choice_counts of every rank of the token group, in rank order.
// Returns queued_ahead [K*E] of `rank`:
//   sum_{r} sum_{k' < k} all[r][k'][e] + sum_{r < rank} all[r][k][e]
std::vector<int64_t> queued_ahead_of_rank(std::span<const int64_t> all_counts, int ranks,
                                          int rank, int64_t top_k, int64_t num_experts);

// all_counts as above. Returns [R * E]: the assignments of rank r to expert e that
// choice-major admission against `capacity` (< 0: dropless) keeps, for every rank.
std::vector<int64_t> kept_counts_of_ranks(std::span<const int64_t> all_counts, int ranks,
                                          int64_t top_k, int64_t num_experts, int64_t capacity);

}  // namespace moe
