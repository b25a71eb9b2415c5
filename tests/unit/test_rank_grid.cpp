// The rank grid without MPI: the worked example of rank_grid.h group by group, the
// invariants for every factorisation of world sizes 1..16 in both orders, and the
// user errors for layouts that do not factor.

#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "framework/core/error.h"
#include "framework/parallel/rank_grid.h"

namespace moe {
namespace {

using Groups = std::vector<std::vector<int>>;

ParallelConfig layout(int dp, int tp, int ep, int etp) {
  ParallelConfig p;
  p.dp = dp;
  p.tp = tp;
  p.ep = ep;
  p.etp = etp;
  return p;
}

// The distinct groups of kind g, in order of their first member.
Groups all_groups(const RankGrid& grid, Group g) {
  std::set<std::vector<int>> seen;
  for (int r = 0; r < grid.world; ++r) seen.insert(grid.members(g, r));
  return Groups(seen.begin(), seen.end());
}

TEST(RankGrid, WorkedExampleEtp1) {
  const RankGrid grid = make_rank_grid(8, layout(4, 2, 2, 1));
  EXPECT_EQ(grid.edp, 4);
  EXPECT_EQ(all_groups(grid, Group::kTp), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(all_groups(grid, Group::kDp), (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  EXPECT_EQ(all_groups(grid, Group::kEp), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(all_groups(grid, Group::kEdp), (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  EXPECT_EQ(all_groups(grid, Group::kEtp),
            (Groups{{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}}));
  EXPECT_EQ(all_groups(grid, Group::kWorld), (Groups{{0, 1, 2, 3, 4, 5, 6, 7}}));
}

TEST(RankGrid, WorkedExampleEtp2) {
  const RankGrid grid = make_rank_grid(8, layout(4, 2, 2, 2));
  EXPECT_EQ(grid.edp, 2);
  EXPECT_EQ(all_groups(grid, Group::kEtp), all_groups(grid, Group::kTp));
  EXPECT_EQ(all_groups(grid, Group::kEp), (Groups{{0, 2}, {1, 3}, {4, 6}, {5, 7}}));
  EXPECT_EQ(all_groups(grid, Group::kEdp), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
  const RankCoords c = grid.coords(5);
  EXPECT_EQ(c.tp, 1);
  EXPECT_EQ(c.dp, 2);
  EXPECT_EQ(c.etp, 1);
  EXPECT_EQ(c.ep, 0);
  EXPECT_EQ(c.edp, 1);
}

TEST(RankGrid, WorkedExampleTpDpEp) {
  const RankGrid grid = make_rank_grid(8, layout(4, 2, 2, 1), "tp-dp-ep");
  EXPECT_EQ(all_groups(grid, Group::kTp), (Groups{{0, 1}, {2, 3}, {4, 5}, {6, 7}}));
  EXPECT_EQ(all_groups(grid, Group::kDp), (Groups{{0, 2, 4, 6}, {1, 3, 5, 7}}));
  EXPECT_EQ(all_groups(grid, Group::kEdp), (Groups{{0, 1, 2, 3}, {4, 5, 6, 7}}));
  EXPECT_EQ(all_groups(grid, Group::kEp), (Groups{{0, 4}, {1, 5}, {2, 6}, {3, 7}}));
}

// Every invariant of rank_grid.h for one grid.
void check_invariants(const RankGrid& grid) {
  SCOPED_TRACE("world " + std::to_string(grid.world) + " dp " + std::to_string(grid.dp) +
               " tp " + std::to_string(grid.tp) + " ep " + std::to_string(grid.ep) +
               " etp " + std::to_string(grid.etp) + " " + grid.order);
  ASSERT_EQ(grid.dp * grid.tp, grid.world);
  ASSERT_EQ(grid.edp * grid.ep * grid.etp, grid.world);
  for (const Group g : kAllGroups) {
    const int size = grid.size(g), groups = grid.world / size;
    ASSERT_EQ(groups * size, grid.world) << group_name(g);
    for (int r = 0; r < grid.world; ++r) {
      const std::vector<int> m = grid.members(g, r);
      const int index = grid.group_index(g, r), c = grid.coord(g, r);
      ASSERT_EQ(static_cast<int>(m.size()), size) << group_name(g);
      ASSERT_TRUE(std::is_sorted(m.begin(), m.end())) << group_name(g);
      ASSERT_TRUE(index >= 0 && index < groups) << group_name(g) << " rank " << r;
      ASSERT_TRUE(c >= 0 && c < size);
      ASSERT_EQ(m[static_cast<size_t>(c)], r) << group_name(g) << ": group-rank = coord";
      for (int i = 0; i < size; ++i) {
        const int member = m[static_cast<size_t>(i)];
        ASSERT_TRUE(member >= 0 && member < grid.world);
        // Every member agrees on the group: same index, same member list, own coord.
        ASSERT_EQ(grid.group_index(g, member), index) << group_name(g);
        ASSERT_EQ(grid.coord(g, member), i) << group_name(g);
        ASSERT_EQ(grid.members(g, member), m) << group_name(g);
      }
    }
    // Partition: world/size distinct groups, covering every rank exactly once, with
    // distinct indices.
    const Groups distinct = all_groups(grid, g);
    ASSERT_EQ(static_cast<int>(distinct.size()), groups) << group_name(g);
    std::vector<int> count(static_cast<size_t>(grid.world), 0);
    for (const auto& m : distinct)
      for (int r : m) ++count[static_cast<size_t>(r)];
    for (int c : count) ASSERT_EQ(c, 1) << group_name(g);
    std::set<int> indices;
    for (const auto& m : distinct) indices.insert(grid.group_index(g, m[0]));
    ASSERT_EQ(static_cast<int>(indices.size()), groups) << group_name(g);
  }
  for (int r = 0; r < grid.world; ++r) {
    const RankCoords c = grid.coords(r);
    // The mixed-radix numbering of the header.
    ASSERT_EQ(c.tp + grid.tp * c.dp, r);
    const int expert = grid.order == "tp-ep-dp" ? c.ep + grid.ep * c.edp
                                                 : c.edp + grid.edp * c.ep;
    ASSERT_EQ(c.etp + grid.etp * expert, r);
    if (grid.etp == grid.tp) {
      // etp groups are tp groups; ep and edp groups lie inside r's dp group.
      ASSERT_EQ(grid.members(Group::kEtp, r), grid.members(Group::kTp, r));
      const std::vector<int> dp = grid.members(Group::kDp, r);
      for (const Group g : {Group::kEp, Group::kEdp})
        for (int m : grid.members(g, r))
          ASSERT_TRUE(std::find(dp.begin(), dp.end(), m) != dp.end());
    }
  }
}

TEST(RankGrid, InvariantsForEveryFactorisationUpTo16) {
  int grids = 0;
  for (int world = 1; world <= 16; ++world)
    for (int tp = 1; tp <= world; ++tp) {
      if (world % tp != 0) continue;
      for (int ep = 1; ep <= world; ++ep)
        for (int etp = 1; etp <= world; ++etp) {
          if (world % (ep * etp) != 0) continue;
          for (const char* order : {"tp-ep-dp", "tp-dp-ep"}) {
            check_invariants(make_rank_grid(world, layout(world / tp, tp, ep, etp), order));
            if (HasFatalFailure()) return;
            ++grids;
          }
        }
    }
  EXPECT_GT(grids, 300);  // guards the loops themselves
}

TEST(RankGrid, DefaultOrderAndOneRank) {
  const RankGrid grid = make_rank_grid(1, layout(1, 1, 1, 1));
  EXPECT_EQ(grid.order, "tp-ep-dp");
  for (const Group g : kAllGroups) {
    EXPECT_EQ(grid.members(g, 0), std::vector<int>{0});
    EXPECT_EQ(grid.group_index(g, 0), 0);
  }
}

// make() must throw a user error whose message names `key`.
template <class F>
void expect_user_error(F&& make, const std::string& key) {
  try {
    make();
    ADD_FAILURE() << "no error; expected one naming " << key;
  } catch (const Error& e) {
    EXPECT_TRUE(e.user_error()) << e.what();
    EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
  }
}

TEST(RankGrid, BadLayoutsAreUserErrors) {
  const std::string dense = "parallel.dp * parallel.tp", expert = "parallel.ep * parallel.etp";
  expect_user_error([] { make_rank_grid(8, layout(2, 2, 1, 1)); }, dense);
  expect_user_error([] { make_rank_grid(6, layout(6, 1, 4, 1)); }, expert);
  expect_user_error([] { make_rank_grid(8, layout(4, 2, 2, 3)); }, expert);
  expect_user_error([] { make_rank_grid(4, layout(4, 1, 8, 1)); }, "does not divide");
  expect_user_error([] { make_rank_grid(4, layout(0, 1, 1, 1)); }, "parallel.dp");
  expect_user_error([] { make_rank_grid(4, layout(4, -1, 1, 1)); }, "parallel.tp");
  expect_user_error([] { make_rank_grid(4, layout(4, 1, 0, 1)); }, "parallel.ep");
  expect_user_error([] { make_rank_grid(4, layout(4, 1, 1, 0)); }, "parallel.etp");
  // A product that overflows int still gets the message, not a wrong answer.
  expect_user_error([] { make_rank_grid(8, layout(65536, 65536, 1, 1)); }, "parallel.dp");
  for (const char* order : {"ep-tp-dp", "dp-tp-ep", "tp-ep", "tp-ep-dp-pp", "", "TP-EP-DP",
                            "tp-tp-dp"})
    expect_user_error([&] { make_rank_grid(4, layout(4, 1, 2, 1), order); }, "rank order");
}

TEST(RankGrid, RankOutsideWorldIsAnError) {
  const RankGrid grid = make_rank_grid(4, layout(2, 2, 2, 1));
  EXPECT_THROW(grid.coord(Group::kDp, 4), Error);
  EXPECT_THROW(grid.members(Group::kEp, -1), Error);
}

}  // namespace
}  // namespace moe
