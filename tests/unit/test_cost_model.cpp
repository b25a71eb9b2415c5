// The all-to-all cost model (framework/parallel/cost_model.h): the formulas on a worked
// example, and the known crossover at published GPU-cluster figures: with a fixed
// payload per rank the two-level all-to-all loses on a few nodes and wins at scale.

#include <gtest/gtest.h>

#include "framework/parallel/cost_model.h"

namespace moe {
namespace {

TEST(CostModel, FormulasOnAWorkedExample) {
  AllToAllCostModel m;
  m.intra = {1e-6, 100e9};
  m.inter = {10e-6, 10e9};
  m.copy_Bps = 1000e9;
  const double s = 1e6;  // 1 MB per peer, 2 nodes x 4 ranks
  // flat: max(3 (1us + 10us), 1 * 4 (10us + 100us)) = 440 us
  EXPECT_NEAR(m.flat_seconds(s, 2, 4), 440e-6, 1e-12);
  // two-level: 3 (1us + 20us) + 1 (10us + 400us) + 2 * 8 MB / 1000 GB/s = 489 us
  EXPECT_NEAR(m.two_level_seconds(s, 2, 4), 489e-6, 1e-12);
}

TEST(CostModel, TwoLevelLosesOnFewNodesAndWinsAtScale) {
  const AllToAllCostModel m = published_gpu_cluster();
  const double payload = 64.0 * (1 << 20);  // bytes per rank, all peers together
  auto speedup = [&](int nodes) {
    const double block = payload / (nodes * 8);
    return m.flat_seconds(block, nodes, 8) / m.two_level_seconds(block, nodes, 8);
  };
  EXPECT_LT(speedup(2), 1.0);
  EXPECT_GT(speedup(256), 1.0);
  // one crossover: once two-level wins it keeps winning as the cluster grows
  bool won = false;
  for (int nodes = 2; nodes <= 256; nodes *= 2) {
    if (won) {
      EXPECT_GT(speedup(nodes), 1.0) << nodes;
    }
    won = won || speedup(nodes) > 1.0;
  }
  EXPECT_TRUE(won);
}

TEST(CostModel, SmallMessagesFavourTwoLevelLargeOnesFlat) {
  const AllToAllCostModel m = published_gpu_cluster();
  EXPECT_LT(m.two_level_seconds(256, 16, 8), m.flat_seconds(256, 16, 8));
  EXPECT_GT(m.two_level_seconds(4 << 20, 16, 8), m.flat_seconds(4 << 20, 16, 8));
}

}  // namespace
}  // namespace moe
