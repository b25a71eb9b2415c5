// The index arithmetic of the CUDA kernels (framework/kernels/device_index.h), run on the
// CPU against the reference kernels: top-k with ties, node-limited routing, the patch
// layout, the block transposes of the all-to-alls and the id grouping of the embedding
// gradient. These run on every machine; the kernels that use them are compared with
// their CPU twins on a GPU (tests/gpu/).

#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <tuple>
#include <numeric>
#include <vector>

#include "framework/core/rng.h"
#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/device_index.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using moe::testing::random_vector;

// Values from a small set, so that ties are common.
std::vector<float> tied_values(int64_t n, uint64_t seed) {
  std::vector<float> v = random_vector(n, seed);
  for (float& x : v) x = std::round(x * 3.0f) / 3.0f;
  return v;
}

TEST(DeviceIndex, TopkRowEqualsTheStableSortOfTheReference) {
  for (const auto& [rows, cols, k] : std::vector<std::array<int64_t, 3>>{
           {5, 8, 2}, {7, 16, 16}, {3, 1, 1}, {9, 64, 6}, {4, 5, 0}}) {
    const std::vector<float> x = tied_values(rows * cols, static_cast<uint64_t>(cols + k));
    std::vector<float> v_ref(rows * k), v(rows * k);
    std::vector<int32_t> i_ref(rows * k), i(rows * k);
    cpu::ref::topk(x.data(), v_ref.data(), i_ref.data(), rows, cols, k);
    for (int64_t r = 0; r < rows; ++r)
      device_index::topk_row(x.data() + r * cols, cols, k, v.data() + r * k, i.data() + r * k);
    EXPECT_EQ(i, i_ref) << rows << "x" << cols << " top-" << k;
    EXPECT_EQ(v, v_ref);
  }
}

TEST(DeviceIndex, NodeLimitEqualsTheReference) {
  const int64_t rows = 6, experts = 12, nodes = 4;
  // uneven nodes: 0 has 5 experts, 1 has 3, 2 has 4, 3 none
  const std::vector<int32_t> expert_node{0, 0, 1, 2, 0, 1, 2, 2, 0, 1, 2, 0};
  for (const auto& [keep, per_node, bonus] :
       std::vector<std::tuple<int64_t, int64_t, float>>{{1, 1, 0.0f}, {2, 2, 0.5f}, {3, 4, 0.0f}}) {
    const std::vector<float> scores = tied_values(rows * experts, static_cast<uint64_t>(keep));
    std::vector<float> ref = scores, dev = scores, node_score(nodes);
    cpu::ref::limit_to_nodes(ref.data(), rows, experts, expert_node.data(), nodes, keep, per_node,
                             1, bonus);
    for (int64_t r = 0; r < rows; ++r)
      device_index::limit_row_to_nodes(dev.data() + r * experts, experts, expert_node.data(),
                                       nodes, keep, per_node, 1, bonus, node_score.data());
    EXPECT_EQ(dev, ref) << "keep " << keep << ", per node " << per_node;
  }
}

TEST(DeviceIndex, PatchElementIsThePatchifyPermutation) {
  const int64_t batch = 2, channels = 3, height = 8, width = 12, patch = 4;
  const int64_t n = batch * channels * height * width;
  std::vector<float> x(n), ref(n), dev(n, -1.0f);
  std::iota(x.begin(), x.end(), 0.0f);
  cpu::ref::patchify(x.data(), ref.data(), batch, channels, height, width, patch);
  for (int64_t p = 0; p < n; ++p)
    dev[device_index::patch_element(p, channels, height, width, patch)] = x[p];
  EXPECT_EQ(dev, ref);
}

TEST(DeviceIndex, RopeFrequencyMatchesTheFormula) {
  EXPECT_EQ(device_index::rope_frequency(0, 8, 10000.0f), 1.0);
  EXPECT_DOUBLE_EQ(device_index::rope_frequency(2, 8, 10000.0f), std::pow(10000.0, -0.5));
}

TEST(DeviceIndex, BlockMovesEqualTheReferenceTranspose) {
  const int64_t a = 3, b = 4;
  // empty blocks included: an expert with no rows from a source
  const std::vector<int64_t> counts{2, 0, 1, 3, 0, 0, 2, 1, 4, 1, 0, 2};
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  for (const bool inverse : {false, true}) {
    std::vector<float> src(total * 2), ref(total * 2), dev(total * 2, -1.0f);
    std::iota(src.begin(), src.end(), 0.0f);
    cpu::ref::transpose_blocks(src.data(), ref.data(), counts.data(), a, b, 2 * sizeof(float),
                               inverse);
    for (const device_index::BlockMove& m : device_index::block_moves(counts, a, b, inverse))
      std::memcpy(dev.data() + m.dst * 2, src.data() + m.src * 2,
                  static_cast<size_t>(m.count) * 2 * sizeof(float));
    EXPECT_EQ(dev, ref) << (inverse ? "inverse" : "forward");
  }
}

TEST(DeviceIndex, RowGroupsAddInTheReferenceOrder) {
  const std::vector<int32_t> ids{3, 1, 3, 0, 3, 1, 7};
  const int64_t cols = 5, vocab = 8, n = static_cast<int64_t>(ids.size());
  const std::vector<float> dout = random_vector(n * cols, 11);
  std::vector<float> ref = random_vector(vocab * cols, 12), dev = ref;
  cpu::ref::embedding_backward(dout.data(), ids.data(), ref.data(), n, cols);
  const device_index::RowGroups g = device_index::group_rows_by_id(ids, vocab);
  EXPECT_EQ(g.id, (std::vector<int32_t>{0, 1, 3, 7}));
  // what the kernel does: per id and column, its rows added in order
  for (size_t k = 0; k < g.id.size(); ++k)
    for (int64_t c = 0; c < cols; ++c) {
      float acc = dev[g.id[k] * cols + c];
      for (int32_t q = g.starts[k]; q < g.starts[k + 1]; ++q) acc += dout[g.rows[q] * cols + c];
      dev[g.id[k] * cols + c] = acc;
    }
  EXPECT_EQ(dev, ref);  // bit for bit: the same additions in the same order
}

}  // namespace
}  // namespace moe
