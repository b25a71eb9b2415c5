// Attention with bf16 products (train.precision = bf16): the six products of one head
// (S = QK^T and O = PV forward; dP = dO V^T, dQ = dS K, dK = dS^T Q, dV = P^T dO
// backward) take bf16 operands and sum in fp32; scores, softmax, dP and dS are fp32, and
// P, dO and dS are rounded to bf16 where they are operands.
//
// No (T, T) matrix outlives a head: forward keeps per query row the softmax's maximum
// and 1 / sum (`stats`, (B, H, T, 2)), and backward recomputes S with the same products
// and P = exp(S / sqrt(D) - max) / sum from them, bit for bit the forward's P. A head is
// processed in blocks of kBlock query rows whose (kBlock, T) scores stay in cache; dK and
// dV sum over the blocks in order.
//
// Every product is one kernel (`Product`): out[r][j] (+)= sum_p A(r, p) . B[p][j], where
// A(r, p) is a 32-bit word holding two bf16 along the reduction and B's rows hold such
// words for every column. On CPUs with AVX512_BF16 one vdpbf16ps multiplies 16 pairs by
// one broadcast pair and adds the products to 16 fp32 sums (twice an fp32 FMA's work);
// tiles of R rows x NC vectors of 16 columns keep R * NC sums in registers. Elsewhere a
// portable loop computes the same sums (odd element first, as the instruction does);
// the choice follows the bf16 GEMM's (bf16_gemm_native: oneDNN's effective ISA, so
// ONEDNN_MAX_CPU_ISA tests both).
//
// The operand layouts, per head (D even, T rounded up to even with zero rows):
//   rows        a row of bf16 is D/2 words along d (q, dO) or n/2 along keys (P, dS)
//   along_d     (D/2, T) words: K or V paired along d, keys as columns     S, dP
//   along_seq   (T/2, D) words: K, Q or dO paired along the sequence        dQ, dK, dV
//   interleaved (kBlock/2, T) words: a block's P or dS rows paired along the queries,
//               read as A(key, query pair) for dK = dS^T Q and dV = P^T dO
// Causality: a tile of query rows reduces and writes only over the keys its last row
// sees, and a tile of keys only over the query pairs at or after its first key; what is
// skipped is exact zeros.

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

#include "framework/core/error.h"
#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/cpu/kernel_util.h"

namespace moe::cpu {
namespace {

using detail::bf16_bits;
using detail::exp_approx;
using detail::kMinParallelWork;

constexpr int64_t kLanes = 16;   // fp32 sums per 512-bit register
constexpr int64_t kBlock = 64;   // query rows per block (even)
constexpr int kWideRows = 6;     // tile rows with 3-4 column vectors
constexpr int kNarrowRows = 12;  // tile rows with 1-2 column vectors

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// out[r][j] (+)= sum_p A(r, p) . B[p][j] for r < rows, j < cols: A(r, p) = a[r * ra +
// p * pa], B row p at b + p * ldb, out rows ldo floats apart. Causal limits (-1: none),
// per tile of rows [r0, r0 + R):
//   col_diag    columns < col_diag + r0 + R (query rows against keys: S, dP)
//   pair_diag   pairs < (pair_diag + r0 + R + 1) / 2 (query rows reducing over keys)
//   first_diag  pairs >= (r0 - first_diag) / 2 (key rows reducing over queries)
struct Product {
  const uint32_t* a;
  int64_t ra, pa;
  const uint32_t* b;
  int64_t ldb;
  float* out;
  int64_t ldo;
  int64_t rows, cols, pairs;
  bool accumulate = false;
  int64_t col_diag = -1, pair_diag = -1, first_diag = -1;
};

// One tile: R rows x NC vectors from column c0, pairs [p0, p1); sum I of the R * NC is
// row I / NC, vector I % NC. The sums are indexed by constants (the fold expressions
// over I) so that the compiler keeps all of them in registers.
template <int R, int NC, size_t... I>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"), always_inline)) inline void
tile_sums(const Product& m, int64_t r0, int64_t c0, int64_t width, int64_t p0, int64_t p1,
          std::index_sequence<I...>) {
  __mmask16 mask[NC];
  for (int c = 0; c < NC; ++c) {
    const int64_t left = std::clamp<int64_t>(width - c * kLanes, 0, kLanes);
    mask[c] = static_cast<__mmask16>((1u << left) - 1u);
  }
  float* out = m.out + r0 * m.ldo + c0;
  const int64_t ldo = m.ldo, ra = m.ra, pa = m.pa, ldb = m.ldb;
  __m512 acc[R * NC] = {(m.accumulate ? _mm512_maskz_loadu_ps(mask[I % NC], out + (I / NC) * ldo +
                                                                               (I % NC) * kLanes)
                                      : _mm512_setzero_ps())...};
  const uint32_t* a = m.a + r0 * ra + p0 * pa;
  const uint32_t* b = m.b + p0 * ldb + c0;
  for (int64_t p = p0; p < p1; ++p, a += pa, b += ldb) {
    __m512bh bv[NC];
    for (int c = 0; c < NC; ++c)
      bv[c] = reinterpret_cast<__m512bh>(_mm512_maskz_loadu_epi32(mask[c], b + c * kLanes));
    ((acc[I] = _mm512_dpbf16_ps(
          acc[I], reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(a[I / NC * ra]))),
          bv[I % NC])),
     ...);
  }
  (_mm512_mask_storeu_ps(out + I / NC * ldo + I % NC * kLanes, mask[I % NC], acc[I]), ...);
}

template <int R, int NC>
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void tile_native(
    const Product& m, int64_t r0, int64_t c0, int64_t width, int64_t p0, int64_t p1) {
  tile_sums<R, NC>(m, r0, c0, width, p0, p1, std::make_index_sequence<R * NC>{});
}

float low_of(uint32_t w) { return std::bit_cast<float>(w << 16); }
float high_of(uint32_t w) { return std::bit_cast<float>(w & 0xffff0000u); }

// The same sums without bf16 instructions, in the instruction's order.
void tile_portable(const Product& m, int64_t r0, int rows, int64_t c0, int64_t width,
                   int64_t p0, int64_t p1) {
  for (int r = 0; r < rows; ++r) {
    float* o = m.out + (r0 + r) * m.ldo + c0;
    if (!m.accumulate) std::fill(o, o + width, 0.0f);
    const uint32_t* a = m.a + (r0 + r) * m.ra;
    for (int64_t p = p0; p < p1; ++p) {
      const float a_lo = low_of(a[p * m.pa]), a_hi = high_of(a[p * m.pa]);
      const uint32_t* bp = m.b + p * m.ldb + c0;
#pragma omp simd
      for (int64_t j = 0; j < width; ++j)
        o[j] = (o[j] + a_hi * high_of(bp[j])) + a_lo * low_of(bp[j]);
    }
  }
}

using TileFn = void (*)(const Product&, int64_t, int64_t, int64_t, int64_t, int64_t);

// tiles[nc - 1][rows - 1]: the native tile of `rows` rows and nc column vectors (1-2
// vectors: up to kNarrowRows rows, 3-4: up to kWideRows).
template <int NC, int... Rs>
constexpr std::array<TileFn, kNarrowRows> tiles_of(std::integer_sequence<int, Rs...>) {
  return {{&tile_native<Rs + 1, NC>...}};
}
const std::array<std::array<TileFn, kNarrowRows>, 4> kTiles = {
    tiles_of<1>(std::make_integer_sequence<int, kNarrowRows>{}),
    tiles_of<2>(std::make_integer_sequence<int, kNarrowRows>{}),
    tiles_of<3>(std::make_integer_sequence<int, kWideRows>{}),
    tiles_of<4>(std::make_integer_sequence<int, kWideRows>{})};

void run(const Product& m, bool native) {
  const int tile_rows = m.cols > 2 * kLanes ? kWideRows : kNarrowRows;
  for (int64_t r0 = 0; r0 < m.rows; r0 += tile_rows) {
    const int rows = static_cast<int>(std::min<int64_t>(tile_rows, m.rows - r0));
    const int64_t last = r0 + rows;  // one past the tile's last row
    const int64_t cols = m.col_diag < 0 ? m.cols : std::min(m.cols, m.col_diag + last);
    const int64_t p1 = m.pair_diag < 0 ? m.pairs : std::min(m.pairs, (m.pair_diag + last + 1) / 2);
    const int64_t p0 = m.first_diag < 0 ? 0 : std::clamp<int64_t>((r0 - m.first_diag) / 2, 0, p1);
    for (int64_t c0 = 0; c0 < cols; c0 += 4 * kLanes) {
      const int64_t width = std::min(4 * kLanes, cols - c0);
      if (!native) {
        tile_portable(m, r0, rows, c0, width, p0, p1);
        continue;
      }
      const int64_t nc = (width + kLanes - 1) / kLanes;
      kTiles[nc - 1][rows - 1](m, r0, c0, width, p0, p1);
    }
  }
}

uint32_t word(uint16_t lo, uint16_t hi) { return lo | (static_cast<uint32_t>(hi) << 16); }
// bf16 elements (an even number of them from an even offset) as pairs
const uint32_t* words(const uint16_t* p) { return reinterpret_cast<const uint32_t*>(p); }

// along_d: out[p][s] = word s of row s (pairs along d), ld columns.
void pairs_along_d(const uint16_t* m, int64_t stride, int64_t T, int64_t D, uint32_t* out,
                   int64_t ld) {
  const uint32_t* w = words(m);
  const int64_t step = stride / 2;  // words per row
  for (int64_t p = 0; p < D / 2; ++p) {
    uint32_t* o = out + p * ld;
#pragma omp simd
    for (int64_t s = 0; s < T; ++s) o[s] = w[s * step + p];
  }
}

// along_seq: out[j][d] = (m[2j][d], m[2j+1][d]), the pair after an odd T's last row zero.
void pairs_along_seq(const uint16_t* m, int64_t stride, int64_t T, int64_t D, uint32_t* out) {
  for (int64_t j = 0; 2 * j < T; ++j) {
    const uint16_t* even = m + 2 * j * stride;
    const uint16_t* odd = even + stride;
    uint32_t* o = out + j * D;
    if (2 * j + 1 < T) {
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) o[d] = word(even[d], odd[d]);
    } else {
      for (int64_t d = 0; d < D; ++d) o[d] = word(even[d], 0);
    }
  }
}

// bf16 rows: dst[r][s] = bf16(src[r][s]) for s < n, zero from n to ld.
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

// interleaved: out[j][s] = (bf16(src[2j][s]), bf16(src[2j+1][s])) for s < n, rows
// src_ld apart, a zero row after an odd count.
void interleave_rows(const float* src, int64_t src_ld, int64_t rows, int64_t n, uint32_t* out,
                     int64_t ld) {
  for (int64_t j = 0; 2 * j < rows; ++j) {
    const float* even = src + 2 * j * src_ld;
    const float* odd = even + src_ld;
    uint32_t* o = out + j * ld;
    if (2 * j + 1 < rows) {
#pragma omp simd
      for (int64_t s = 0; s < n; ++s) o[s] = word(bf16_bits(even[s]), bf16_bits(odd[s]));
    } else {
#pragma omp simd
      for (int64_t s = 0; s < n; ++s) o[s] = bf16_bits(even[s]);
    }
  }
}

// One head's shapes and per-thread buffers.
struct HeadWork {
  int64_t T, D, half_d, half_t, ld;              // ld: columns of key-wide rows
  std::vector<uint32_t> k_d, v_d;                // (D/2, ld) along_d
  std::vector<uint32_t> k_seq, q_seq, dout_seq;  // (T/2, D) along_seq; forward: v in k_seq
  std::vector<uint16_t> dout16;                  // (T, D) bf16 rows of dO
  std::vector<float> s, dp;                      // (kBlock, ld) scores / P, dP / dS
  std::vector<uint16_t> rows16;                  // (kBlock, ld) bf16 rows of P or dS
  std::vector<uint32_t> p_pairs, ds_pairs;       // (kBlock/2, ld) interleaved

  HeadWork(int64_t t, int64_t d, bool backward)
      : T(t),
        D(d),
        half_d(d / 2),
        half_t((t + 1) / 2),
        ld(round_up(t + 1, 2 * kLanes)),
        k_d(static_cast<size_t>(half_d * ld), 0),
        v_d(backward ? static_cast<size_t>(half_d * ld) : 0, 0),
        k_seq(static_cast<size_t>(half_t * d)),
        q_seq(backward ? static_cast<size_t>(half_t * d) : 0),
        dout_seq(backward ? static_cast<size_t>(half_t * d) : 0),
        dout16(backward ? static_cast<size_t>(t * d) : 0),
        s(static_cast<size_t>(kBlock * ld)),
        dp(backward ? static_cast<size_t>(kBlock * ld) : 0),
        rows16(static_cast<size_t>(kBlock * ld)),
        p_pairs(backward ? static_cast<size_t>(kBlock / 2 * ld) : 0),
        ds_pairs(backward ? static_cast<size_t>(kBlock / 2 * ld) : 0) {}
};

struct HeadArgs {
  const uint16_t* q;  // q, k, v rows `row` bf16 apart
  const uint16_t* k;
  const uint16_t* v;
  int64_t row, out_row;  // out / dout rows out_row floats apart
  bool causal;
};

// S (rows, n) = q k^T for the block's query rows from t0, into w.s.
void block_scores(const HeadArgs& h, HeadWork& w, int64_t t0, int64_t rows, int64_t n,
                  bool native) {
  run({.a = words(h.q + t0 * h.row), .ra = h.row / 2, .pa = 1, .b = w.k_d.data(), .ldb = w.ld,
       .out = w.s.data(), .ldo = w.ld, .rows = rows, .cols = n, .pairs = w.half_d,
       .col_diag = h.causal ? t0 : -1},
      native);
}

// The keys query row t sees.
int64_t visible(const HeadArgs& h, int64_t t, int64_t T) { return h.causal ? t + 1 : T; }

// out rows out_row apart; stats (T, 2): each query row's maximum and 1 / sum.
void head_forward(const HeadArgs& h, float* out, float* stats, HeadWork& w, bool native) {
  const int64_t T = w.T, D = w.D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  pairs_along_d(h.k, h.row, T, D, w.k_d.data(), w.ld);
  pairs_along_seq(h.v, h.row, T, D, w.k_seq.data());  // v along the sequence
  for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
    const int64_t rows = std::min(kBlock, T - t0), n = h.causal ? t0 + rows : T;
    block_scores(h, w, t0, rows, n, native);
    for (int64_t r = 0; r < rows; ++r) {  // softmax of the visible scaled scores
      float* row = w.s.data() + r * w.ld;
      const int64_t nt = visible(h, t0 + r, T), padded = round_up(nt, kLanes);
      float mx = -INFINITY, sum = 0.0f;
      // whole vectors up to `padded` (<= ld), the keys from nt on masked
#pragma omp simd reduction(max : mx)
      for (int64_t s = 0; s < padded; ++s) mx = std::max(mx, s < nt ? row[s] * scale : -INFINITY);
#pragma omp simd reduction(+ : sum)
      for (int64_t s = 0; s < padded; ++s) {
        row[s] = s < nt ? exp_approx(row[s] * scale - mx) : 0.0f;
        sum += row[s];
      }
      const float inv = 1.0f / sum;
#pragma omp simd
      for (int64_t s = 0; s < padded; ++s) row[s] *= inv;
      if (padded < n) std::fill(row + padded, row + n, 0.0f);
      stats[2 * (t0 + r)] = mx;
      stats[2 * (t0 + r) + 1] = inv;
    }
    // out (rows, D) = bf16(P) v over the visible keys
    round_rows(w.s.data(), w.ld, rows, n, w.rows16.data(), w.ld);
    run({.a = words(w.rows16.data()), .ra = w.ld / 2, .pa = 1, .b = w.k_seq.data(), .ldb = D,
         .out = out + t0 * h.out_row, .ldo = h.out_row, .rows = rows, .cols = D,
         .pairs = (n + 1) / 2, .pair_diag = h.causal ? t0 : -1},
        native);
  }
}

// One block of backward: P and dS of query rows [t0, t0 + rows) over their n keys, then
// dq of those rows and their share of dk, dv (summed into the rows of keys < n).
void block_backward(const HeadArgs& h, const float* stats, float* dq, float* dk, float* dv,
                    HeadWork& w, int64_t t0, int64_t rows, bool native) {
  const int64_t T = w.T, D = w.D, n = h.causal ? t0 + rows : T;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  block_scores(h, w, t0, rows, n, native);
  run({.a = words(w.dout16.data() + t0 * D), .ra = D / 2, .pa = 1, .b = w.v_d.data(),
       .ldb = w.ld, .out = w.dp.data(), .ldo = w.ld, .rows = rows, .cols = n,
       .pairs = w.half_d, .col_diag = h.causal ? t0 : -1},
      native);
  for (int64_t r = 0; r < rows; ++r) {
    // P = exp(S / sqrt(D) - max) / sum as forward; dS = P (dP - sum_s P dP) / sqrt(D)
    float* p = w.s.data() + r * w.ld;
    float* ds = w.dp.data() + r * w.ld;
    const int64_t nt = visible(h, t0 + r, T), padded = round_up(nt, kLanes);
    const float mx = stats[2 * (t0 + r)], inv = stats[2 * (t0 + r) + 1];
    float row_dot = 0.0f;
#pragma omp simd reduction(+ : row_dot)
    for (int64_t s = 0; s < padded; ++s) {
      p[s] = s < nt ? exp_approx(p[s] * scale - mx) * inv : 0.0f;
      row_dot += s < nt ? p[s] * ds[s] : 0.0f;
    }
#pragma omp simd
    for (int64_t s = 0; s < padded; ++s) ds[s] = s < nt ? p[s] * (ds[s] - row_dot) * scale : 0.0f;
    if (padded < n) {
      std::fill(p + padded, p + n, 0.0f);
      std::fill(ds + padded, ds + n, 0.0f);
    }
  }
  // dq (rows, D) = bf16(dS) k
  round_rows(w.dp.data(), w.ld, rows, n, w.rows16.data(), w.ld);
  run({.a = words(w.rows16.data()), .ra = w.ld / 2, .pa = 1, .b = w.k_seq.data(), .ldb = D,
       .out = dq + t0 * h.row, .ldo = h.row, .rows = rows, .cols = D, .pairs = (n + 1) / 2,
       .pair_diag = h.causal ? t0 : -1},
      native);
  // dk (n, D) += bf16(dS)^T q, dv (n, D) += bf16(P)^T bf16(dO) over the block's queries
  interleave_rows(w.dp.data(), w.ld, rows, n, w.ds_pairs.data(), w.ld);
  interleave_rows(w.s.data(), w.ld, rows, n, w.p_pairs.data(), w.ld);
  const int64_t pairs = (rows + 1) / 2, first = h.causal ? t0 : -1;
  run({.a = w.ds_pairs.data(), .ra = 1, .pa = w.ld, .b = w.q_seq.data() + t0 / 2 * D, .ldb = D,
       .out = dk, .ldo = h.row, .rows = n, .cols = D, .pairs = pairs, .accumulate = true,
       .first_diag = first},
      native);
  run({.a = w.p_pairs.data(), .ra = 1, .pa = w.ld, .b = w.dout_seq.data() + t0 / 2 * D,
       .ldb = D, .out = dv, .ldo = h.row, .rows = n, .cols = D, .pairs = pairs,
       .accumulate = true, .first_diag = first},
      native);
}

// dout rows out_row apart; dq, dk, dv rows `row` floats apart (overwritten).
void head_backward(const HeadArgs& h, const float* stats, const float* dout, float* dq,
                   float* dk, float* dv, HeadWork& w, bool native) {
  const int64_t T = w.T, D = w.D;
  pairs_along_d(h.k, h.row, T, D, w.k_d.data(), w.ld);  // S = q k^T
  pairs_along_d(h.v, h.row, T, D, w.v_d.data(), w.ld);  // dP = dO v^T
  pairs_along_seq(h.k, h.row, T, D, w.k_seq.data());    // dq = dS k
  pairs_along_seq(h.q, h.row, T, D, w.q_seq.data());    // dk = dS^T q
  round_rows(dout, h.out_row, T, D, w.dout16.data(), D);
  pairs_along_seq(w.dout16.data(), D, T, D, w.dout_seq.data());  // dv = P^T dO
  for (int64_t t = 0; t < T; ++t) {
    std::fill(dk + t * h.row, dk + t * h.row + D, 0.0f);
    std::fill(dv + t * h.row, dv + t * h.row + D, 0.0f);
  }
  for (int64_t t0 = 0; t0 < T; t0 += kBlock)
    block_backward(h, stats, dq, dk, dv, w, t0, std::min(kBlock, T - t0), native);
}

}  // namespace

void attention_forward_bf16(const bf16* qkv, float* stats, float* out, int64_t B, int64_t T,
                            int64_t H, int64_t D, bool causal) {
  MOE_CHECK(D >= 2 && D % 2 == 0, "bf16 attention: head dim ", D, " must be even");
  const bool native = bf16_gemm_native();
  const int64_t row = 3 * H * D;
  const auto* base = reinterpret_cast<const uint16_t*>(qkv);
#pragma omp parallel if (B * H * T * T * D > kMinParallelWork)
  {
    HeadWork w(T, D, /*backward=*/false);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const uint16_t* q = base + b * T * row + h * D;
        const HeadArgs args{q, q + H * D, q + 2 * H * D, row, H * D, causal};
        head_forward(args, out + b * T * H * D + h * D, stats + (b * H + h) * T * 2, w, native);
      }
  }
}

void attention_backward_bf16(const bf16* qkv, const float* stats, const float* /*out*/,
                             const float* dout, float* dqkv, int64_t B, int64_t T, int64_t H,
                             int64_t D, bool causal) {
  MOE_CHECK(D >= 2 && D % 2 == 0, "bf16 attention: head dim ", D, " must be even");
  const bool native = bf16_gemm_native();
  const int64_t row = 3 * H * D;
  const auto* base = reinterpret_cast<const uint16_t*>(qkv);
#pragma omp parallel if (B * H * T * T * D > kMinParallelWork)
  {
    HeadWork w(T, D, /*backward=*/true);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t offset = b * T * row + h * D;
        const uint16_t* q = base + offset;
        const HeadArgs args{q, q + H * D, q + 2 * H * D, row, H * D, causal};
        float* d = dqkv + offset;
        head_backward(args, stats + (b * H + h) * T * 2, dout + b * T * H * D + h * D, d,
                      d + H * D, d + 2 * H * D, w, native);
      }
  }
}

}  // namespace moe::cpu
