// Fast kernels of the layers' own element-wise steps: the residual add, scaling, the
// row-broadcast add of a bias or position table and its gradient, DiT's adaLN modulate
// and gated add, and the gathered row dot product of combine backward. Memory-bound
// passes, split over rows (images for adaLN) above kMinParallelWork floats.

#include "framework/kernels/cpu/kernel_util.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

using detail::kMinParallelWork;

void add(const float* a, const float* b, float* out, int64_t n) {
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

void scale(float* x, float alpha, int64_t n) {
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) x[i] *= alpha;
}

void add_rows(const float* x, const float* table, float* y, int64_t rows, int64_t cols,
              int64_t period) {
#pragma omp parallel for if (rows * cols > kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = table + (r % period) * cols;
    for (int64_t j = 0; j < cols; ++j) y[r * cols + j] = x[r * cols + j] + p[j];
  }
}

void sum_rows(const float* dy, float* dtable, int64_t rows, int64_t cols, int64_t period) {
  // Serial over rows: rows sharing a table row would race, and the fixed order keeps the
  // sum reproducible.
  for (int64_t r = 0; r < rows; ++r) {
    float* d = dtable + (r % period) * cols;
    for (int64_t j = 0; j < cols; ++j) d[j] += dy[r * cols + j];
  }
}

// Images are independent (and write disjoint rows of dshift/dscale/dgate), so the adaLN
// loops split over images.

void modulate_forward(const float* x, const float* shift, const float* scale, int64_t stride,
                      float* y, int64_t batch, int64_t tokens, int64_t width) {
#pragma omp parallel for if (batch * tokens * width > kMinParallelWork)
  for (int64_t b = 0; b < batch; ++b) {
    const float* sh = shift + b * stride;
    const float* sc = scale + b * stride;
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t row = (b * tokens + t) * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) y[row + j] = x[row + j] * (1.0f + sc[j]) + sh[j];
    }
  }
}

void modulate_backward(const float* x, const float* scale, int64_t stride, const float* dy,
                       float* dx, float* dshift, float* dscale, int64_t batch, int64_t tokens,
                       int64_t width) {
#pragma omp parallel for if (batch * tokens * width > kMinParallelWork)
  for (int64_t b = 0; b < batch; ++b) {
    const float* sc = scale + b * stride;
    float* dsh = dshift + b * stride;
    float* dsc = dscale + b * stride;
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t row = (b * tokens + t) * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) {
        dx[row + j] = dy[row + j] * (1.0f + sc[j]);
        dsh[j] += dy[row + j];
        dsc[j] += dy[row + j] * x[row + j];
      }
    }
  }
}

void gated_add_forward(const float* h, const float* gate, int64_t stride, const float* f,
                       float* out, int64_t batch, int64_t tokens, int64_t width) {
#pragma omp parallel for if (batch * tokens * width > kMinParallelWork)
  for (int64_t b = 0; b < batch; ++b) {
    const float* g = gate + b * stride;
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t row = (b * tokens + t) * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) out[row + j] = h[row + j] + g[j] * f[row + j];
    }
  }
}

void gated_add_backward(const float* gate, int64_t stride, const float* f, const float* dout,
                        float* df, float* dgate, int64_t batch, int64_t tokens,
                        int64_t width) {
#pragma omp parallel for if (batch * tokens * width > kMinParallelWork)
  for (int64_t b = 0; b < batch; ++b) {
    const float* g = gate + b * stride;
    float* dg = dgate + b * stride;
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t row = (b * tokens + t) * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) {
        df[row + j] = g[j] * dout[row + j];
        dg[j] += dout[row + j] * f[row + j];
      }
    }
  }
}

}  // namespace moe::cpu
