// The vocabulary-parallel LM loss (nn/vocab_parallel.h), reference and CPU kernels. Each
// row is independent and summed serially (in double), so the fast versions split the rows
// over the threads and compute the reference's bits.

#include <algorithm>
#include <cmath>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/cpu/kernel_util.h"

namespace moe::cpu {
namespace {

using detail::kMinParallelWork;

void row_max(const float* logits, float* max, int64_t r, int64_t cols) {
  const float* x = logits + r * cols;
  max[r] = *std::max_element(x, x + cols);
}

void row_sums(const float* logits, const float* max, const int32_t* targets, int64_t begin,
              float* sums, int64_t rows, int64_t cols, int64_t r) {
  const float* x = logits + r * cols;
  double s = 0.0;
  for (int64_t c = 0; c < cols; ++c) s += std::exp(static_cast<double>(x[c] - max[r]));
  sums[r] = static_cast<float>(s);
  const int64_t t = targets[r];
  sums[rows + r] = t >= begin && t < begin + cols ? x[t - begin] : 0.0f;
}

void row_loss(const float* logits, const float* max, const float* sums, const int32_t* targets,
              int64_t begin, float scale, float* losses, float* dlogits, int64_t rows,
              int64_t cols, int64_t r) {
  const int64_t t = targets[r];
  const float* x = logits + r * cols;
  float* dx = dlogits + r * cols;
  if (t < 0) {  // ignored position: no loss, no gradient
    losses[r] = 0.0f;
    std::fill_n(dx, cols, 0.0f);
    return;
  }
  const float sum = sums[r], m = max[r];
  losses[r] = static_cast<float>(std::log(static_cast<double>(sum)) + m - sums[rows + r]);
  const float p_scale = scale / sum;
  for (int64_t c = 0; c < cols; ++c) dx[c] = p_scale * std::exp(x[c] - m);
  if (t >= begin && t < begin + cols) dx[t - begin] -= scale;
}

}  // namespace

void vocab_row_max(const float* logits, float* max, int64_t rows, int64_t cols) {
#pragma omp parallel for if (rows * cols > kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) row_max(logits, max, r, cols);
}

void vocab_row_sums(const float* logits, const float* max, const int32_t* targets,
                    int64_t begin, float* sums, int64_t rows, int64_t cols) {
#pragma omp parallel for if (rows * cols > kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r)
    row_sums(logits, max, targets, begin, sums, rows, cols, r);
}

void vocab_loss(const float* logits, const float* max, const float* sums,
                const int32_t* targets, int64_t begin, float scale, float* losses,
                float* dlogits, int64_t rows, int64_t cols) {
#pragma omp parallel for if (rows * cols > kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r)
    row_loss(logits, max, sums, targets, begin, scale, losses, dlogits, rows, cols, r);
}

namespace ref {

void vocab_row_max(const float* logits, float* max, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) row_max(logits, max, r, cols);
}

void vocab_row_sums(const float* logits, const float* max, const int32_t* targets,
                    int64_t begin, float* sums, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    row_sums(logits, max, targets, begin, sums, rows, cols, r);
}

void vocab_loss(const float* logits, const float* max, const float* sums,
                const int32_t* targets, int64_t begin, float scale, float* losses,
                float* dlogits, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    row_loss(logits, max, sums, targets, begin, scale, losses, dlogits, rows, cols, r);
}

}  // namespace ref
}  // namespace moe::cpu
