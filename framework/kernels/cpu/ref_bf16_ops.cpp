// Reference twins of the bf16 kernels (moe::cpu::ref): the scalar rounding of
// framework/core/bf16.h, and every product computed by the fp32 reference kernels on the
// bf16 values widened to fp32 (exact), summed in double. The rounding points are those of
// the fast kernels, so the two differ only by the fast kernels' fp32 summation (and,
// through it, by rare one-ulp flips of a value rounded to bf16).

#include <algorithm>
#include <cmath>
#include <vector>

#include "framework/core/bf16.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu::ref {
namespace {

std::vector<float> widened(const bf16* x, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[i] = to_float(x[i]);
  return out;
}

// x rounded to bf16 into out, and the rounded values back in x.
void round_into(std::vector<float>& x, bf16* out) {
  for (size_t i = 0; i < x.size(); ++i) {
    out[i] = to_bf16(x[i]);
    x[i] = to_float(out[i]);
  }
}

}  // namespace

void convert_to_bf16(const float* x, bf16* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = to_bf16(x[i]);
}

void convert_from_bf16(const bf16* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = to_float(x[i]);
}

void matmul_bf16(const bf16* a, const bf16* b, float* c, int64_t m, int64_t n, int64_t k,
                 bool trans_a, bool trans_b, bool accumulate) {
  const std::vector<float> a32 = widened(a, m * k), b32 = widened(b, k * n);
  matmul(a32.data(), b32.data(), c, m, n, k, trans_a, trans_b, 1.0f, accumulate ? 1.0f : 0.0f);
}

void expert_ffn_forward_bf16(const bf16* x, const int64_t* offsets, int64_t num_experts,
                             const bf16* w_gate, const bf16* w_up, const bf16* w_down,
                             float* gate, float* up, bf16* h, float* y, int64_t width,
                             int64_t hidden) {
  const int64_t fc = hidden * width;
  for (int64_t i = 0; i < num_experts; ++i) {
    const int64_t begin = offsets[i], rows = offsets[i + 1] - begin;
    const std::vector<float> xi = widened(x + begin * width, rows * width);  // (n, C)
    const std::vector<float> wu = widened(w_up + i * fc, fc);                // (F, C)
    const std::vector<float> wd = widened(w_down + i * fc, fc);              // (C, F)
    float* u = up + begin * hidden;
    std::vector<float> hi(static_cast<size_t>(rows * hidden));  // (n, F)
    // u = x W_up^T; SwiGLU: g = x W_gate^T, h = silu(g) u; GELU: h = gelu(u)
    matmul(xi.data(), wu.data(), u, rows, hidden, width, false, true, 1.0f, 0.0f);
    if (w_gate) {
      const std::vector<float> wg = widened(w_gate + i * fc, fc);
      float* g = gate + begin * hidden;
      matmul(xi.data(), wg.data(), g, rows, hidden, width, false, true, 1.0f, 0.0f);
      swiglu_forward(g, u, hi.data(), rows * hidden);
    } else {
      gelu_forward(u, hi.data(), rows * hidden);
    }
    round_into(hi, h + begin * hidden);  // the down projection's operand is bf16(h)
    matmul(hi.data(), wd.data(), y + begin * width, rows, width, hidden, false, true, 1.0f,
           0.0f);
  }
}

void expert_ffn_backward_bf16(const bf16* x, const int64_t* offsets, int64_t num_experts,
                              const bf16* w_gate, const bf16* w_up, const bf16* w_down,
                              const float* gate, const float* up, const bf16* h,
                              const bf16* dy, float* dw_gate, float* dw_up, float* dw_down,
                              float* dh, bf16* dgate, bf16* dup, float* dx, int64_t width,
                              int64_t hidden) {
  const int64_t fc = hidden * width;
  for (int64_t i = 0; i < num_experts; ++i) {
    const int64_t begin = offsets[i], rows = offsets[i + 1] - begin, n = rows * hidden;
    const std::vector<float> xi = widened(x + begin * width, rows * width);  // (n, C)
    const std::vector<float> dyi = widened(dy + begin * width, rows * width);
    const std::vector<float> hi = widened(h + begin * hidden, n);           // (n, F)
    const std::vector<float> wu = widened(w_up + i * fc, fc);
    const std::vector<float> wd = widened(w_down + i * fc, fc);
    float* dhi = dh + begin * hidden;
    float* dxi = dx + begin * width;
    // dW_down (C, F) += dy^T h;  dh (n, F) = dy W_down
    matmul(dyi.data(), hi.data(), dw_down + i * fc, width, hidden, rows, true, false, 1.0f, 1.0f);
    matmul(dyi.data(), wd.data(), dhi, rows, hidden, width, false, false, 1.0f, 0.0f);
    std::vector<float> dg(static_cast<size_t>(n)), du(static_cast<size_t>(n));
    if (w_gate)
      swiglu_backward(gate + begin * hidden, up + begin * hidden, dhi, dg.data(), du.data(), n);
    else
      gelu_backward(up + begin * hidden, dhi, du.data(), n);
    // The gradients' operands are bf16(du), bf16(dg).
    round_into(du, dup + begin * hidden);
    // dW_up (F, C) += du^T x;  dx (n, C) = du W_up (+ dg W_gate)
    matmul(du.data(), xi.data(), dw_up + i * fc, hidden, width, rows, true, false, 1.0f, 1.0f);
    matmul(du.data(), wu.data(), dxi, rows, width, hidden, false, false, 1.0f, 0.0f);
    if (!w_gate) continue;
    round_into(dg, dgate + begin * hidden);
    const std::vector<float> wg = widened(w_gate + i * fc, fc);
    matmul(dg.data(), xi.data(), dw_gate + i * fc, hidden, width, rows, true, false, 1.0f, 1.0f);
    matmul(dg.data(), wg.data(), dxi, rows, width, hidden, false, false, 1.0f, 1.0f);
  }
}

namespace {

// The probabilities of query row t of head (b, h) over its n visible keys, in double from
// the bf16 q, k: p[s] = exp(S[s] / sqrt(D) - max) / sum, with max and 1 / sum returned.
struct SoftmaxRow {
  double max, inv;
};
SoftmaxRow probabilities(const bf16* qkv, int64_t T, int64_t H, int64_t D, int64_t b,
                         int64_t h, int64_t t, int64_t n, std::vector<double>& p) {
  const int64_t row = 3 * H * D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  const bf16* q = qkv + (b * T + t) * row + h * D;
  double mx = -INFINITY, sum = 0.0;
  for (int64_t s = 0; s < n; ++s) {
    const bf16* k = qkv + (b * T + s) * row + H * D + h * D;
    double dot = 0.0;
    for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(to_float(q[d])) * to_float(k[d]);
    p[s] = dot * scale;
    mx = std::max(mx, p[s]);
  }
  for (int64_t s = 0; s < n; ++s) sum += (p[s] = std::exp(p[s] - mx));
  for (int64_t s = 0; s < n; ++s) p[s] /= sum;
  return {mx, 1.0 / sum};
}

}  // namespace

void attention_forward_bf16(const bf16* qkv, float* stats, float* out, int64_t B, int64_t T,
                            int64_t H, int64_t D, bool causal) {
  const int64_t row = 3 * H * D;
  std::vector<double> p(static_cast<size_t>(T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        const int64_t n = causal ? t + 1 : T;
        const SoftmaxRow sm = probabilities(qkv, T, H, D, b, h, t, n, p);
        float* st = stats + ((b * H + h) * T + t) * 2;
        st[0] = static_cast<float>(sm.max);
        st[1] = static_cast<float>(sm.inv);
        for (int64_t d = 0; d < D; ++d) {  // out = bf16(P) v
          double o = 0.0;
          for (int64_t s = 0; s < n; ++s)
            o += round_to_bf16(static_cast<float>(p[s])) *
                 static_cast<double>(to_float(qkv[(b * T + s) * row + 2 * H * D + h * D + d]));
          out[(b * T + t) * H * D + h * D + d] = static_cast<float>(o);
        }
      }
}

// The reference recomputes the probabilities from q and k (stats and out are the fast
// kernels' interface; the reference's own softmax is exact).
void attention_backward_bf16(const bf16* qkv, const float* /*stats*/, const float* /*out*/,
                             const float* dout, float* dqkv, int64_t B, int64_t T, int64_t H,
                             int64_t D, bool causal) {
  const int64_t row = 3 * H * D, width = H * D;
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  auto at = [&](int64_t b, int64_t t, int64_t part, int64_t h, int64_t d) {
    return static_cast<double>(to_float(qkv[(b * T + t) * row + part * width + h * D + d]));
  };
  auto go = [&](int64_t b, int64_t t, int64_t h, int64_t d) {  // bf16(dout)
    return static_cast<double>(round_to_bf16(dout[(b * T + t) * width + h * D + d]));
  };
  std::vector<double> p(static_cast<size_t>(T)), a(static_cast<size_t>(T * T)),
      ds(static_cast<size_t>(T * T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      std::fill(a.begin(), a.end(), 0.0);
      std::fill(ds.begin(), ds.end(), 0.0);
      for (int64_t t = 0; t < T; ++t) {  // P and dS (T, T)
        const int64_t n = causal ? t + 1 : T;
        probabilities(qkv, T, H, D, b, h, t, n, p);
        std::vector<double> dp(static_cast<size_t>(n));
        double row_dot = 0.0;
        for (int64_t s = 0; s < n; ++s) {  // dP = bf16(dout) v^T
          a[t * T + s] = p[s];
          for (int64_t d = 0; d < D; ++d) dp[s] += go(b, t, h, d) * at(b, s, 2, h, d);
          row_dot += p[s] * dp[s];
        }
        for (int64_t s = 0; s < n; ++s) ds[t * T + s] = p[s] * (dp[s] - row_dot) * scale;
      }
      auto r = [](double x) { return static_cast<double>(round_to_bf16(static_cast<float>(x))); };
      for (int64_t i = 0; i < T; ++i)
        for (int64_t d = 0; d < D; ++d) {
          double dq = 0.0, dk = 0.0, dv = 0.0;
          for (int64_t j = 0; j < T; ++j) {
            dq += r(ds[i * T + j]) * at(b, j, 1, h, d);  // dq_i = dS_i k
            dk += r(ds[j * T + i]) * at(b, j, 0, h, d);  // dk_i = dS^T_i q
            dv += r(a[j * T + i]) * go(b, j, h, d);      // dv_i = P^T_i dout
          }
          float* base = dqkv + (b * T + i) * row + h * D + d;
          base[0] = static_cast<float>(dq);
          base[width] = static_cast<float>(dk);
          base[2 * width] = static_cast<float>(dv);
        }
    }
}

}  // namespace moe::cpu::ref
