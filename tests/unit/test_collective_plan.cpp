// The host arithmetic of the NCCL communicator (framework/parallel/collective_plan.h),
// checked on every machine: packed block offsets, and the ranks that would put two NCCL
// ranks on one GPU (refused by name before NCCL fails).

#include "framework/parallel/collective_plan.h"

#include <gtest/gtest.h>

#include <vector>

namespace moe {
namespace {

TEST(CollectivePlan, BlockOffsetsAreExclusivePrefixSums) {
  EXPECT_EQ(block_offsets(std::vector<int64_t>{}), (std::vector<int64_t>{0}));
  EXPECT_EQ(block_offsets(std::vector<int64_t>{3, 0, 5, 1}),
            (std::vector<int64_t>{0, 3, 3, 8, 9}));
  EXPECT_EQ(block_offsets(std::vector<int64_t>{0, 0}), (std::vector<int64_t>{0, 0, 0}));
}

TEST(CollectivePlan, RanksSharingAGpu) {
  // two nodes of two ranks, each rank its own GPU: fine
  EXPECT_FALSE(ranks_sharing_a_gpu(std::vector<int>{0, 0, 2, 2}, std::vector<int>{0, 1, 0, 1}));
  // the same GPU index on different nodes is not shared
  EXPECT_FALSE(ranks_sharing_a_gpu(std::vector<int>{0, 1}, std::vector<int>{0, 0}));
  // ranks 1 and 3 on node 0 with GPU 1: the first such pair, lower rank first
  const auto pair =
      ranks_sharing_a_gpu(std::vector<int>{0, 0, 0, 0}, std::vector<int>{0, 1, 2, 1});
  ASSERT_TRUE(pair);
  EXPECT_EQ(pair->first, 1);
  EXPECT_EQ(pair->second, 3);
  EXPECT_FALSE(ranks_sharing_a_gpu(std::vector<int>{}, std::vector<int>{}));
}

}  // namespace
}  // namespace moe
