// The routed experts of an MoE layer: one SwiGLU (or GELU) GEMM chain per expert on its
// contiguous rows of the expert-ordered buffer.
//
// See expert_schedule.h for the order the experts run in and why.

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/cpu/expert_schedule.h"

namespace moe::cpu {

using detail::expert_order;
using detail::for_each_expert;

void expert_ffn_forward(const float* x, const int64_t* offsets, int64_t num_experts,
                        const float* w_gate, const float* w_up, const float* w_down,
                        float* gate, float* up, float* h, float* y, int64_t width,
                        int64_t hidden) {
  const int64_t fc = hidden * width;
  for_each_expert(expert_order(offsets, num_experts, num_threads()), [&](int64_t i) {
    const int64_t begin = offsets[i], rows = offsets[i + 1] - begin;
    const float* xi = x + begin * width;  // (n, C)
    float* g = gate + begin * hidden;     // (n, F)
    float* u = up + begin * hidden;       // (n, F)
    float* hi = h + begin * hidden;       // (n, F)
    // SwiGLU: g = x W_gate[i]^T, u = x W_up[i]^T, h = silu(g) * u; GELU: h = gelu(u)
    // then y = h W_down[i]^T
    matmul(xi, w_up + i * fc, u, rows, hidden, width, false, true, 1.0f, 0.0f);
    if (w_gate) {
      matmul(xi, w_gate + i * fc, g, rows, hidden, width, false, true, 1.0f, 0.0f);
      swiglu_forward(g, u, hi, rows * hidden);
    } else {
      gelu_forward(u, hi, rows * hidden);
    }
    matmul(hi, w_down + i * fc, y + begin * width, rows, width, hidden, false, true, 1.0f,
           0.0f);
  });
}

void expert_ffn_backward(const float* x, const int64_t* offsets, int64_t num_experts,
                         const float* w_gate, const float* w_up, const float* w_down,
                         const float* gate, const float* up, const float* h, const float* dy,
                         float* dw_gate, float* dw_up, float* dw_down, float* dh, float* dgate,
                         float* dup, float* dx, int64_t width, int64_t hidden) {
  const int64_t fc = hidden * width;
  for_each_expert(expert_order(offsets, num_experts, num_threads()), [&](int64_t i) {
    const int64_t begin = offsets[i], rows = offsets[i + 1] - begin;
    const float* xi = x + begin * width;
    const float* dyi = dy + begin * width;
    const float* g = gate + begin * hidden;
    const float* u = up + begin * hidden;
    const float* hi = h + begin * hidden;
    float* dhi = dh + begin * hidden;
    float* dg = dgate + begin * hidden;
    float* du = dup + begin * hidden;
    float* dxi = dx + begin * width;
    // dW_down[i] (C, F) += dy^T h;  dh (n, F) = dy W_down[i]
    matmul(dyi, hi, dw_down + i * fc, width, hidden, rows, true, false, 1.0f, 1.0f);
    matmul(dyi, w_down + i * fc, dhi, rows, hidden, width, false, false, 1.0f, 0.0f);
    if (!w_gate) {
      // GELU: du = gelu'(u) dh;  dW_up[i] (F, C) += du^T x;  dx (n, C) = du W_up[i]
      gelu_backward(u, dhi, du, rows * hidden);
      matmul(du, xi, dw_up + i * fc, hidden, width, rows, true, false, 1.0f, 1.0f);
      matmul(du, w_up + i * fc, dxi, rows, width, hidden, false, false, 1.0f, 0.0f);
      return;
    }
    swiglu_backward(g, u, dhi, dg, du, rows * hidden);
    // dW_gate[i] (F, C) += dg^T x;  dW_up[i] += du^T x
    matmul(dg, xi, dw_gate + i * fc, hidden, width, rows, true, false, 1.0f, 1.0f);
    matmul(du, xi, dw_up + i * fc, hidden, width, rows, true, false, 1.0f, 1.0f);
    // dx (n, C) = dg W_gate[i] + du W_up[i]
    matmul(dg, w_gate + i * fc, dxi, rows, width, hidden, false, false, 1.0f, 0.0f);
    matmul(du, w_up + i * fc, dxi, rows, width, hidden, false, false, 1.0f, 1.0f);
  });
}

}  // namespace moe::cpu
