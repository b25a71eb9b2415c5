// The routed experts with bf16 matrix products (train.precision = bf16): the GEMM chain
// of expert_ffn.cpp on bf16 operands through matmul_bf16, in the same run order
// (expert_schedule.h). The element-wise steps compute in fp32 and round their outputs
// to bf16 where those feed a GEMM (the hidden h forward; dgate and dup backward), fused
// into one pass.

#include <numbers>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/cpu/expert_schedule.h"
#include "framework/kernels/cpu/kernel_util.h"

namespace moe::cpu {
namespace {

using detail::bf16_bits;
using detail::erf_approx;
using detail::exp_approx;
using detail::kMinParallelWork;
using detail::sigmoid_approx;

constexpr float kInvSqrt2 = std::numbers::sqrt2_v<float> / 2.0f;
constexpr float kInvSqrt2Pi = std::numbers::inv_sqrtpi_v<float> * kInvSqrt2;

uint16_t* bits_of(bf16* p) { return reinterpret_cast<uint16_t*>(p); }

// h = bf16(silu(g) u), or bf16(gelu(u)) when g is null.
void hidden_forward(const float* g, const float* u, bf16* h, int64_t n) {
  uint16_t* out = bits_of(h);
  if (g != nullptr) {
#pragma omp parallel for simd if (n > kMinParallelWork)
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_bits(g[i] * sigmoid_approx(g[i]) * u[i]);
    return;
  }
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i)
    out[i] = bf16_bits(0.5f * u[i] * (1.0f + erf_approx(u[i] * kInvSqrt2)));
}

// SwiGLU: dg = bf16(dh u silu'(g)), du = bf16(dh silu(g)); GELU (g null): du =
// bf16(dh gelu'(u)).
void hidden_backward(const float* g, const float* u, const float* dh, bf16* dg, bf16* du,
                     int64_t n) {
  uint16_t* dg_out = bits_of(dg);
  uint16_t* du_out = bits_of(du);
  if (g != nullptr) {
#pragma omp parallel for simd if (n > kMinParallelWork)
    for (int64_t i = 0; i < n; ++i) {
      const float s = sigmoid_approx(g[i]);
      dg_out[i] = bf16_bits(dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s)));
      du_out[i] = bf16_bits(dh[i] * g[i] * s);
    }
    return;
  }
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const float cdf = 0.5f * (1.0f + erf_approx(u[i] * kInvSqrt2));
    const float pdf = kInvSqrt2Pi * exp_approx(-0.5f * u[i] * u[i]);
    du_out[i] = bf16_bits(dh[i] * (cdf + u[i] * pdf));
  }
}

}  // namespace

void expert_ffn_forward_bf16(const bf16* x, const int64_t* offsets, int64_t num_experts,
                             const bf16* w_gate, const bf16* w_up, const bf16* w_down,
                             float* gate, float* up, bf16* h, float* y, int64_t width,
                             int64_t hidden) {
  const int64_t fc = hidden * width;
  detail::for_each_expert(detail::expert_order(offsets, num_experts, num_threads()), [&](int64_t i) {
    const int64_t begin = offsets[i], rows = offsets[i + 1] - begin;
    const bf16* xi = x + begin * width;           // (n, C)
    float* g = w_gate ? gate + begin * hidden : nullptr;  // (n, F)
    float* u = up + begin * hidden;                // (n, F)
    bf16* hi = h + begin * hidden;                 // (n, F)
    // u = x W_up[i]^T, g = x W_gate[i]^T, h = bf16(silu(g) u) (GELU: bf16(gelu(u))),
    // y = h W_down[i]^T
    matmul_bf16(xi, w_up + i * fc, u, rows, hidden, width, false, true, false);
    if (w_gate) matmul_bf16(xi, w_gate + i * fc, g, rows, hidden, width, false, true, false);
    hidden_forward(g, u, hi, rows * hidden);
    matmul_bf16(hi, w_down + i * fc, y + begin * width, rows, width, hidden, false, true, false);
  });
}

void expert_ffn_backward_bf16(const bf16* x, const int64_t* offsets, int64_t num_experts,
                              const bf16* w_gate, const bf16* w_up, const bf16* w_down,
                              const float* gate, const float* up, const bf16* h,
                              const bf16* dy, float* dw_gate, float* dw_up, float* dw_down,
                              float* dh, bf16* dgate, bf16* dup, float* dx, int64_t width,
                              int64_t hidden) {
  const int64_t fc = hidden * width;
  detail::for_each_expert(detail::expert_order(offsets, num_experts, num_threads()), [&](int64_t i) {
    const int64_t begin = offsets[i], rows = offsets[i + 1] - begin;
    const bf16* xi = x + begin * width;
    const bf16* dyi = dy + begin * width;
    const bf16* hi = h + begin * hidden;
    float* dhi = dh + begin * hidden;
    bf16* dg = dgate + begin * hidden;
    bf16* du = dup + begin * hidden;
    float* dxi = dx + begin * width;
    // dW_down[i] (C, F) += dy^T h;  dh (n, F) = dy W_down[i]
    matmul_bf16(dyi, hi, dw_down + i * fc, width, hidden, rows, true, false, true);
    matmul_bf16(dyi, w_down + i * fc, dhi, rows, hidden, width, false, false, false);
    hidden_backward(w_gate ? gate + begin * hidden : nullptr, up + begin * hidden, dhi, dg, du,
                    rows * hidden);
    // dW_up[i] (F, C) += du^T x;  dx (n, C) = du W_up[i] (+ dg W_gate[i])
    matmul_bf16(du, xi, dw_up + i * fc, hidden, width, rows, true, false, true);
    matmul_bf16(du, w_up + i * fc, dxi, rows, width, hidden, false, false, false);
    if (!w_gate) return;
    matmul_bf16(dg, xi, dw_gate + i * fc, hidden, width, rows, true, false, true);
    matmul_bf16(dg, w_gate + i * fc, dxi, rows, width, hidden, false, false, true);
  });
}

}  // namespace moe::cpu
