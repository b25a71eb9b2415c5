// Fast element-wise activations: one OpenMP-parallel, vectorised pass each.
// The math is that of ref_ops.cpp in float with the vectorisable exp/erf of
// kernel_util.h.

#include <numbers>

#include "framework/kernels/cpu/kernel_util.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

using detail::erf_approx;
using detail::kMinParallelWork;
using detail::sigmoid_approx;

void silu_forward(const float* x, float* y, int64_t n) {
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * sigmoid_approx(x[i]);
}

void silu_backward(const float* x, const float* dy, float* dx, int64_t n) {
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const float s = sigmoid_approx(x[i]);
    dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));  // s + x s (1 - s)
  }
}

void gelu_forward(const float* x, float* y, int64_t n) {
  constexpr float kInvSqrt2 = std::numbers::sqrt2_v<float> / 2.0f;
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) y[i] = 0.5f * x[i] * (1.0f + erf_approx(x[i] * kInvSqrt2));
}

void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  constexpr float kInvSqrt2 = std::numbers::sqrt2_v<float> / 2.0f;
  constexpr float kInvSqrt2Pi = std::numbers::inv_sqrtpi_v<float> * kInvSqrt2;
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    // Phi(x) + x phi(x)
    const float cdf = 0.5f * (1.0f + erf_approx(x[i] * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * detail::exp_approx(-0.5f * x[i] * x[i]);
    dx[i] = dy[i] * (cdf + x[i] * pdf);
  }
}

void swiglu_forward(const float* g, const float* u, float* h, int64_t n) {
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) h[i] = g[i] * sigmoid_approx(g[i]) * u[i];
}

void swiglu_backward(const float* g, const float* u, const float* dh, float* dg,
                     float* du, int64_t n) {
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const float s = sigmoid_approx(g[i]);
    const float dh_i = dh[i];  // read before writing: dg or du may alias dh
    dg[i] = dh_i * u[i] * s * (1.0f + g[i] * (1.0f - s));
    du[i] = dh_i * g[i] * s;
  }
}

}  // namespace moe::cpu
