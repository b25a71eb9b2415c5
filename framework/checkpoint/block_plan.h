#pragma once
// BlockPlan: which rank writes each block of each tensor of a checkpoint.
//
// Every rank holds, per parameter, the block [offset, offset + local_shape) of the
// logical tensor (param_store.h). Ranks holding the same block are replicas of it (a
// replicated parameter: all ranks; an expert block under dp x ep: the edp group);
// exactly one replica writes each block, so the blocks written tile the tensor once.
// The writer of copy c (0 value, 1 exp_avg, 2 exp_avg_sq) of parameter i is replica
// number (3 i + c) mod (replicas) in world-rank order, which spreads the replicated
// tensors over the ranks instead of putting them all on rank 0.
//
// The plan is derived from the blocks themselves (one all-gather of offsets and
// shapes), not from the names of the groups, so it holds for any layout, the one a
// checkpoint is read with included: the reader of a block's checksum is its writer
// under the reading layout.

#include <cstddef>
#include <vector>

#include "framework/parallel/communicator.h"
#include "framework/tensor/param_store.h"

namespace moe {

class BlockPlan {
 public:
  static constexpr int kCopies = 3;  // value, exp_avg, exp_avg_sq

  // Collective over `world`. Checks that the distinct blocks of every parameter cover
  // its logical tensor exactly (their sizes add up to it).
  BlockPlan(const ParamStore& store, Communicator& world);

  // True when this rank writes (and checksums) its block of copy `copy` of parameter
  // `param` (the index in store.params()).
  bool writes(size_t param, int copy) const {
    return writer_[param * kCopies + static_cast<size_t>(copy)];
  }
  // True when the tensor of parameter `param` is written by more than one rank (it is
  // sharded in this layout); false when one rank writes it whole.
  bool sharded(size_t param) const { return sharded_[param]; }

 private:
  std::vector<bool> writer_;   // [param * kCopies + copy]
  std::vector<bool> sharded_;  // [param]
};

}  // namespace moe
