#include "framework/checkpoint/block_plan.h"

#include <map>

namespace moe {

BlockPlan::BlockPlan(const ParamStore& store, Communicator& world) {
  constexpr int kDims = Shape::kMaxDims;
  constexpr int kPerParam = 2 * kDims;  // offset, local shape
  const std::deque<Param>& params = store.params();
  std::vector<int64_t> mine(params.size() * kPerParam, 0);
  for (size_t i = 0; i < params.size(); ++i)
    for (int d = 0; d < kDims; ++d) {
      mine[i * kPerParam + d] = params[i].offset[d];
      mine[i * kPerParam + kDims + d] = d < params[i].local_shape.rank ? params[i].local_shape[d] : 1;
    }
  const int world_size = world.size();
  std::vector<int64_t> all(mine.size() * static_cast<size_t>(world_size));
  world.all_gather<int64_t>(mine, all);

  writer_.assign(params.size() * kCopies, false);
  sharded_.assign(params.size(), false);
  for (size_t i = 0; i < params.size(); ++i) {
    // block (offset and shape) -> its replicas, in world-rank order
    std::map<std::vector<int64_t>, std::vector<int>> replicas;
    for (int r = 0; r < world_size; ++r) {
      const int64_t* b = all.data() + (static_cast<size_t>(r) * params.size() + i) * kPerParam;
      replicas[std::vector<int64_t>(b, b + kPerParam)].push_back(r);
    }
    int64_t covered = 0;
    for (const auto& [block, ranks] : replicas) {
      int64_t n = 1;
      for (int d = 0; d < kDims; ++d) n *= block[kDims + d];
      covered += n;
    }
    MOE_CHECK(covered == params[i].spec.shape.numel(), "the blocks of ", params[i].spec.name,
              " over the ranks hold ", covered, " elements, the tensor ",
              params[i].spec.shape.numel());
    sharded_[i] = replicas.size() > 1;
    const std::vector<int>& mine_replicas =
        replicas.at(std::vector<int64_t>(mine.begin() + i * kPerParam,
                                         mine.begin() + (i + 1) * kPerParam));
    for (int c = 0; c < kCopies; ++c) {
      const size_t pick = (kCopies * i + c) % mine_replicas.size();
      writer_[i * kCopies + c] = mine_replicas[pick] == world.rank();
    }
  }
}

}  // namespace moe
