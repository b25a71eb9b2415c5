// The owners of sharded sparse experts re-planned from loads (framework/moe/
// ownership_plan.h) and the placement of uneven blocks they give, on hand-worked loads.

#include <gtest/gtest.h>

#include <vector>

#include "framework/moe/fssdp_plan.h"
#include "framework/moe/load_window.h"
#include "framework/moe/ownership_plan.h"

namespace moe {
namespace {

using Bounds = std::vector<int64_t>;

TEST(OwnershipPlan, BalancesTheOwnersLoads) {
  // prefix loads 10 11 12 13 | 14 15 16 26: the halves carry 13 each
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{10, 1, 1, 1, 1, 1, 1, 10}, 2),
            (Bounds{0, 4, 8}));
  // the hot expert alone; 7 light ones over 3 ranks as 2, 2, 3 (equal squares: the
  // last block starts earliest)
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{8, 1, 1, 1, 1, 1, 1, 1}, 4),
            (Bounds{0, 1, 3, 5, 8}));
  // two hot experts each alone, the light ones 3 and 3
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{20, 20, 1, 1, 1, 1, 1, 1}, 4),
            (Bounds{0, 1, 2, 5, 8}));
  // a hot expert in the middle is alone (9 + 1 exceeds the lowest maximum, 9), and the
  // light ones left and right of it one block each
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{1, 1, 1, 9, 1, 1, 1, 1}, 3),
            (Bounds{0, 3, 4, 8}));
}

TEST(OwnershipPlan, EqualLoadsGiveEvenBlocks) {
  EXPECT_EQ(plan_ownership(std::vector<int64_t>(7, 0), 3), (Bounds{0, 2, 4, 7}));
  EXPECT_EQ(plan_ownership(std::vector<int64_t>(8, 5), 4), (Bounds{0, 2, 4, 6, 8}));
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{3, 1, 4}, 3), (Bounds{0, 1, 2, 3}));
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{3, 1, 4}, 1), (Bounds{0, 3}));
}

TEST(OwnershipPlan, FewerExpertsThanRanksLeaveTheFirstRanksNone) {
  // one expert each, the R - E ranks without one first, whatever the loads
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{5, 1, 9}, 4), (Bounds{0, 0, 1, 2, 3}));
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{0, 0}, 5), (Bounds{0, 0, 0, 0, 1, 2}));
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{7}, 3), (Bounds{0, 0, 0, 1}));
}

TEST(OwnershipPlan, EveryRankOwnsOneWhenThereAreEnough) {
  // one expert carries almost every row: its owner owns it alone, and no rank is left
  // empty (splitting a block of the light ones lowers the squared sizes)
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{1000, 1, 1, 1}, 4), (Bounds{0, 1, 2, 3, 4}));
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{1, 1, 1000, 1, 1}, 2), (Bounds{0, 2, 5}));
  EXPECT_EQ(plan_ownership(std::vector<int64_t>{0, 0, 0, 0, 0}, 4), (Bounds{0, 1, 2, 3, 5}));
}

TEST(OwnershipPlan, RanksWithoutExpertsHoldReplicas) {
  // E 3 over R 4, rank 0 owns none (the plan above), every row on expert 2's owner
  const ExpertPlacement p{3, 4, 0, plan_ownership(std::vector<int64_t>{1, 1, 1}, 4)};
  EXPECT_EQ(p.count(0), 0);
  EXPECT_EQ(p.first_local(), 0);
  EXPECT_EQ(p.num_local(), 0);
  for (int64_t e = 0; e < 3; ++e) EXPECT_EQ(p.owner(e), e + 1) << "expert " << e;
  std::vector<int64_t> counts(4 * 3, 0);
  for (int s = 0; s < 4; ++s) counts[s * 3 + 2] = 12;
  EXPECT_TRUE(computed_experts(plan_holders(counts, p, 0), p, 0).empty());
  const Holders spread = plan_holders(counts, p, 1);
  EXPECT_EQ(spread[2], (std::vector<int>{0, 1, 2, 3}));  // every rank a holder of the hot one
  EXPECT_EQ(computed_experts(spread, p, 0), (std::vector<int64_t>{2}));
  EXPECT_EQ(rows_per_rank(counts, spread, 4), (std::vector<int64_t>{12, 12, 12, 12}));
  // the even blocks of E < R: the last R - E ranks own none
  const ExpertPlacement even{3, 4, 3};
  EXPECT_EQ(even.num_local(), 0);
  EXPECT_EQ(even.first_local(), 3);
  EXPECT_EQ(even.owner(2), 2);
}

TEST(OwnershipPlan, UnevenBlocksPlaceAndPlanReplicas) {
  const ExpertPlacement p{8, 4, 2, {0, 1, 2, 5, 8}};
  EXPECT_EQ(p.first(2), 2);
  EXPECT_EQ(p.count(2), 3);
  EXPECT_EQ(p.first(4), 8);
  EXPECT_EQ(p.first_local(), 2);
  EXPECT_EQ(p.num_local(), 3);
  const std::vector<int> owners = {0, 1, 2, 2, 2, 3, 3, 3};
  for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(p.owner(e), owners[e]) << "expert " << e;
  // rows on sources 1 to 3, expert 0 hot: without slots every expert stays with its owner
  std::vector<int64_t> counts(4 * 8, 0);
  for (int s = 1; s < 4; ++s)
    for (int64_t e = 0; e < 8; ++e) counts[s * 8 + e] = e == 0 ? 20 : 2;
  const Holders owned = plan_holders(counts, p, 0);
  for (int64_t e = 0; e < 8; ++e) EXPECT_EQ(owned[e], std::vector<int>{owners[e]});
  EXPECT_EQ(computed_experts(owned, p, 2), (std::vector<int64_t>{2, 3, 4}));
  // one slot per rank: the hot expert 0 gains replicas on the idle ranks
  const Holders spread = plan_holders(counts, p, 1);
  EXPECT_GT(spread[0].size(), 1u);
}

TEST(LoadWindow, SumsThisStepAndTheLastStepsBefore) {
  ParamStore store;
  LoadWindow window(store, "layers.1.moe.experts", 3, 2, 2);  // W 3, R 2, E 2
  ASSERT_EQ(store.buffers().size(), 1u);
  EXPECT_EQ(store.buffers()[0].name, "layers.1.moe.experts.load_history_w3_r2");
  EXPECT_TRUE(store.buffers()[0].optional);
  RoutingPlan step;
  auto counts = [&](std::vector<int64_t> c) {
    step.group_counts_after = std::move(c);
    return step;
  };
  // an empty window: this step alone
  EXPECT_EQ(window.with(counts({1, 2, 3, 4})), (std::vector<int64_t>{1, 2, 3, 4}));
  window.push(counts({1, 2, 3, 4}));
  window.push(counts({10, 20, 30, 40}));
  EXPECT_EQ(window.with(counts({100, 0, 0, 0})), (std::vector<int64_t>{111, 22, 33, 44}));
  window.push(counts({100, 0, 0, 0}));  // the first step leaves
  EXPECT_EQ(window.with(counts({0, 0, 0, 0})), (std::vector<int64_t>{110, 20, 30, 40}));
  step.group_counts_after = {1, 2};  // a plan of another group size
  EXPECT_THROW(window.push(step), Error);
}

}  // namespace
}  // namespace moe
