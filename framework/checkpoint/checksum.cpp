#include "framework/checkpoint/checksum.h"

#include <cstring>

namespace moe {
namespace {

inline uint64_t mix(uint64_t k) {
  k ^= k >> 33;
  k *= 0xFF51AFD7ED558CCDull;
  k ^= k >> 33;
  k *= 0xC4CEB9FE1A85EC53ull;
  k ^= k >> 33;
  return k;
}

// Terms of `n` consecutive logical elements starting at logical index `first`.
uint64_t run_checksum(const float* data, int64_t n, uint64_t first) {
  uint64_t sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    uint32_t bits;
    std::memcpy(&bits, data + j, sizeof(bits));
    sum += mix((first + static_cast<uint64_t>(j)) * 0x9E3779B97F4A7C15ull + bits);
  }
  return sum;
}

}  // namespace

uint64_t block_checksum(const float* data, const Shape& logical, const Shape& block,
                        const H5Offset& offset) {
  MOE_CHECK(logical.rank == block.rank, "checksum of a ", block.str(), " block of ",
            logical.str());
  if (block.rank == 0) return run_checksum(data, 1, 0);
  if (block.numel() == 0) return 0;
  // Rows along the last dimension are contiguous in both the block and the tensor.
  const int last = block.rank - 1;
  const int64_t row = block[last];
  const int64_t rows = block.numel() / row;
  std::array<int64_t, Shape::kMaxDims> idx{};  // row index inside the block, dims < last
  uint64_t sum = 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t first = 0;
    for (int d = 0; d < block.rank; ++d)
      first = first * logical[d] + offset[d] + (d < last ? idx[d] : 0);
    sum += run_checksum(data + r * row, row, static_cast<uint64_t>(first));
    for (int d = last - 1; d >= 0; --d) {
      if (++idx[d] < block[d]) break;
      idx[d] = 0;
    }
  }
  return sum;
}

}  // namespace moe
