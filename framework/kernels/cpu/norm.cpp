// Fast RMSNorm and LayerNorm. Forward and dx: rows in parallel, each row in
// vectorised passes. The weight gradients sum over rows, so they are a second
// pass parallel over column blocks (no per-thread copies, no atomics, no
// allocation), reading x and dy once more.

#include <algorithm>
#include <cmath>

#include "framework/kernels/cpu/kernel_util.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

using detail::kMinParallelWork;

namespace {

constexpr int64_t kColBlock = 64;  // columns per task in the dw pass

// out[c] += sum_r term(r, c), parallel over blocks of columns; term(r, c) for one row
// at a time keeps every column's sum in row order (the same for any thread count).
template <class Term>
void accumulate_columns(float* out, int64_t rows, int64_t cols, Term term) {
  const int64_t blocks = (cols + kColBlock - 1) / kColBlock;
#pragma omp parallel for if (rows * cols > kMinParallelWork)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColBlock, c1 = std::min(cols, c0 + kColBlock);
    float acc[kColBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
      for (int64_t c = c0; c < c1; ++c) acc[c - c0] += term(r, c);
    }
    for (int64_t c = c0; c < c1; ++c) out[c] += acc[c - c0];
  }
}

// dw[c] += sum_r dy[r,c] * xhat[r,c], xhat = (x - shift[r]) * rstd[r]
// (shift null: RMSNorm).
void accumulate_dw(const float* x, const float* shift, const float* rstd,
                   const float* dy, float* dw, int64_t rows, int64_t cols) {
  accumulate_columns(dw, rows, cols, [=](int64_t r, int64_t c) {
    const float mu = shift ? shift[r] : 0.0f;
    return dy[r * cols + c] * (x[r * cols + c] - mu) * rstd[r];
  });
}

// db[c] += sum_r dy[r,c]
void accumulate_db(const float* dy, float* db, int64_t rows, int64_t cols) {
  accumulate_columns(db, rows, cols,
                     [=](int64_t r, int64_t c) { return dy[r * cols + c]; });
}

}  // namespace

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd,
                     int64_t rows, int64_t cols, float eps) {
#pragma omp parallel for if (rows * cols > kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;  // (C)
    float* yr = y + r * cols;
    float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
    for (int64_t c = 0; c < cols; ++c) ss += xr[c] * xr[c];
    const float rs = 1.0f / std::sqrt(ss / static_cast<float>(cols) + eps);
    rstd[r] = rs;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) yr[c] = xr[c] * rs * w[c];
  }
}

void rmsnorm_backward(const float* x, const float* w, const float* rstd,
                      const float* dy, float* dx, float* dw, int64_t rows,
                      int64_t cols) {
  accumulate_dw(x, nullptr, rstd, dy, dw, rows, cols);  // first: dx may alias dy
#pragma omp parallel for if (rows * cols > kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* dyr = dy + r * cols;
    float* dxr = dx + r * cols;
    const float rs = rstd[r];
    // dx_c = rs w_c dy_c - x_c rs^3 / C * sum_j dy_j w_j x_j
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t c = 0; c < cols; ++c) dot += dyr[c] * w[c] * xr[c];
    const float coef = rs * rs * rs * dot / static_cast<float>(cols);
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) dxr[c] = rs * w[c] * dyr[c] - xr[c] * coef;
  }
}

void layernorm_forward(const float* x, const float* w, const float* b, float* y,
                       float* mean, float* rstd, int64_t rows, int64_t cols,
                       float eps) {
  const float inv_cols = 1.0f / static_cast<float>(cols);
#pragma omp parallel for if (rows * cols > kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;  // (C)
    float* yr = y + r * cols;
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < cols; ++c) sum += xr[c];
    const float mu = sum * inv_cols;
    float var = 0.0f;  // two-pass variance: no cancellation for large means
#pragma omp simd reduction(+ : var)
    for (int64_t c = 0; c < cols; ++c) var += (xr[c] - mu) * (xr[c] - mu);
    const float rs = 1.0f / std::sqrt(var * inv_cols + eps);
    mean[r] = mu;
    rstd[r] = rs;
    if (w && b) {
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) yr[c] = (xr[c] - mu) * rs * w[c] + b[c];
    } else {
      for (int64_t c = 0; c < cols; ++c)
        yr[c] = (xr[c] - mu) * rs * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
    }
  }
}

void layernorm_backward(const float* x, const float* w, const float* mean,
                        const float* rstd, const float* dy, float* dx, float* dw,
                        float* db, int64_t rows, int64_t cols) {
  // Parameter gradients first: dx may alias dy.
  if (dw) accumulate_dw(x, mean, rstd, dy, dw, rows, cols);
  if (db) accumulate_db(dy, db, rows, cols);
  const float inv_cols = 1.0f / static_cast<float>(cols);
#pragma omp parallel for if (rows * cols > kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* dyr = dy + r * cols;
    float* dxr = dx + r * cols;
    const float mu = mean[r], rs = rstd[r];
    // g = dy * w; dx = rs * (g - mean(g) - xhat * mean(g * xhat))
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_g_xhat)
    for (int64_t c = 0; c < cols; ++c) {
      const float g = dyr[c] * (w ? w[c] : 1.0f);
      sum_g += g;
      sum_g_xhat += g * (xr[c] - mu) * rs;
    }
    const float mean_g = sum_g * inv_cols, mean_g_xhat = sum_g_xhat * inv_cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) {
      const float g = dyr[c] * (w ? w[c] : 1.0f);
      dxr[c] = rs * (g - mean_g - (xr[c] - mu) * rs * mean_g_xhat);
    }
  }
}

}  // namespace moe::cpu
