#include "framework/nn/adaln.h"

namespace moe {

// Images are independent (and write disjoint rows of dshift/dscale/dgate), so the
// loops split over images.

void modulate_forward(const float* x, const float* shift, const float* scale,
                      int64_t stride, float* y, int64_t batch, int64_t tokens,
                      int64_t width) {
#pragma omp parallel for if (batch * tokens * width > (1 << 15))
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
                       float* dx, float* dshift, float* dscale, int64_t batch,
                       int64_t tokens, int64_t width) {
#pragma omp parallel for if (batch * tokens * width > (1 << 15))
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
#pragma omp parallel for if (batch * tokens * width > (1 << 15))
  for (int64_t b = 0; b < batch; ++b) {
    const float* g = gate + b * stride;
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t row = (b * tokens + t) * width;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) out[row + j] = h[row + j] + g[j] * f[row + j];
    }
  }
}

void gated_add_backward(const float* gate, int64_t stride, const float* f,
                        const float* dout, float* df, float* dgate, int64_t batch,
                        int64_t tokens, int64_t width) {
#pragma omp parallel for if (batch * tokens * width > (1 << 15))
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

}  // namespace moe
