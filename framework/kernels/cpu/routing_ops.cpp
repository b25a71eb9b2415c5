// Fast routing kernels: top-k selection, node-limited masking, row gather/scatter for
// dispatch and combine, the block transpose of the all-to-alls, and the embedding
// lookup. The copies are memory-bound, parallel over rows (over whole blocks for the
// transpose); embedding_backward is parallel over column blocks instead, because
// repeated ids make rows collide.

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <vector>

#include "framework/core/error.h"
#include "framework/kernels/cpu/kernel_util.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

using detail::kMinParallelWork;

void topk(const float* x, float* values, int32_t* indices, int64_t rows,
          int64_t cols, int64_t k) {
  MOE_CHECK(k >= 0 && k <= cols, "topk k=", k, " out of range for cols=", cols);
  if (k == 0) return;
  // Insertion into a sorted list of k: O(cols * k), and k is small (experts per
  // token). Scanning in index order and moving past equal values (strict >) keeps
  // the lower index first on ties.
#pragma omp parallel for if (rows * cols * k > kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;  // (cols)
    float* val = values + r * k;     // (k) descending
    int32_t* idx = indices + r * k;
    int64_t filled = 0;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = xr[c];
      if (filled == k && !(v > val[k - 1])) continue;
      int64_t pos = filled < k ? filled++ : k - 1;  // slot freed at the end
      while (pos > 0 && v > val[pos - 1]) {
        val[pos] = val[pos - 1];
        idx[pos] = idx[pos - 1];
        --pos;
      }
      val[pos] = v;
      idx[pos] = static_cast<int32_t>(c);
    }
  }
}

void permute_rows(const float* src, const int32_t* index, const float* scale,
                  float* dst, int64_t n_dst, int64_t cols) {
#pragma omp parallel for if (n_dst * cols > kMinParallelWork)
  for (int64_t i = 0; i < n_dst; ++i) {
    float* out = dst + i * cols;  // (cols)
    if (index[i] < 0) {
      std::fill(out, out + cols, 0.0f);
      continue;
    }
    const float* in = src + static_cast<int64_t>(index[i]) * cols;
    if (!scale) {
      std::memcpy(out, in, static_cast<size_t>(cols) * sizeof(float));
      continue;
    }
    const float s = scale[i];
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) out[c] = s * in[c];
  }
}

void embedding_forward(const float* table, const int32_t* ids, float* out,
                       int64_t n, int64_t cols) {
#pragma omp parallel for if (n * cols > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i)
    std::memcpy(out + i * cols, table + static_cast<int64_t>(ids[i]) * cols,
                static_cast<size_t>(cols) * sizeof(float));
}

void embedding_backward(const float* dout, const int32_t* ids, float* dtable,
                        int64_t n, int64_t cols) {
  // Each thread owns a block of columns of dtable, so repeated ids never race and
  // the sum over repeats runs in token order, as in the reference.
  constexpr int64_t kBlock = 64;  // columns per task: a 256-byte strip of each row
  const int64_t blocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for if (n * cols > kMinParallelWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kBlock, c1 = std::min(cols, c0 + kBlock);
    for (int64_t i = 0; i < n; ++i) {
      float* row = dtable + static_cast<int64_t>(ids[i]) * cols;
      const float* g = dout + i * cols;
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) row[c] += g[c];
    }
  }
}

}  // namespace moe::cpu

namespace moe::cpu {

void transpose_blocks(const void* src, void* dst, const int64_t* counts, int64_t a_count,
                      int64_t b_count, int64_t element_bytes, bool inverse) {
  const int64_t blocks = a_count * b_count;
  // element offsets of block (a, b) in the [a][b] and in the [b][a] order
  std::vector<int64_t> ab(static_cast<size_t>(blocks)), ba(static_cast<size_t>(blocks));
  int64_t offset = 0;
  for (int64_t i = 0; i < blocks; ++i) {
    ab[i] = offset;
    offset += counts[i];
  }
  offset = 0;
  for (int64_t b = 0; b < b_count; ++b)
    for (int64_t a = 0; a < a_count; ++a) {
      ba[a * b_count + b] = offset;
      offset += counts[a * b_count + b];
    }
  const auto* from_bytes = static_cast<const std::byte*>(src);
  auto* to_bytes = static_cast<std::byte*>(dst);
  // Whole blocks per task: a few large memcpys beat many threads on small ones, and
  // below 256 KiB the copy is not worth a team.
#pragma omp parallel for schedule(dynamic, 1) if (offset * element_bytes > (1 << 18))
  for (int64_t i = 0; i < blocks; ++i) {
    const int64_t from = inverse ? ba[i] : ab[i];
    const int64_t to = inverse ? ab[i] : ba[i];
    std::memcpy(to_bytes + to * element_bytes, from_bytes + from * element_bytes,
                static_cast<size_t>(counts[i] * element_bytes));
  }
}

void limit_to_nodes(float* scores, int64_t rows, int64_t experts, const int32_t* expert_node,
                    int64_t nodes, int64_t keep, int64_t per_node, int64_t token_node,
                    float own_node_bonus) {
  std::vector<std::vector<int32_t>> node_experts(static_cast<size_t>(nodes));
  for (int64_t e = 0; e < experts; ++e)
    node_experts[expert_node[e]].push_back(static_cast<int32_t>(e));
#pragma omp parallel for if (rows * experts > (1 << 14))
  for (int64_t t = 0; t < rows; ++t) {
    float* s = scores + t * experts;  // (E)
    std::vector<float> node_score(static_cast<size_t>(nodes), 0.0f), mine;
    for (int64_t node = 0; node < nodes; ++node) {
      mine.clear();
      for (int32_t e : node_experts[node]) mine.push_back(s[e]);
      const size_t m = std::min(mine.size(), static_cast<size_t>(per_node));
      std::partial_sort(mine.begin(), mine.begin() + static_cast<std::ptrdiff_t>(m), mine.end(),
                        std::greater<float>());
      for (size_t i = 0; i < m; ++i) node_score[node] += mine[i];
    }
    node_score[token_node] += own_node_bonus;
    std::vector<int64_t> order(static_cast<size_t>(nodes));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return node_score[a] > node_score[b]; });
    for (int64_t i = keep; i < nodes; ++i)
      for (int32_t e : node_experts[order[i]]) s[e] = -std::numeric_limits<float>::infinity();
  }
}

}  // namespace moe::cpu
