// Causal attention with bf16 products (train.precision = bf16): the six products of one
// head (QK^T and PV forward; dP = dO V^T, dQ = dS K, dK = dS^T Q, dV = P^T dO backward)
// take bf16 operands and sum in fp32; scores, softmax, the kept probabilities and dS are
// fp32, and P, dO and dS are rounded to bf16 where they are operands.
//
// Every product is one kernel, pair_rows: out[r][j] = sum_p A_r[p] . B[p][j], where A_r
// holds a row of the left operand as bf16 pairs along the reduction (two bf16 in one
// 32-bit word) and B the right operand laid out as (pairs, columns) words. On CPUs with
// AVX512_BF16 one vdpbf16ps multiplies 16 such pairs by one broadcast pair and adds the
// products to 16 fp32 sums: twice the work of an fp32 FMA per instruction. Elsewhere a
// portable loop computes the same sums (odd element first, as the instruction does);
// the choice follows the bf16 GEMM's (bf16_gemm_native: oneDNN's effective ISA, so
// ONEDNN_MAX_CPU_ISA tests both).
//
// Per head the operands are first copied into those layouts (per-thread buffers, the one
// allocation per thread per call): K and V pairs along d with keys as columns (scores,
// dP), V, K, Q and dO pairs along the sequence with d as columns (PV, dQ, dK, dV), and
// the bf16 rows of P, dS and their transposes (A rows paired along the sequence).
// Causality: a query block reduces only over the keys its last row sees (the
// probabilities and dS beyond are exact zeros), a key block of dK, dV only over the
// queries at or after its first key.

#include <immintrin.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include "framework/core/error.h"
#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/cpu/kernel_util.h"

namespace moe::cpu {
namespace {

using detail::bf16_bits;
using detail::exp_approx;
using detail::kMinParallelWork;

constexpr int64_t kRows = 4;    // rows of one pair_rows call (independent FMA chains)
constexpr int64_t kLanes = 16;  // fp32 sums per 512-bit register
constexpr int64_t kCols = 64;   // columns held in registers at once: 4 x 16

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// out[r][j] (r < rows <= kRows, j < cols) = sum_{p < pairs} A_r[p] . B[p][j], A_r = a +
// r * lda (words), B rows ldb words apart, out rows ldo floats apart (overwritten).
using PairRowsFn = void (*)(const uint32_t* a, int64_t lda, int64_t rows, const uint32_t* b,
                            int64_t ldb, int64_t pairs, float* out, int64_t ldo, int64_t cols);

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void pair_rows_native(
    const uint32_t* a, int64_t lda, int64_t rows, const uint32_t* b, int64_t ldb,
    int64_t pairs, float* out, int64_t ldo, int64_t cols) {
  for (int64_t c0 = 0; c0 < cols; c0 += kCols) {
    const int64_t width = std::min(kCols, cols - c0);
    __mmask16 mask[4];
    for (int c = 0; c < 4; ++c) {
      const int64_t left = std::clamp<int64_t>(width - c * kLanes, 0, kLanes);
      mask[c] = static_cast<__mmask16>((1u << left) - 1u);
    }
    __m512 acc[kRows][4];
    for (auto& row : acc)
      for (auto& v : row) v = _mm512_setzero_ps();
    for (int64_t p = 0; p < pairs; ++p) {
      const uint32_t* bp = b + p * ldb + c0;
      __m512bh bv[4];
      for (int c = 0; c < 4; ++c)
        bv[c] = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi32(mask[c], bp + c * kLanes));
      for (int64_t r = 0; r < rows; ++r) {
        const __m512bh av =
            reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a[r * lda + p])));
        for (int c = 0; c < 4; ++c) acc[r][c] = _mm512_dpbf16_ps(acc[r][c], av, bv[c]);
      }
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int c = 0; c < 4; ++c)
        if (mask[c]) _mm512_mask_storeu_ps(out + r * ldo + c0 + c * kLanes, mask[c], acc[r][c]);
  }
}

float low_of(uint32_t w) { return std::bit_cast<float>(w << 16); }
float high_of(uint32_t w) { return std::bit_cast<float>(w & 0xffff0000u); }

void pair_rows_portable(const uint32_t* a, int64_t lda, int64_t rows, const uint32_t* b,
                        int64_t ldb, int64_t pairs, float* out, int64_t ldo, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* o = out + r * ldo;
    std::fill(o, o + cols, 0.0f);
    for (int64_t p = 0; p < pairs; ++p) {
      const float a_lo = low_of(a[r * lda + p]), a_hi = high_of(a[r * lda + p]);
      const uint32_t* bp = b + p * ldb;
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) o[j] = (o[j] + a_hi * high_of(bp[j])) + a_lo * low_of(bp[j]);
    }
  }
}

uint32_t word(uint16_t lo, uint16_t hi) { return lo | (static_cast<uint32_t>(hi) << 16); }
// bf16 elements (an even number of them from an even offset) as pairs
const uint32_t* words(const uint16_t* p) { return reinterpret_cast<const uint32_t*>(p); }

// The (T, D) rows of one head (row stride `stride` elements) paired along the sequence:
// out[j][d] = (m[2j][d], m[2j+1][d]), the pair after an odd T's last row zero.
void pairs_along_rows(const uint16_t* m, int64_t stride, int64_t T, int64_t D, uint32_t* out) {
  for (int64_t j = 0; 2 * j < T; ++j) {
    const uint16_t* even = m + 2 * j * stride;
    const uint16_t* odd = 2 * j + 1 < T ? even + stride : nullptr;
    for (int64_t d = 0; d < D; ++d) out[j * D + d] = word(even[d], odd ? odd[d] : 0);
  }
}

// The same rows paired along d, rows as columns: out[p][s] = (m[s][2p], m[s][2p+1]) with
// ld columns; an odd D's last pair has a zero high half.
void pairs_along_cols(const uint16_t* m, int64_t stride, int64_t T, int64_t D, uint32_t* out,
                      int64_t ld) {
  for (int64_t s = 0; s < T; ++s)
    for (int64_t p = 0; 2 * p < D; ++p)
      out[p * ld + s] = word(m[s * stride + 2 * p], 2 * p + 1 < D ? m[s * stride + 2 * p + 1] : 0);
}

// Softmax of the n scaled scores of `row` in place (fp32), zero from n to T.
void softmax_scaled(float* row, int64_t n, int64_t T, float scale) {
  float mx = -INFINITY;
  for (int64_t s = 0; s < n; ++s) mx = std::max(mx, row[s] * scale);
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t s = 0; s < n; ++s) {
    row[s] = exp_approx(row[s] * scale - mx);
    sum += row[s];
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t s = 0; s < n; ++s) row[s] *= inv;
  std::fill(row + n, row + T, 0.0f);
}

// bf16 rows of fp32 rows: dst[r][s] = bf16(src[r][s]) for s < n (the columns the
// products read; the caller's src is zero from n on), zero from n to ld.
void round_rows(const float* src, int64_t src_ld, int64_t rows, int64_t n, uint16_t* dst,
                int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = src + r * src_ld;
    uint16_t* out = dst + r * ld;
#pragma omp simd
    for (int64_t s = 0; s < n; ++s) out[s] = bf16_bits(in[s]);
    std::fill(out + n, out + ld, uint16_t{0});
  }
}

// dst[s][t] = bf16(src[t][s]) (T, T) with leading dimensions src_ld, ld, zero padding to
// ld. causal: src[t][s] = 0 for t < s, so those entries are zeros written directly.
void round_transposed(const float* src, int64_t src_ld, int64_t T, uint16_t* dst, int64_t ld,
                      bool causal) {
  for (int64_t s = 0; s < T; ++s) {
    const int64_t first = causal ? s : 0;
    uint16_t* out = dst + s * ld;
    std::fill(out, out + first, uint16_t{0});
    for (int64_t t = first; t < T; ++t) out[t] = bf16_bits(src[t * src_ld + s]);
    std::fill(out + T, out + ld, uint16_t{0});
  }
}

// One head's shapes and per-thread buffers.
struct HeadWork {
  int64_t T, D, half_d, half_t, ld_keys, ld_seq;  // D/2, T/2 rounded up; columns of keys;
                                                   // bf16 row length of (T, T) rows
  std::vector<uint32_t> along_d;                  // (D/2, ld_keys) K or V paired along d
  std::vector<uint32_t> seq_a, seq_b;             // (T/2, D) paired along the sequence
  std::vector<uint16_t> rows_a, rows_b;           // (T, ld_seq) bf16 rows of (T, T)
  std::vector<uint16_t> dout16;                   // (T, D) bf16 rows of dO

  HeadWork(int64_t t, int64_t d, bool backward)
      : T(t),
        D(d),
        half_d((d + 1) / 2),
        half_t((t + 1) / 2),
        ld_keys(round_up(t, kCols) + kLanes),
        ld_seq(round_up(t, 2) + 32),
        along_d(static_cast<size_t>(half_d * ld_keys), 0),
        seq_a(static_cast<size_t>(half_t * d)),
        seq_b(backward ? static_cast<size_t>(half_t * d) : 0),
        rows_a(static_cast<size_t>(t * ld_seq)),
        rows_b(backward ? static_cast<size_t>(t * ld_seq) : 0),
        dout16(backward ? static_cast<size_t>(t * d) : 0) {}
};

// Rows [t0, t0 + rows) see keys < n (causal: the block's last row + 1).
int64_t visible(bool causal, int64_t t0, int64_t rows, int64_t T) {
  return causal ? t0 + rows : T;
}

// q, k, v: rows of D bf16 `row` elements apart; att (T, T), out rows out_row apart.
void head_forward(const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t row,
                  int64_t out_row, bool causal, float* att, float* out, HeadWork& w,
                  PairRowsFn pair_rows) {
  const int64_t T = w.T, D = w.D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  pairs_along_cols(k, row, T, D, w.along_d.data(), w.ld_keys);
  pairs_along_rows(v, row, T, D, w.seq_a.data());
  const int64_t q_words = row / 2;  // a query row of bf16 as words (D even: whole pairs)
  for (int64_t t0 = 0; t0 < T; t0 += kRows) {
    const int64_t rows = std::min(kRows, T - t0), n = visible(causal, t0, rows, T);
    // scores (rows, n) = q k^T, then each row's softmax into att
    pair_rows(words(q + t0 * row), q_words, rows, w.along_d.data(), w.ld_keys, w.half_d,
              att + t0 * T, T, n);
    for (int64_t r = 0; r < rows; ++r)
      softmax_scaled(att + (t0 + r) * T, causal ? t0 + r + 1 : T, T, scale);
    // out (rows, D) = bf16(P) v over the visible keys
    round_rows(att + t0 * T, T, rows, n, w.rows_a.data(), w.ld_seq);
    pair_rows(words(w.rows_a.data()), w.ld_seq / 2, rows, w.seq_a.data(), D, (n + 1) / 2,
              out + t0 * out_row, out_row, D);
  }
}

// dout rows out_row apart; dq, dk, dv rows `row` floats apart (overwritten); dscore
// (T, T) receives dS.
void head_backward(const uint16_t* q, const uint16_t* k, const uint16_t* v, int64_t row,
                   int64_t out_row, bool causal, const float* att, const float* dout, float* dq,
                   float* dk, float* dv, float* dscore, HeadWork& w, PairRowsFn pair_rows) {
  const int64_t T = w.T, D = w.D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  pairs_along_cols(v, row, T, D, w.along_d.data(), w.ld_keys);  // dP = dO V^T
  pairs_along_rows(k, row, T, D, w.seq_a.data());                // dQ = dS K
  round_rows(dout, out_row, T, D, w.dout16.data(), D);
  for (int64_t t0 = 0; t0 < T; t0 += kRows) {
    const int64_t rows = std::min(kRows, T - t0), n = visible(causal, t0, rows, T);
    pair_rows(words(w.dout16.data() + t0 * D), D / 2, rows, w.along_d.data(), w.ld_keys,
              w.half_d, dscore + t0 * T, T, n);
    // dS[t,s] = P (dP - sum_s P dP) / sqrt(D) over the row's visible keys, zero beyond
    for (int64_t t = t0; t < t0 + rows; ++t) {
      const float* p = att + t * T;
      float* ds = dscore + t * T;
      const int64_t nt = causal ? t + 1 : T;
      float row_dot = 0.0f;
#pragma omp simd reduction(+ : row_dot)
      for (int64_t s = 0; s < nt; ++s) row_dot += p[s] * ds[s];
#pragma omp simd
      for (int64_t s = 0; s < nt; ++s) ds[s] = p[s] * (ds[s] - row_dot) * scale;
      std::fill(ds + nt, ds + T, 0.0f);
    }
    // dq (rows, D) = bf16(dS) k
    round_rows(dscore + t0 * T, T, rows, n, w.rows_a.data(), w.ld_seq);
    pair_rows(words(w.rows_a.data()), w.ld_seq / 2, rows, w.seq_a.data(), D, (n + 1) / 2,
              dq + t0 * row, row, D);
  }
  // dk = bf16(dS)^T q, dv = bf16(P)^T bf16(dO): rows of keys, paired along the queries
  round_transposed(dscore, T, T, w.rows_a.data(), w.ld_seq, causal);
  round_transposed(att, T, T, w.rows_b.data(), w.ld_seq, causal);
  pairs_along_rows(q, row, T, D, w.seq_a.data());
  pairs_along_rows(w.dout16.data(), D, T, D, w.seq_b.data());
  for (int64_t s0 = 0; s0 < T; s0 += kRows) {
    const int64_t rows = std::min(kRows, T - s0);
    const int64_t first = causal ? s0 / 2 : 0;  // queries before key s0 have dS = P = 0
    const int64_t pairs = w.half_t - first;
    pair_rows(words(w.rows_a.data() + s0 * w.ld_seq) + first, w.ld_seq / 2, rows,
              w.seq_a.data() + first * D, D, pairs, dk + s0 * row, row, D);
    pair_rows(words(w.rows_b.data() + s0 * w.ld_seq) + first, w.ld_seq / 2, rows,
              w.seq_b.data() + first * D, D, pairs, dv + s0 * row, row, D);
  }
}

}  // namespace

void attention_forward_bf16(const bf16* qkv, float* att, float* out, int64_t B, int64_t T,
                            int64_t H, int64_t D, bool causal) {
  MOE_CHECK(D >= 2 && D % 2 == 0, "bf16 attention: head dim ", D, " must be even");
  const PairRowsFn pair_rows = bf16_gemm_native() ? pair_rows_native : pair_rows_portable;
  const int64_t row = 3 * H * D;
  const auto* base = reinterpret_cast<const uint16_t*>(qkv);
#pragma omp parallel if (B * H * T * T * D > kMinParallelWork)
  {
    HeadWork w(T, D, /*backward=*/false);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const uint16_t* q = base + b * T * row + h * D;
        head_forward(q, q + H * D, q + 2 * H * D, row, H * D, causal,
                     att + (b * H + h) * T * T, out + b * T * H * D + h * D, w, pair_rows);
      }
  }
}

void attention_backward_bf16(const bf16* qkv, const float* att, const float* dout, float* dqkv,
                             float* scratch, int64_t B, int64_t T, int64_t H, int64_t D,
                             bool causal) {
  MOE_CHECK(D >= 2 && D % 2 == 0, "bf16 attention: head dim ", D, " must be even");
  const PairRowsFn pair_rows = bf16_gemm_native() ? pair_rows_native : pair_rows_portable;
  const int64_t row = 3 * H * D;
  const auto* base = reinterpret_cast<const uint16_t*>(qkv);
#pragma omp parallel if (B * H * T * T * D > kMinParallelWork)
  {
    HeadWork w(T, D, /*backward=*/true);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t offset = b * T * row + h * D, bh = b * H + h;
        const uint16_t* q = base + offset;
        float* dbase = dqkv + offset;
        head_backward(q, q + H * D, q + 2 * H * D, row, H * D, causal, att + bh * T * T,
                      dout + b * T * H * D + h * D, dbase, dbase + H * D, dbase + 2 * H * D,
                      scratch + bh * T * T, w, pair_rows);
      }
  }
}

}  // namespace moe::cpu
