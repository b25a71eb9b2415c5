// The projection of plain ep vs fssdp (framework/parallel/ep_fssdp_model.h) on
// hand-worked numbers: the Zipf shares with and without saturated experts, the
// materialised maximum for one and two experts per owner, and both layouts' times on a
// two-GPU node; then the shape at published figures: no skew, no difference; skew with
// real batch sizes, fssdp ahead; a handful of tokens per GPU, ep ahead.

#include <gtest/gtest.h>

#include "framework/parallel/ep_fssdp_model.h"

namespace moe {
namespace {

TEST(EpFssdpModel, ZipfSharesSumToTopKAndSaturateAtOne) {
  // s = 1: p = 1, 1/2, 1/3, 1/4 (sum 25/12), K = 2: q = 24/25 p, none above 1
  const std::vector<double> q1 = zipf_expert_shares(4, 2, 1.0);
  const double expect1[] = {0.96, 0.48, 0.32, 0.24};
  for (int e = 0; e < 4; ++e) EXPECT_NEAR(q1[e], expect1[e], 1e-12) << e;
  // s = 2: 2 p_0 / sum = 1.40 > 1, so expert 0 takes every token and the others share
  // the second pick: 1/4, 1/9, 1/16 over 61/144 -> 36/61, 16/61, 9/61
  const std::vector<double> q2 = zipf_expert_shares(4, 2, 2.0);
  const double expect2[] = {1.0, 36.0 / 61, 16.0 / 61, 9.0 / 61};
  for (int e = 0; e < 4; ++e) EXPECT_NEAR(q2[e], expect2[e], 1e-12) << e;
  for (double q : zipf_expert_shares(8, 3, 0.0)) EXPECT_DOUBLE_EQ(q, 3.0 / 8);
}

TEST(EpFssdpModel, MaterialisedMaximumOnHandWorkedLoads) {
  int64_t replicas = -1;
  // one expert per rank, mean 250
  const std::vector<double> one = {600, 100, 200, 100};
  EXPECT_DOUBLE_EQ(materialised_max_rows(one, 1, 250, 0, &replicas), 600);  // plain ep
  EXPECT_EQ(replicas, 0);
  // one replica: expert 0 on two ranks, 300 each
  EXPECT_NEAR(materialised_max_rows(one, 1, 250, 1, &replicas), 300, 1e-6);
  EXPECT_EQ(replicas, 1);
  // two: 600 over three ranks = 200 < the mean, which is the floor
  EXPECT_DOUBLE_EQ(materialised_max_rows(one, 1, 250, 2, &replicas), 250);
  EXPECT_EQ(replicas, 2);
  // two experts per rank, mean 400: owner 0 keeps half of one expert and all of the
  // other (150 + 300) with one replica, half of each (300, the floor 400) with two
  const std::vector<double> two = {300, 300, 100, 100};
  EXPECT_DOUBLE_EQ(materialised_max_rows(two, 2, 400, 0, &replicas), 600);
  EXPECT_NEAR(materialised_max_rows(two, 2, 400, 1, &replicas), 450, 1e-6);
  EXPECT_EQ(replicas, 1);
  EXPECT_DOUBLE_EQ(materialised_max_rows(two, 2, 400, 2, &replicas), 400);
  EXPECT_EQ(replicas, 2);
}

// N = 1000 tokens, C = 100, F = 50 (18 C F = 90,000 flops per row, 1 TFLOP/s), K = 1,
// one expert per rank, 2 ranks on one node, intra 1 us 100 GB/s, bf16 rows (200 B).
TEST(EpFssdpModel, BothLayoutsOnATwoGpuNode) {
  const MoeLayerShape layer{1000, 100, 50, 1, 1};
  GpuCluster c;
  c.links.intra = {1e-6, 100e9};
  c.links.inter = {1e-3, 1e9};  // unused on one node
  c.links.copy_Bps = 1e12;
  c.flops_per_s = 1e12;
  // s = 1, E = 2: shares 2/3, 1/3 -> loads 1333.3, 666.7 rows; mean 1000
  const EpVsFssdp p = project_ep_vs_fssdp(layer, c, 2, 1.0, 1);
  // ep: rank 0 computes 1333.3 rows (120 us) and receives them: a block of
  // 1333.3 * 200 / 2 B per peer, 1 us + 1.333 us per exchange, 4 exchanges
  EXPECT_NEAR(p.ep.rows_max_over_mean, 4.0 / 3, 1e-12);
  EXPECT_NEAR(p.ep.compute_s, 120e-6, 1e-12);
  EXPECT_NEAR(p.ep.a2a_s, 4 * (1e-6 + 4e-6 / 3), 1e-12);
  EXPECT_EQ(p.ep.sparse_s, 0.0);
  // fssdp: one replica of expert 0 brings both ranks to the mean, 1000 rows (90 us),
  // blocks of 100 kB (2 us per exchange); the replica's 3 * 100 * 50 * 2 = 30 kB go to
  // the other rank and its gradient back: 2 * (1 us + 0.3 us)
  EXPECT_EQ(p.fssdp.replicas, 1);
  EXPECT_NEAR(p.fssdp.rows_max_over_mean, 1.0, 1e-9);
  EXPECT_NEAR(p.fssdp.compute_s, 90e-6, 1e-12);
  EXPECT_NEAR(p.fssdp.a2a_s, 8e-6, 1e-12);
  EXPECT_NEAR(p.fssdp.sparse_s, 2.6e-6, 1e-12);
  EXPECT_NEAR(p.fssdp.total_s(), 100.6e-6, 1e-12);
}

TEST(EpFssdpModel, PublishedFiguresSkewAndBatchDecide) {
  const GpuCluster c = published_h100_cluster();
  MoeLayerShape layer{16384, 1024, 512, 4, 4};  // configs/moe_gpt_gpu.ini's layer
  for (int ranks : {8, 64, 1024}) {
    // no skew: nothing to replicate, the same time
    const EpVsFssdp flat = project_ep_vs_fssdp(layer, c, ranks, 0.0, 2);
    EXPECT_EQ(flat.fssdp.replicas, 0) << ranks;
    EXPECT_DOUBLE_EQ(flat.fssdp.total_s(), flat.ep.total_s()) << ranks;
    // Zipf 1.2 with 16k tokens per GPU: replicas win by far
    const EpVsFssdp skewed = project_ep_vs_fssdp(layer, c, ranks, 1.2, 2);
    EXPECT_GT(skewed.ep.total_s(), 3.0 * skewed.fssdp.total_s()) << ranks;
    // no slots: fssdp is plain ep
    const EpVsFssdp none = project_ep_vs_fssdp(layer, c, ranks, 1.2, 0);
    EXPECT_DOUBLE_EQ(none.fssdp.total_s(), none.ep.total_s()) << ranks;
  }
  // 64 tokens per GPU: a replica's weights cost more than the rows it takes over
  layer.tokens_per_rank = 64;
  const EpVsFssdp tiny = project_ep_vs_fssdp(layer, c, 64, 1.2, 2);
  EXPECT_GT(tiny.fssdp.total_s(), tiny.ep.total_s());
}

}  // namespace
}  // namespace moe
