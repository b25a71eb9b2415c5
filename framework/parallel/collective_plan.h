#pragma once
// Host-side arithmetic of the device collectives (the NCCL communicator,
// framework/parallel/cuda/nccl_communicator.h), kept apart so the CPU tests check it:
// where each peer's block starts in a packed buffer, and which ranks would put two
// NCCL ranks on one GPU (NCCL refuses that: a clear error names them first).

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace moe {

// Exclusive prefix sums: block r of counts[r] elements starts at offsets[r]; the last
// entry is the total.
inline std::vector<int64_t> block_offsets(std::span<const int64_t> counts) {
  std::vector<int64_t> offsets(counts.size() + 1, 0);
  for (size_t r = 0; r < counts.size(); ++r) offsets[r + 1] = offsets[r] + counts[r];
  return offsets;
}

// The first two ranks (lower first) on one node (node_of_rank) with one GPU
// (gpu_of_rank), if any.
inline std::optional<std::pair<int, int>> ranks_sharing_a_gpu(std::span<const int> node_of_rank,
                                                              std::span<const int> gpu_of_rank) {
  for (size_t a = 0; a < node_of_rank.size(); ++a)
    for (size_t b = a + 1; b < node_of_rank.size(); ++b)
      if (node_of_rank[a] == node_of_rank[b] && gpu_of_rank[a] == gpu_of_rank[b])
        return std::pair{static_cast<int>(a), static_cast<int>(b)};
  return std::nullopt;
}

}  // namespace moe
