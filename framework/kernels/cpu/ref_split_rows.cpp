// moe::cpu::ref twins of framework/kernels/cpu/split_rows.cpp: plain loops over the rows
// of two buffers, sums in double (like the other references).

#include "framework/core/bf16.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu::ref {

namespace {

// Element c of row r of the joined rows (head fp32, tail fp32 or bf16).
float joined(const float* head, int64_t head_rows, const float* tail, const bf16* tail_bf16,
             int64_t r, int64_t c, int64_t cols) {
  if (r < head_rows) return head[r * cols + c];
  const int64_t i = (r - head_rows) * cols + c;
  return tail_bf16 != nullptr ? to_float(tail_bf16[i]) : tail[i];
}

}  // namespace

void combine_rows_split(const float* head, int64_t head_rows, const float* tail,
                        const bf16* tail_bf16, const int32_t* row, const float* weight,
                        float* out, int64_t n, int64_t k, int64_t cols) {
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < cols; ++c) {
      double acc = 0.0;
      for (int64_t j = 0; j < k; ++j) {
        const int32_t r = row[t * k + j];
        if (r < 0) continue;  // dropped assignment contributes nothing
        acc += (weight ? weight[t * k + j] : 1.0f) *
               static_cast<double>(joined(head, head_rows, tail, tail_bf16, r, c, cols));
      }
      out[t * cols + c] = static_cast<float>(acc);
    }
}

void gather_dot_split(const float* a, const int32_t* a_row, const float* head,
                      int64_t head_rows, const float* tail, const bf16* tail_bf16,
                      const int32_t* b_row, float* out, int64_t n, int64_t cols) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t ra = a_row ? a_row[i] : i, rb = b_row ? b_row[i] : i;
    double sum = 0.0;
    if (ra >= 0 && rb >= 0)
      for (int64_t j = 0; j < cols; ++j)
        sum += static_cast<double>(a[ra * cols + j]) *
               joined(head, head_rows, tail, tail_bf16, rb, j, cols);
    out[i] = static_cast<float>(sum);
  }
}

void permute_rows_bf16(const float* src, const int32_t* index, const float* scale,
                       bf16* dst, int64_t n_dst, int64_t cols) {
  for (int64_t i = 0; i < n_dst; ++i)
    for (int64_t c = 0; c < cols; ++c) {
      const float s = scale ? scale[i] : 1.0f;
      dst[i * cols + c] = to_bf16(index[i] < 0 ? 0.0f : s * src[index[i] * cols + c]);
    }
}

}  // namespace moe::cpu::ref
