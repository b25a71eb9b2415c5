// Fast rotary embedding and causal attention.
//
// Attention is written as direct loops parallel over (b, h), not as sgemm calls:
// the head width D is small (16-64), so each head is a string of thin (T,T,D)
// products that OpenBLAS runs far below peak (per-head sgemm measured 3-4x slower
// than these loops at D = 16). Every product below is
// in the form C[i][j] += A[i][p] * B[p][j] with j contiguous, which GCC vectorises;
// K (forward) and V (backward) are first transposed into a per-thread (D,T) buffer
// for the products that run over s. The head loops are templates on D so that for
// the common widths the (D) accumulators live in registers.

#include <algorithm>
#include <cmath>
#include <vector>

#include "framework/core/error.h"
#include "framework/kernels/cpu/kernel_util.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

using detail::exp_approx;
using detail::kMinParallelWork;

void rope_apply(float* x, int64_t B, int64_t T, int64_t H, int64_t D,
                int64_t stride, float theta, bool inverse) {
  constexpr int64_t kMaxHalf = 256;
  MOE_CHECK(D % 2 == 0 && D / 2 <= kMaxHalf, "rope needs an even head dim <= ",
            2 * kMaxHalf, ", got D=", D);
  const int64_t half = D / 2;
  double inv_freq[kMaxHalf];  // theta^(-2i/D)
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = std::pow(static_cast<double>(theta), -2.0 * i / D);
  // Parallel over positions: each t computes its cos/sin once and rotates all
  // B*H heads at that position.
#pragma omp parallel for if (B * T * H * D > kMinParallelWork)
  for (int64_t t = 0; t < T; ++t) {
    float cs[kMaxHalf], sn[kMaxHalf];
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(t) * inv_freq[i];  // double: t up to 1e4
      cs[i] = static_cast<float>(std::cos(angle));
      sn[i] = static_cast<float>(inverse ? -std::sin(angle) : std::sin(angle));
    }
    for (int64_t b = 0; b < B; ++b) {
      float* row = x + (b * T + t) * stride;  // (H, D)
      for (int64_t h = 0; h < H; ++h) {
        float* x1 = row + h * D;  // first half of the head
        float* x2 = x1 + half;    // second half
#pragma omp simd
        for (int64_t i = 0; i < half; ++i) {
          const float a = x1[i], c = x2[i];
          x1[i] = a * cs[i] - c * sn[i];
          x2[i] = c * cs[i] + a * sn[i];
        }
      }
    }
  }
}

namespace {

constexpr int64_t kMaxHeadDim = 256;

// One head's view of the buffers. q, k, v, dq, dk, dv rows of D floats `row` apart
// (B,T,3,H,D layout: row = 3*H*D); out / dout rows `out_row` apart.
struct HeadView {
  const float* q;
  const float* k;
  const float* v;
  int64_t row;
  int64_t out_row;
  int64_t T;
  bool causal;
};

// Rows handled together in the (D)-wide products: each row is an independent chain
// of FMAs (a single chain is latency-bound) and they share the loads of the other
// operand. 128/D keeps the accumulators at <= 8 vectors of 16 floats per set.
constexpr int64_t block_rows(int kD) {
  return kD <= 0 ? 1 : (128 / kD < 1 ? 1 : (128 / kD > 4 ? 4 : 128 / kD));
}

// Keys per chunk of a score row: 4 vectors of 16 floats, four independent FMA chains.
constexpr int64_t kKeyChunk = 64;

// Leading dimension of a (D,T) transposed buffer: whole chunks (a chunk may run past
// T into the zero padding), plus 16 so that the D rows are not a multiple of 4 KiB
// apart: at T = 1024 they would all map to one L1 set and thrash (8x slower, D = 64).
constexpr int64_t transposed_ld(int64_t T) {
  return (T + kKeyChunk - 1) / kKeyChunk * kKeyChunk + 16;
}

// src rows (T, D) with row stride `row` -> dst (D, T) with leading dimension ld.
void transpose_rows(const float* src, int64_t row, float* dst, int64_t T, int64_t D,
                    int64_t ld) {
  for (int64_t s = 0; s < T; ++s)
    for (int64_t d = 0; d < D; ++d) dst[d * ld + s] = src[s * row + d];
}

// out[s] = sum_d x[d] * yt[d * ld + s] for s < n, in chunks of kKeyChunk keys held
// in registers while d runs: each yt element is loaded once, and the chunk's four
// vectors are independent chains (one chain of D FMAs per vector would stall on
// FMA latency).
template <int kD>
void row_times_transposed(const float* x, const float* yt, float* out, int64_t n,
                          int64_t ld, int64_t d_runtime) {
  const int64_t D = kD > 0 ? kD : d_runtime;
  for (int64_t s0 = 0; s0 < n; s0 += kKeyChunk) {
    float acc[kKeyChunk] = {};
    for (int64_t d = 0; d < D; ++d) {
      const float xd = x[d];
      const float* y = yt + d * ld + s0;
#pragma omp simd
      for (int64_t j = 0; j < kKeyChunk; ++j) acc[j] += xd * y[j];
    }
    std::copy(acc, acc + std::min(kKeyChunk, n - s0), out + s0);
  }
}

// For the rows r < kBlock of a block starting at r0 (rows past `rows` repeat the
// last one and are not stored): dst_r = sum_{i < n} w[(r0 + r) * T + i] * src_i,
// with src_i = src + i * src_row and dst_r = dst + r * dst_row, all (D).
// Weights past a row's visible range are exact zeros, so summing to the block's
// largest n changes no value.
template <int kD>
void weighted_rows(const float* w, int64_t T, int64_t r0, int64_t rows, int64_t n,
                   const float* src, int64_t src_row, float* dst, int64_t dst_row,
                   int64_t d_runtime) {
  constexpr int64_t kBlock = block_rows(kD);
  const int64_t D = kD > 0 ? kD : d_runtime;
  float acc[kBlock][kD > 0 ? kD : kMaxHeadDim] = {};
  const float* w_row[kBlock];
  for (int64_t r = 0; r < kBlock; ++r) w_row[r] = w + (r0 + std::min(r, rows - 1)) * T;
  for (int64_t i = 0; i < n; ++i) {
    const float* x = src + i * src_row;
    for (int64_t r = 0; r < kBlock; ++r) {
      const float wi = w_row[r][i];
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) acc[r][d] += wi * x[d];
    }
  }
  for (int64_t r = 0; r < rows; ++r) std::copy(acc[r], acc[r] + D, dst + r * dst_row);
}

// Scores of query row q against keys kt (D,T) (leading dimension ld), softmax over
// the n visible keys, written to a (T) with the invisible tail zero.
template <int kD>
void softmax_row(const float* q, const float* kt, float* a, int64_t n, int64_t T,
                 int64_t ld, int64_t D, float scale) {
  float qs[kD > 0 ? kD : kMaxHeadDim];  // q pre-scaled by 1/sqrt(D)
  for (int64_t d = 0; d < D; ++d) qs[d] = q[d] * scale;
  row_times_transposed<kD>(qs, kt, a, n, ld, D);
  float mx = a[0];
#pragma omp simd reduction(max : mx)
  for (int64_t s = 0; s < n; ++s) mx = a[s] > mx ? a[s] : mx;  // std::max defeats SIMD
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t s = 0; s < n; ++s) {
    a[s] = exp_approx(a[s] - mx);
    sum += a[s];
  }
  const float inv_sum = 1.0f / sum;
#pragma omp simd
  for (int64_t s = 0; s < n; ++s) a[s] *= inv_sum;
  std::fill(a + n, a + T, 0.0f);
}

// att (T,T) probabilities, out rows (D); kt is (D,T) scratch.
template <int kD>
void head_forward(const HeadView& hv, int64_t d_runtime, float* att, float* out,
                  float* kt) {
  constexpr int64_t kBlock = block_rows(kD);
  const int64_t D = kD > 0 ? kD : d_runtime, T = hv.T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t ld = transposed_ld(T);
  transpose_rows(hv.k, hv.row, kt, T, D, ld);
  for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
    const int64_t rows = std::min(kBlock, T - t0);
    for (int64_t t = t0; t < t0 + rows; ++t)
      softmax_row<kD>(hv.q + t * hv.row, kt, att + t * T, hv.causal ? t + 1 : T, T, ld, D,
                      scale);
    // out_t = sum_s P[t,s] v_s
    const int64_t n = hv.causal ? t0 + rows : T;
    weighted_rows<kD>(att, T, t0, rows, n, hv.v, hv.row, out + t0 * hv.out_row, hv.out_row, D);
  }
}

// Row t of dS = dscore, the gradient of the scaled scores:
// dP[t,s] = dout_t . v_s, dS = P * (dP - sum_s P dP) / sqrt(D); zero past n.
template <int kD>
void dscore_row(const float* a, const float* go, const float* vt, float* ds, int64_t n,
                int64_t T, int64_t ld, int64_t D, float scale) {
  row_times_transposed<kD>(go, vt, ds, n, ld, D);
  float row_dot = 0.0f;
#pragma omp simd reduction(+ : row_dot)
  for (int64_t s = 0; s < n; ++s) row_dot += a[s] * ds[s];
#pragma omp simd
  for (int64_t s = 0; s < n; ++s) ds[s] = a[s] * (ds[s] - row_dot) * scale;
  std::fill(ds + n, ds + T, 0.0f);
}

// Column block [s0, s0 + rows) of dk_s = sum_t dS[t,s] q_t and dv_s = sum_t P[t,s]
// dout_t. Causal: t < s has dS = P = 0, so the sum starts at s0.
template <int kD>
void key_grads(const HeadView& hv, const float* att, const float* dscore, const float* dout,
               int64_t s0, int64_t rows, float* dk, float* dv, int64_t D) {
  constexpr int64_t kBlock = block_rows(kD);
  const int64_t T = hv.T;
  float acc_k[kBlock][kD > 0 ? kD : kMaxHeadDim] = {};
  float acc_v[kBlock][kD > 0 ? kD : kMaxHeadDim] = {};
  for (int64_t t = hv.causal ? s0 : 0; t < T; ++t) {
    const float* q = hv.q + t * hv.row;
    const float* go = dout + t * hv.out_row;
    for (int64_t r = 0; r < kBlock; ++r) {
      const int64_t s = s0 + std::min(r, rows - 1);
      const float w_k = dscore[t * T + s], w_v = att[t * T + s];
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) {
        acc_k[r][d] += w_k * q[d];
        acc_v[r][d] += w_v * go[d];
      }
    }
  }
  for (int64_t r = 0; r < rows; ++r) {
    std::copy(acc_k[r], acc_k[r] + D, dk + (s0 + r) * hv.row);
    std::copy(acc_v[r], acc_v[r] + D, dv + (s0 + r) * hv.row);
  }
}

// dscore (T,T) receives dS; vt is (D,T) scratch. dq, dk, dv overwritten.
template <int kD>
void head_backward(const HeadView& hv, int64_t d_runtime, const float* att,
                   const float* dout, float* dq, float* dk, float* dv,
                   float* dscore, float* vt) {
  constexpr int64_t kBlock = block_rows(kD);
  const int64_t D = kD > 0 ? kD : d_runtime, T = hv.T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t ld = transposed_ld(T);
  transpose_rows(hv.v, hv.row, vt, T, D, ld);
  for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
    const int64_t rows = std::min(kBlock, T - t0);
    for (int64_t t = t0; t < t0 + rows; ++t)
      dscore_row<kD>(att + t * T, dout + t * hv.out_row, vt, dscore + t * T,
                     hv.causal ? t + 1 : T, T, ld, D, scale);
    // dq_t = sum_s dS[t,s] k_s
    const int64_t n = hv.causal ? t0 + rows : T;
    weighted_rows<kD>(dscore, T, t0, rows, n, hv.k, hv.row, dq + t0 * hv.row, hv.row, D);
  }
  for (int64_t s0 = 0; s0 < T; s0 += kBlock)
    key_grads<kD>(hv, att, dscore, dout, s0, std::min(kBlock, T - s0), dk, dv, D);
}

using HeadForwardFn = void (*)(const HeadView&, int64_t, float*, float*, float*);
using HeadBackwardFn = void (*)(const HeadView&, int64_t, const float*, const float*,
                                float*, float*, float*, float*, float*);

HeadForwardFn pick_forward(int64_t D) {
  switch (D) {
    case 16: return head_forward<16>;
    case 32: return head_forward<32>;
    case 64: return head_forward<64>;
    case 128: return head_forward<128>;
    default: return head_forward<0>;
  }
}

HeadBackwardFn pick_backward(int64_t D) {
  switch (D) {
    case 16: return head_backward<16>;
    case 32: return head_backward<32>;
    case 64: return head_backward<64>;
    case 128: return head_backward<128>;
    default: return head_backward<0>;
  }
}

}  // namespace

void attention_forward(const float* qkv, float* att, float* out, int64_t B,
                       int64_t T, int64_t H, int64_t D, bool causal) {
  MOE_CHECK(D >= 1 && D <= kMaxHeadDim, "attention head dim ", D, " not in [1, ",
            kMaxHeadDim, "]");
  const HeadForwardFn head = pick_forward(D);
  const int64_t row = 3 * H * D;
#pragma omp parallel if (B * H * T * T * D > kMinParallelWork)
  {
    // Per-thread (D,T) transpose of K: the one allocation, once per thread per call.
    std::vector<float> kt(static_cast<size_t>(D * transposed_ld(T)));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const float* base = qkv + b * T * row + h * D;
        const HeadView hv{base, base + H * D, base + 2 * H * D, row, H * D, T, causal};
        head(hv, D, att + (b * H + h) * T * T, out + b * T * H * D + h * D, kt.data());
      }
    }
  }
}

void attention_backward(const float* qkv, const float* att, const float* dout,
                        float* dqkv, float* scratch, int64_t B, int64_t T,
                        int64_t H, int64_t D, bool causal) {
  MOE_CHECK(D >= 1 && D <= kMaxHeadDim, "attention head dim ", D, " not in [1, ",
            kMaxHeadDim, "]");
  const HeadBackwardFn head = pick_backward(D);
  const int64_t row = 3 * H * D;
#pragma omp parallel if (B * H * T * T * D > kMinParallelWork)
  {
    // Per-thread (D,T) transpose of V: the one allocation, once per thread per call.
    std::vector<float> vt(static_cast<size_t>(D * transposed_ld(T)));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < H; ++h) {
        const int64_t offset = b * T * row + h * D;
        const float* base = qkv + offset;
        float* dbase = dqkv + offset;
        const HeadView hv{base, base + H * D, base + 2 * H * D, row, H * D, T, causal};
        const int64_t bh = b * H + h;
        head(hv, D, att + bh * T * T, dout + b * T * H * D + h * D, dbase,
             dbase + H * D, dbase + 2 * H * D, scratch + bh * T * T, vt.data());
      }
    }
  }
}

}  // namespace moe::cpu
