// Fast routing kernels: top-k selection, row gather/scatter for dispatch and
// combine, and the embedding lookup. All are memory-bound row copies, parallel
// over rows; embedding_backward is parallel over column blocks instead, because
// repeated ids make rows collide.

#include <algorithm>
#include <cstring>

#include "framework/core/error.h"
#include "framework/kernels/cpu/kernel_util.h"
#include "framework/kernels/ops.h"

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

void combine_rows(const float* src, const int32_t* slot, const float* weight,
                  float* out, int64_t n, int64_t k, int64_t cols) {
#pragma omp parallel for if (n * k * cols > kMinParallelWork)
  for (int64_t t = 0; t < n; ++t) {
    float* o = out + t * cols;  // (cols)
    std::fill(o, o + cols, 0.0f);
    for (int64_t j = 0; j < k; ++j) {
      const int32_t s = slot[t * k + j];
      if (s < 0) continue;  // dropped assignment contributes nothing
      const float w = weight ? weight[t * k + j] : 1.0f;
      const float* in = src + static_cast<int64_t>(s) * cols;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) o[c] += w * in[c];
    }
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
