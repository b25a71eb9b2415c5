// The plans of sharded sparse experts (framework/moe/fssdp_plan.h): the row split over
// holders, the greedy replica plan and the compute order, on small hand-checked cases.

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "framework/moe/fssdp_plan.h"

namespace moe {
namespace {

TEST(FssdpPlan, SplitRowsIsEvenAndKeepsAHoldersOwnRows) {
  const std::vector<int> holders = {1, 3, 4};
  // a holder keeps all its rows
  EXPECT_EQ(split_rows(holders, 3, 10, 3), 10);
  EXPECT_EQ(split_rows(holders, 3, 10, 1), 0);
  // others split 10 rows 4 / 3 / 3, the remainder from position (source mod 3) on
  for (int source : {0, 2, 5}) {
    int64_t total = 0;
    std::vector<int64_t> got;
    for (int d : holders) got.push_back(split_rows(holders, source, 10, d));
    for (int64_t n : got) total += n;
    EXPECT_EQ(total, 10) << "source " << source;
    EXPECT_EQ(*std::max_element(got.begin(), got.end()), 4);
    EXPECT_EQ(got[source % 3], 4) << "source " << source;
  }
  EXPECT_EQ(split_rows(holders, 0, 10, 2), 0);  // not a holder
  EXPECT_EQ(split_rows({2}, 0, 7, 2), 7);       // the owner alone
}

TEST(FssdpPlan, ReplicasGoToTheBusiestRanksExpertsWithinTheSlots) {
  // 4 experts over 2 ranks (0, 1 on rank 0; 2, 3 on rank 1); expert 0 is hot
  const ExpertPlacement placement{4, 2, 0};
  const std::vector<int64_t> counts = {30, 2, 2, 2,   // rank 0's rows per expert
                                       30, 2, 2, 2};  // rank 1's
  EXPECT_EQ(rows_per_rank(counts, {{0}, {0}, {1}, {1}}, 2), (std::vector<int64_t>{64, 8}));
  const Holders none = plan_holders(counts, placement, 0);
  EXPECT_EQ(none, (Holders{{0}, {0}, {1}, {1}}));
  // one slot each: expert 0 on rank 1 (64 / 8 -> 34 / 38: rank 1 keeps its own 30
  // rows), then expert 2 on rank 0 (-> 36 / 36); then no slot is left
  const Holders one = plan_holders(counts, placement, 1);
  EXPECT_EQ(one, (Holders{{0, 1}, {0}, {0, 1}, {1}}));
  EXPECT_EQ(rows_per_rank(counts, one, 2), (std::vector<int64_t>{36, 36}));
  EXPECT_EQ(computed_experts(one, placement, 1), (std::vector<int64_t>{2, 3, 0}));
  EXPECT_EQ(computed_experts(one, placement, 0), (std::vector<int64_t>{0, 1, 2}));
  // balanced loads: nothing to gain, no replica
  const std::vector<int64_t> even(8, 5);
  EXPECT_EQ(plan_holders(even, placement, 2), (Holders{{0}, {0}, {1}, {1}}));
}

TEST(FssdpPlan, EveryRowHasExactlyOneDestination) {
  const ExpertPlacement placement{6, 4, 0};
  std::vector<int64_t> counts;
  for (int s = 0; s < 4; ++s)
    for (int e = 0; e < 6; ++e) counts.push_back((s * 7 + e * e * 5) % 23 + (e == 2 ? 40 : 0));
  const Holders holders = plan_holders(counts, placement, 2);
  for (int64_t e = 0; e < 6; ++e)
    for (int s = 0; s < 4; ++s) {
      int64_t total = 0;
      for (int d = 0; d < 4; ++d) total += split_rows(holders[e], s, counts[s * 6 + e], d);
      EXPECT_EQ(total, counts[s * 6 + e]) << "expert " << e << " source " << s;
    }
  std::vector<int> replicas(4, 0);
  for (int64_t e = 0; e < 6; ++e)
    for (int r : holders[e])
      if (r != placement.owner(e)) ++replicas[r];
  for (int r = 0; r < 4; ++r) EXPECT_LE(replicas[r], 2) << "rank " << r;
  const std::vector<int64_t> before =
      rows_per_rank(counts, plan_holders(counts, placement, 0), 4);
  const std::vector<int64_t> after = rows_per_rank(counts, holders, 4);
  EXPECT_LT(*std::max_element(after.begin(), after.end()),
            *std::max_element(before.begin(), before.end()));
}

TEST(FssdpPlan, RowsPreferAHolderOnTheirNode) {
  const std::vector<int> node = {0, 0, 1, 1};  // ranks 0, 1 on node 0; 2, 3 on node 1
  const std::vector<int> holders = {0, 2, 3};
  // source 1 has a holder on its node (rank 0): all 10 rows go there
  EXPECT_EQ(split_rows(holders, 1, 10, 0, node), 10);
  EXPECT_EQ(split_rows(holders, 1, 10, 2, node), 0);
  EXPECT_EQ(split_rows(holders, 1, 10, 3, node), 0);
  // a holder keeps its own rows, on any node
  EXPECT_EQ(split_rows(holders, 2, 10, 2, node), 10);
  EXPECT_EQ(split_rows(holders, 2, 10, 3, node), 0);
  // holders {2, 3} both on node 1: source 0 has none on its node, so they split its rows
  // evenly (the remainder from position 0 mod 2); source 3 keeps its own
  EXPECT_EQ(split_rows({2, 3}, 0, 11, 2, node), 6);
  EXPECT_EQ(split_rows({2, 3}, 0, 11, 3, node), 5);
  // 12 rows on every source, holders {0, 2, 3}: rank 0 takes node 0's rows (its own and
  // source 1's), ranks 2 and 3 their own
  const std::vector<int64_t> counts = {12, 12, 12, 12};  // one expert, [R * E], E = 1
  EXPECT_EQ(rows_per_rank(counts, {holders}, 4, node), (std::vector<int64_t>{24, 0, 12, 12}));
  // without nodes source 1 splits its 12 rows over all three holders: 4 each
  EXPECT_EQ(rows_per_rank(counts, {holders}, 4), (std::vector<int64_t>{16, 0, 16, 16}));
  // one node: the same plans as without nodes
  const ExpertPlacement placement{6, 4, 0};
  std::vector<int64_t> many;
  for (int s = 0; s < 4; ++s)
    for (int e = 0; e < 6; ++e) many.push_back((s * 7 + e * e * 5) % 23 + (e == 2 ? 40 : 0));
  const std::vector<int> one_node(4, 0);
  EXPECT_EQ(plan_holders(many, placement, 2, one_node), plan_holders(many, placement, 2));
  // two nodes: every row still has exactly one destination
  const Holders two = plan_holders(many, placement, 2, node);
  for (int64_t e = 0; e < 6; ++e)
    for (int s = 0; s < 4; ++s) {
      int64_t total = 0;
      for (int d = 0; d < 4; ++d) total += split_rows(two[e], s, many[s * 6 + e], d, node);
      EXPECT_EQ(total, many[s * 6 + e]) << "expert " << e << " source " << s;
    }
}

TEST(FssdpPlan, RanksTiedAtTheMaximumAreRelievedInTurn) {
  // 16 experts over 8 ranks, 2 each; every source has 10 rows of expert 0 (owned by rank
  // 0) and 10 of expert 2 (rank 1), as under a router that sends every token to the same
  // two experts. Ranks 0 and 1 tie at 80 rows: no single replica lowers the maximum (the
  // other rank keeps it), but each lowers the number of ranks at it, and the replicas
  // spread the two experts until every rank computes its own 20 rows.
  const ExpertPlacement placement{16, 8, 0};
  std::vector<int64_t> counts;
  for (int s = 0; s < 8; ++s)
    for (int e = 0; e < 16; ++e) counts.push_back(e == 0 || e == 2 ? 10 : 0);
  EXPECT_EQ(rows_per_rank(counts, plan_holders(counts, placement, 0), 8),
            (std::vector<int64_t>{80, 80, 0, 0, 0, 0, 0, 0}));
  for (int slots : {1, 2}) {
    const Holders holders = plan_holders(counts, placement, slots);
    EXPECT_EQ(rows_per_rank(counts, holders, 8), std::vector<int64_t>(8, 20)) << slots;
    EXPECT_EQ(holders[0].size() + holders[2].size(), 8u) << slots;  // one hot expert a rank
  }
}

}  // namespace
}  // namespace moe
