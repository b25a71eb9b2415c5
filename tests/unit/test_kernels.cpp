// CPU kernels: every fast op (moe::cpu) against its reference twin (moe::cpu::ref),
// every backward against central differences of the reference forward, and the
// mathematical properties the model relies on (masking, rotary relative position,
// ignore-index, tie-breaking, dispatch/combine identities, the AdamW formula).
//
// Tolerances. Inputs are O(1) (uniform in [-s, s]). The reference accumulates in
// double, so the difference is the fast version's float error:
//  - element-wise ops: a few ulp from exp_approx/erf_approx (|err| <= 2 ulp of exp,
//    1.5e-7 absolute of erf) -> atol 1e-6, rtol 1e-5.
//  - reductions over n terms (softmax, norms, attention, loss): float summation error
//    grows like n u with u = 6e-8; for n <= ~1000 that is <= 6e-5 relative of the sum
//    of magnitudes, so atol/rtol of 1e-5..1e-4 with the sum of magnitudes O(1)..O(n).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/ops.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using moe::testing::check_gradient;
using moe::testing::dot;
using moe::testing::random_vector;
using Vec = std::vector<float>;

// Passes when |actual - expected| <= atol + rtol |expected| everywhere.
::testing::AssertionResult all_close(const Vec& actual, const Vec& expected,
                                     double atol, double rtol) {
  if (actual.size() != expected.size())
    return ::testing::AssertionFailure() << "sizes " << actual.size() << " vs " << expected.size();
  for (size_t i = 0; i < actual.size(); ++i) {
    const double err = std::fabs(static_cast<double>(actual[i]) - expected[i]);
    if (!(err <= atol + rtol * std::fabs(expected[i])))
      return ::testing::AssertionFailure() << "element " << i << ": " << actual[i]
                                           << " vs expected " << expected[i];
  }
  return ::testing::AssertionSuccess();
}

// ---------------------------------------------------------------- matmul

TEST(Matmul, FastEqualsRefAllTransposesAndBeta) {
  struct Dims { int64_t m, n, k; };
  for (const Dims dims : {Dims{1, 1, 1}, Dims{7, 33, 5}, Dims{33, 7, 64}, Dims{64, 48, 33}}) {
    for (int ta = 0; ta < 2; ++ta) {
      for (int tb = 0; tb < 2; ++tb) {
        for (const float beta : {0.0f, 0.5f}) {
          const auto [m, n, k] = dims;
          const Vec a = random_vector(m * k, 1), b = random_vector(k * n, 2);
          Vec c_ref = random_vector(m * n, 3), c_fast = c_ref;
          cpu::ref::matmul(a.data(), b.data(), c_ref.data(), m, n, k, ta, tb, 1.5f, beta);
          cpu::matmul(a.data(), b.data(), c_fast.data(), m, n, k, ta, tb, 1.5f, beta);
          // Forward error of a k-term float dot product of entries in [-1,1]:
          // <= k u sum|a b| <= k^2 u, times alpha 1.5.
          const double atol = 1.5 * k * k * 6e-8 + 1e-6;
          EXPECT_TRUE(all_close(c_fast, c_ref, atol, 1e-5))
              << "m=" << m << " n=" << n << " k=" << k << " ta=" << ta << " tb=" << tb
              << " beta=" << beta;
        }
      }
    }
  }
}

TEST(Matmul, TransposesMeanTranspose) {
  // op(A) op(B) with explicitly transposed copies gives the same product.
  const int64_t m = 5, n = 6, k = 7;
  const Vec a = random_vector(m * k, 4), b = random_vector(k * n, 5);
  Vec at(k * m), bt(n * k);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p) at[p * m + i] = a[i * k + p];
  for (int64_t p = 0; p < k; ++p)
    for (int64_t j = 0; j < n; ++j) bt[j * k + p] = b[p * n + j];
  Vec c0(m * n), c1(m * n);
  cpu::ref::matmul(a.data(), b.data(), c0.data(), m, n, k, false, false, 1.0f, 0.0f);
  cpu::ref::matmul(at.data(), bt.data(), c1.data(), m, n, k, true, true, 1.0f, 0.0f);
  EXPECT_TRUE(all_close(c1, c0, 1e-6, 0.0));
  cpu::matmul(at.data(), b.data(), c1.data(), m, n, k, true, false, 1.0f, 0.0f);
  EXPECT_TRUE(all_close(c1, c0, 1e-5, 1e-5));
}

TEST(Matmul, BetaZeroOverwritesNaN) {
  const int64_t m = 3, n = 4, k = 2;
  const Vec a = random_vector(m * k, 6), b = random_vector(k * n, 7);
  Vec c(m * n, std::numeric_limits<float>::quiet_NaN());
  cpu::matmul(a.data(), b.data(), c.data(), m, n, k, false, false, 1.0f, 0.0f);
  for (float v : c) EXPECT_TRUE(std::isfinite(v));
}

// ---------------------------------------------------------------- element-wise

using UnaryFn = void (*)(const float*, float*, int64_t);
using UnaryBackwardFn = void (*)(const float*, const float*, float*, int64_t);

struct UnaryOp {
  const char* name;
  UnaryFn ref_fwd, fast_fwd;
  UnaryBackwardFn ref_bwd, fast_bwd;
};

const UnaryOp kUnaryOps[] = {
    {"silu", cpu::ref::silu_forward, cpu::silu_forward, cpu::ref::silu_backward,
     cpu::silu_backward},
    {"gelu", cpu::ref::gelu_forward, cpu::gelu_forward, cpu::ref::gelu_backward,
     cpu::gelu_backward},
};

TEST(Elementwise, UnaryFastEqualsRef) {
  for (const UnaryOp& op : kUnaryOps) {
    // 100003 takes the multi-threaded path; scale 12 reaches the saturated tails.
    for (const int64_t n : {1, 7, 33, 100003}) {
      const Vec x = random_vector(n, 10, 12.0f), dy = random_vector(n, 11);
      Vec y_ref(n), y_fast(n), dx_ref(n), dx_fast(n);
      op.ref_fwd(x.data(), y_ref.data(), n);
      op.fast_fwd(x.data(), y_fast.data(), n);
      op.ref_bwd(x.data(), dy.data(), dx_ref.data(), n);
      op.fast_bwd(x.data(), dy.data(), dx_fast.data(), n);
      EXPECT_TRUE(all_close(y_fast, y_ref, 1e-6, 1e-5)) << op.name << " n=" << n;
      EXPECT_TRUE(all_close(dx_fast, dx_ref, 1e-6, 1e-5)) << op.name << " n=" << n;
    }
  }
}

TEST(Elementwise, UnaryBackwardMatchesFiniteDifferences) {
  const int64_t n = 33;
  for (const UnaryOp& op : kUnaryOps) {
    for (const UnaryBackwardFn bwd : {op.ref_bwd, op.fast_bwd}) {
      Vec x = random_vector(n, 12, 3.0f);
      const Vec r = random_vector(n, 13);
      Vec dx(n), y(n);
      bwd(x.data(), r.data(), dx.data(), n);
      auto loss = [&] { op.ref_fwd(x.data(), y.data(), n); return dot(y.data(), r.data(), n); };
      EXPECT_EQ(check_gradient(op.name, x.data(), dx.data(), n, loss), "");
    }
  }
}

TEST(Elementwise, SwigluFastEqualsRefAndGradient) {
  for (const int64_t n : {1, 7, 33, 100003}) {
    const Vec g = random_vector(n, 14, 12.0f), u = random_vector(n, 15), dh = random_vector(n, 16);
    Vec h_ref(n), h_fast(n), dg_ref(n), dg_fast(n), du_ref(n), du_fast(n);
    cpu::ref::swiglu_forward(g.data(), u.data(), h_ref.data(), n);
    cpu::swiglu_forward(g.data(), u.data(), h_fast.data(), n);
    cpu::ref::swiglu_backward(g.data(), u.data(), dh.data(), dg_ref.data(), du_ref.data(), n);
    cpu::swiglu_backward(g.data(), u.data(), dh.data(), dg_fast.data(), du_fast.data(), n);
    EXPECT_TRUE(all_close(h_fast, h_ref, 1e-6, 1e-5)) << n;
    EXPECT_TRUE(all_close(dg_fast, dg_ref, 1e-6, 1e-5)) << n;
    EXPECT_TRUE(all_close(du_fast, du_ref, 1e-6, 1e-5)) << n;
  }
  const int64_t n = 33;
  Vec g = random_vector(n, 17, 3.0f), u = random_vector(n, 18), h(n), dg(n), du(n);
  const Vec r = random_vector(n, 19);
  cpu::swiglu_backward(g.data(), u.data(), r.data(), dg.data(), du.data(), n);
  auto loss = [&] { cpu::ref::swiglu_forward(g.data(), u.data(), h.data(), n); return dot(h.data(), r.data(), n); };
  EXPECT_EQ(check_gradient("swiglu.g", g.data(), dg.data(), n, loss), "");
  EXPECT_EQ(check_gradient("swiglu.u", u.data(), du.data(), n, loss), "");
}

// ---------------------------------------------------------------- softmax

TEST(Softmax, FastEqualsRefAndGradient) {
  for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {7, 33}, {33, 7}, {64, 1000}}) {
    const Vec x = random_vector(rows * cols, 20, 5.0f), dy = random_vector(rows * cols, 21);
    Vec y_ref(rows * cols), y_fast(rows * cols), dx_ref(rows * cols), dx_fast(rows * cols);
    cpu::ref::softmax_forward(x.data(), y_ref.data(), rows, cols);
    cpu::softmax_forward(x.data(), y_fast.data(), rows, cols);
    cpu::ref::softmax_backward(y_ref.data(), dy.data(), dx_ref.data(), rows, cols);
    cpu::softmax_backward(y_ref.data(), dy.data(), dx_fast.data(), rows, cols);
    EXPECT_TRUE(all_close(y_fast, y_ref, 1e-7, 1e-5)) << rows << "x" << cols;
    EXPECT_TRUE(all_close(dx_fast, dx_ref, 1e-6, 1e-4)) << rows << "x" << cols;
  }
  const int64_t rows = 3, cols = 7, n = rows * cols;
  Vec x = random_vector(n, 22, 2.0f), y(n), dx(n);
  const Vec r = random_vector(n, 23);
  cpu::ref::softmax_forward(x.data(), y.data(), rows, cols);
  cpu::softmax_backward(y.data(), r.data(), dx.data(), rows, cols);
  auto loss = [&] { cpu::ref::softmax_forward(x.data(), y.data(), rows, cols); return dot(y.data(), r.data(), n); };
  EXPECT_EQ(check_gradient("softmax", x.data(), dx.data(), n, loss), "");
}

TEST(Softmax, RowsSumToOneAndSurviveLargeLogits) {
  const int64_t rows = 3, cols = 5;
  // Differences of 1e4 overflow a naive exp; the max-shifted form must not.
  const Vec x = {1e4f, 0.0f, -1e4f, 1e4f - 1.0f, 3.0f,  //
                 -1e4f, -1e4f, -1e4f, -1e4f, -1e4f,    //
                 0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  for (auto fwd : {cpu::ref::softmax_forward, cpu::softmax_forward}) {
    Vec y(rows * cols);
    fwd(x.data(), y.data(), rows, cols);
    for (int64_t r = 0; r < rows; ++r) {
      double sum = 0.0;
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_TRUE(std::isfinite(y[r * cols + c]));
        sum += y[r * cols + c];
      }
      EXPECT_NEAR(sum, 1.0, 1e-6);
    }
    EXPECT_NEAR(y[0], 1.0 / (1.0 + std::exp(-1.0)), 1e-6);  // only 1e4 and 1e4-1 count
    EXPECT_EQ(y[2], 0.0f);
    EXPECT_NEAR(y[5], 0.2, 1e-6);  // equal logits: uniform
  }
}

// ---------------------------------------------------------------- norms

struct Rows { int64_t rows, cols; };
const Rows kNormShapes[] = {{1, 7}, {7, 33}, {33, 256}, {300, 257}};  // last: threaded

TEST(RmsNorm, FastEqualsRef) {
  for (const Rows s : kNormShapes) {
    const int64_t n = s.rows * s.cols;
    const Vec x = random_vector(n, 30, 2.0f), w = random_vector(s.cols, 31), dy = random_vector(n, 32);
    Vec y_ref(n), y_fast(n), rstd_ref(s.rows), rstd_fast(s.rows), dx_ref(n), dx_fast(n);
    Vec dw_ref = random_vector(s.cols, 33), dw_fast = dw_ref;  // dw accumulates
    cpu::ref::rmsnorm_forward(x.data(), w.data(), y_ref.data(), rstd_ref.data(), s.rows, s.cols, 1e-6f);
    cpu::rmsnorm_forward(x.data(), w.data(), y_fast.data(), rstd_fast.data(), s.rows, s.cols, 1e-6f);
    cpu::ref::rmsnorm_backward(x.data(), w.data(), rstd_ref.data(), dy.data(), dx_ref.data(),
                               dw_ref.data(), s.rows, s.cols);
    cpu::rmsnorm_backward(x.data(), w.data(), rstd_ref.data(), dy.data(), dx_fast.data(),
                          dw_fast.data(), s.rows, s.cols);
    EXPECT_TRUE(all_close(y_fast, y_ref, 1e-5, 1e-5)) << s.rows << "x" << s.cols;
    EXPECT_TRUE(all_close(rstd_fast, rstd_ref, 0.0, 1e-5));
    EXPECT_TRUE(all_close(dx_fast, dx_ref, 1e-5, 1e-4));
    EXPECT_TRUE(all_close(dw_fast, dw_ref, 1e-4, 1e-4));  // sums over up to 300 rows
  }
}

TEST(RmsNorm, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, cols = 11, n = rows * cols;
  Vec x = random_vector(n, 34, 2.0f), w = random_vector(cols, 35), y(n), rstd(rows), dx(n);
  Vec dw(cols, 0.0f);
  const Vec r = random_vector(n, 36);
  cpu::ref::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, cols, 1e-6f);
  cpu::rmsnorm_backward(x.data(), w.data(), rstd.data(), r.data(), dx.data(), dw.data(), rows, cols);
  auto loss = [&] {
    cpu::ref::rmsnorm_forward(x.data(), w.data(), y.data(), rstd.data(), rows, cols, 1e-6f);
    return dot(y.data(), r.data(), n);
  };
  EXPECT_EQ(check_gradient("rmsnorm.x", x.data(), dx.data(), n, loss), "");
  EXPECT_EQ(check_gradient("rmsnorm.w", w.data(), dw.data(), cols, loss), "");
}

TEST(LayerNorm, FastEqualsRefWithAndWithoutAffine) {
  for (const bool affine : {true, false}) {
    for (const Rows s : kNormShapes) {
      const int64_t n = s.rows * s.cols;
      // Offset mean 3: the two-pass variance must not cancel.
      Vec x = random_vector(n, 40, 2.0f);
      for (float& v : x) v += 3.0f;
      const Vec w = random_vector(s.cols, 41), b = random_vector(s.cols, 42), dy = random_vector(n, 43);
      const float* wp = affine ? w.data() : nullptr;
      const float* bp = affine ? b.data() : nullptr;
      Vec y_ref(n), y_fast(n), mean_ref(s.rows), mean_fast(s.rows), rstd_ref(s.rows),
          rstd_fast(s.rows), dx_ref(n), dx_fast(n);
      Vec dw_ref = random_vector(s.cols, 44), dw_fast = dw_ref, db_ref = random_vector(s.cols, 45),
          db_fast = db_ref;
      float* dwr = affine ? dw_ref.data() : nullptr;
      float* dwf = affine ? dw_fast.data() : nullptr;
      float* dbr = affine ? db_ref.data() : nullptr;
      float* dbf = affine ? db_fast.data() : nullptr;
      cpu::ref::layernorm_forward(x.data(), wp, bp, y_ref.data(), mean_ref.data(), rstd_ref.data(),
                                  s.rows, s.cols, 1e-5f);
      cpu::layernorm_forward(x.data(), wp, bp, y_fast.data(), mean_fast.data(), rstd_fast.data(),
                             s.rows, s.cols, 1e-5f);
      cpu::ref::layernorm_backward(x.data(), wp, mean_ref.data(), rstd_ref.data(), dy.data(),
                                   dx_ref.data(), dwr, dbr, s.rows, s.cols);
      cpu::layernorm_backward(x.data(), wp, mean_ref.data(), rstd_ref.data(), dy.data(),
                              dx_fast.data(), dwf, dbf, s.rows, s.cols);
      const std::string what = std::to_string(s.rows) + "x" + std::to_string(s.cols) +
                               (affine ? " affine" : " plain");
      EXPECT_TRUE(all_close(y_fast, y_ref, 1e-5, 1e-5)) << what;
      EXPECT_TRUE(all_close(mean_fast, mean_ref, 1e-6, 1e-6)) << what;
      EXPECT_TRUE(all_close(rstd_fast, rstd_ref, 0.0, 1e-5)) << what;
      EXPECT_TRUE(all_close(dx_fast, dx_ref, 1e-5, 1e-4)) << what;
      EXPECT_TRUE(all_close(dw_fast, dw_ref, 1e-4, 1e-4)) << what;
      EXPECT_TRUE(all_close(db_fast, db_ref, 1e-4, 1e-4)) << what;
    }
  }
}

TEST(LayerNorm, WithoutAffineIsStandardised) {
  const int64_t rows = 4, cols = 33, n = rows * cols;
  const Vec x = random_vector(n, 46, 5.0f);
  Vec y(n), mean(rows), rstd(rows);
  cpu::layernorm_forward(x.data(), nullptr, nullptr, y.data(), mean.data(), rstd.data(), rows,
                         cols, 0.0f);
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0.0, var = 0.0;
    for (int64_t c = 0; c < cols; ++c) mu += y[r * cols + c];
    mu /= cols;
    for (int64_t c = 0; c < cols; ++c) var += (y[r * cols + c] - mu) * (y[r * cols + c] - mu);
    EXPECT_NEAR(mu, 0.0, 1e-6);
    EXPECT_NEAR(var / cols, 1.0, 1e-5);
  }
}

TEST(LayerNorm, BackwardMatchesFiniteDifferences) {
  const int64_t rows = 3, cols = 11, n = rows * cols;
  Vec x = random_vector(n, 47, 2.0f), w = random_vector(cols, 48), b = random_vector(cols, 49);
  Vec y(n), mean(rows), rstd(rows), dx(n), dw(cols, 0.0f), db(cols, 0.0f);
  const Vec r = random_vector(n, 50);
  for (const bool affine : {true, false}) {
    const float* wp = affine ? w.data() : nullptr;
    const float* bp = affine ? b.data() : nullptr;
    cpu::ref::layernorm_forward(x.data(), wp, bp, y.data(), mean.data(), rstd.data(), rows, cols, 1e-5f);
    cpu::layernorm_backward(x.data(), wp, mean.data(), rstd.data(), r.data(), dx.data(),
                            affine ? dw.data() : nullptr, affine ? db.data() : nullptr, rows, cols);
    auto loss = [&] {
      cpu::ref::layernorm_forward(x.data(), wp, bp, y.data(), mean.data(), rstd.data(), rows, cols, 1e-5f);
      return dot(y.data(), r.data(), n);
    };
    EXPECT_EQ(check_gradient("layernorm.x", x.data(), dx.data(), n, loss), "") << affine;
    if (!affine) continue;
    EXPECT_EQ(check_gradient("layernorm.w", w.data(), dw.data(), cols, loss), "");
    EXPECT_EQ(check_gradient("layernorm.b", b.data(), db.data(), cols, loss), "");
  }
}

// ---------------------------------------------------------------- rotary

struct Bthd { int64_t B, T, H, D; };

TEST(Rope, FastEqualsRefAndInverseUndoes) {
  for (const Bthd s : {Bthd{1, 1, 1, 2}, Bthd{2, 7, 3, 16}, Bthd{2, 33, 2, 64}, Bthd{1, 300, 4, 32}}) {
    // Rotate the q block of a (B,T,3,H,D) qkv buffer: stride 3HD, as the model does.
    const int64_t stride = 3 * s.H * s.D, n = s.B * s.T * stride;
    const Vec x = random_vector(n, 60);
    Vec x_ref = x, x_fast = x;
    cpu::ref::rope_apply(x_ref.data(), s.B, s.T, s.H, s.D, stride, 10000.0f, false);
    cpu::rope_apply(x_fast.data(), s.B, s.T, s.H, s.D, stride, 10000.0f, false);
    // Angles up to T rad: float cos/sin of them are good to ~T u.
    EXPECT_TRUE(all_close(x_fast, x_ref, 1e-5, 1e-5)) << s.B << "," << s.T << "," << s.H << "," << s.D;
    cpu::rope_apply(x_fast.data(), s.B, s.T, s.H, s.D, stride, 10000.0f, true);
    EXPECT_TRUE(all_close(x_fast, x, 1e-5, 1e-5));  // includes the untouched k, v blocks
  }
}

TEST(Rope, DotProductDependsOnRelativePositionOnly) {
  const int64_t T = 24, D = 16;
  const Vec q0 = random_vector(D, 61), k0 = random_vector(D, 62);
  Vec q(T * D), k(T * D);  // the same q0 and k0 at every position
  for (int64_t t = 0; t < T; ++t) {
    std::copy(q0.begin(), q0.end(), q.begin() + t * D);
    std::copy(k0.begin(), k0.end(), k.begin() + t * D);
  }
  cpu::rope_apply(q.data(), 1, T, 1, D, D, 100.0f, false);
  cpu::rope_apply(k.data(), 1, T, 1, D, D, 100.0f, false);
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t s = 0; s < T; ++s) {
      const int64_t shift = std::min(T - 1 - t, T - 1 - s);  // move both to the far end
      const double here = dot(&q[t * D], &k[s * D], D);
      const double there = dot(&q[(t + shift) * D], &k[(s + shift) * D], D);
      EXPECT_NEAR(here, there, 1e-5) << "t=" << t << " s=" << s;
    }
  }
}

TEST(Rope, InverseIsTheGradient) {
  // rope is linear: d/dx sum(rope(x) r) = rope^T r = rope_inverse(r).
  const int64_t B = 1, T = 5, H = 2, D = 8, n = B * T * H * D;
  Vec x = random_vector(n, 63), y(n), g = random_vector(n, 64);
  const Vec r = g;
  cpu::rope_apply(g.data(), B, T, H, D, H * D, 10000.0f, true);
  auto loss = [&] {
    y = x;
    cpu::ref::rope_apply(y.data(), B, T, H, D, H * D, 10000.0f, false);
    return dot(y.data(), r.data(), n);
  };
  EXPECT_EQ(check_gradient("rope", x.data(), g.data(), n, loss), "");
}

// ---------------------------------------------------------------- attention

struct AttentionResult { Vec att, out, dqkv; };

AttentionResult run_attention(bool fast, const Vec& qkv, const Vec& dout, const Bthd& s, bool causal) {
  AttentionResult r{Vec(s.B * s.H * s.T * s.T), Vec(s.B * s.T * s.H * s.D), Vec(qkv.size())};
  Vec scratch(r.att.size());
  auto fwd = fast ? cpu::attention_forward : cpu::ref::attention_forward;
  auto bwd = fast ? cpu::attention_backward : cpu::ref::attention_backward;
  fwd(qkv.data(), r.att.data(), r.out.data(), s.B, s.T, s.H, s.D, causal);
  bwd(qkv.data(), r.att.data(), dout.data(), r.dqkv.data(), scratch.data(), s.B, s.T, s.H, s.D, causal);
  return r;
}

TEST(Attention, FastEqualsRef) {
  // D = 24 takes the generic (non-templated) path; T = 65 and 70 cross a 64-key chunk.
  for (const Bthd s : {Bthd{1, 1, 1, 16}, Bthd{2, 7, 3, 16}, Bthd{1, 33, 2, 32},
                       Bthd{2, 37, 2, 24}, Bthd{1, 65, 2, 64}, Bthd{1, 70, 1, 128}}) {
    for (const bool causal : {true, false}) {
      const Vec qkv = random_vector(s.B * s.T * 3 * s.H * s.D, 70, 2.0f);
      const Vec dout = random_vector(s.B * s.T * s.H * s.D, 71);
      const AttentionResult ref = run_attention(false, qkv, dout, s, causal);
      const AttentionResult fast = run_attention(true, qkv, dout, s, causal);
      const std::string what = "B=" + std::to_string(s.B) + " T=" + std::to_string(s.T) +
                               " D=" + std::to_string(s.D) + (causal ? " causal" : "");
      EXPECT_TRUE(all_close(fast.att, ref.att, 1e-6, 1e-4)) << what;
      EXPECT_TRUE(all_close(fast.out, ref.out, 1e-5, 1e-4)) << what;
      EXPECT_TRUE(all_close(fast.dqkv, ref.dqkv, 1e-5, 1e-4)) << what;
    }
  }
}

TEST(Attention, CausalMaskAndFirstToken) {
  const Bthd s{2, 9, 3, 16};
  const Vec qkv = random_vector(s.B * s.T * 3 * s.H * s.D, 72, 3.0f);
  const Vec dout = random_vector(s.B * s.T * s.H * s.D, 73);
  for (const bool fast : {false, true}) {
    const AttentionResult r = run_attention(fast, qkv, dout, s, true);
    for (int64_t bh = 0; bh < s.B * s.H; ++bh)
      for (int64_t t = 0; t < s.T; ++t)
        for (int64_t u = t + 1; u < s.T; ++u)
          ASSERT_EQ(r.att[(bh * s.T + t) * s.T + u], 0.0f) << "future key " << u << " of " << t;
    // Token 0 sees only itself: probability 1, output = its own v, exactly.
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t h = 0; h < s.H; ++h)
        for (int64_t d = 0; d < s.D; ++d) {
          const float v0 = qkv[(b * s.T * 3 + 2) * s.H * s.D + h * s.D + d];
          EXPECT_EQ(r.out[b * s.T * s.H * s.D + h * s.D + d], v0);
        }
  }
}

TEST(Attention, BackwardMatchesFiniteDifferences) {
  const Bthd s{1, 5, 2, 4};
  for (const bool causal : {true, false}) {
    Vec qkv = random_vector(s.B * s.T * 3 * s.H * s.D, 74);
    const Vec r = random_vector(s.B * s.T * s.H * s.D, 75);
    for (const bool fast : {false, true}) {
      const AttentionResult res = run_attention(fast, qkv, r, s, causal);
      Vec att(res.att.size()), out(res.out.size());
      auto loss = [&] {
        cpu::ref::attention_forward(qkv.data(), att.data(), out.data(), s.B, s.T, s.H, s.D, causal);
        return dot(out.data(), r.data(), static_cast<int64_t>(out.size()));
      };
      EXPECT_EQ(check_gradient("attention.qkv", qkv.data(), res.dqkv.data(),
                               static_cast<int64_t>(qkv.size()), loss, {.max_checks = 120}),
                "")
          << (fast ? "fast" : "ref") << (causal ? " causal" : "");
    }
  }
}

// ---------------------------------------------------------------- cross-entropy

TEST(CrossEntropy, FastEqualsRefIncludingInPlaceGradient) {
  for (const Rows s : {Rows{1, 1}, Rows{7, 33}, Rows{33, 1000}}) {
    const int64_t n = s.rows * s.cols;
    const Vec logits = random_vector(n, 80, 4.0f);
    std::vector<int32_t> targets(s.rows);
    for (int64_t r = 0; r < s.rows; ++r)
      targets[r] = r % 5 == 3 ? -1 : static_cast<int32_t>((r * 7919) % s.cols);
    Vec loss_ref(s.rows), loss_fast(s.rows), d_ref(n);
    Vec d_fast = logits;  // the fast call writes dlogits over the logits
    cpu::ref::cross_entropy(logits.data(), targets.data(), loss_ref.data(), d_ref.data(), 0.25f, s.rows, s.cols);
    cpu::cross_entropy(d_fast.data(), targets.data(), loss_fast.data(), d_fast.data(), 0.25f, s.rows, s.cols);
    EXPECT_TRUE(all_close(loss_fast, loss_ref, 1e-5, 1e-5)) << s.rows << "x" << s.cols;
    EXPECT_TRUE(all_close(d_fast, d_ref, 1e-7, 1e-5)) << s.rows << "x" << s.cols;
  }
}

TEST(CrossEntropy, EqualsMinusLogSoftmaxAndIgnoresNegativeTargets) {
  const int64_t rows = 4, V = 9, n = rows * V;
  Vec logits = random_vector(n, 81, 3.0f), probs(n);
  const std::vector<int32_t> targets = {2, -1, 8, -100};
  cpu::ref::softmax_forward(logits.data(), probs.data(), rows, V);
  for (auto ce : {cpu::ref::cross_entropy, cpu::cross_entropy}) {
    Vec losses(rows), dlogits(n, 7.0f);
    ce(logits.data(), targets.data(), losses.data(), dlogits.data(), 1.0f, rows, V);
    for (int64_t r = 0; r < rows; ++r) {
      if (targets[r] < 0) {
        EXPECT_EQ(losses[r], 0.0f);
        for (int64_t c = 0; c < V; ++c) EXPECT_EQ(dlogits[r * V + c], 0.0f);
      } else {
        EXPECT_NEAR(losses[r], -std::log(probs[r * V + targets[r]]), 1e-5);
      }
    }
    Vec forward_only(rows);
    ce(logits.data(), targets.data(), forward_only.data(), nullptr, 1.0f, rows, V);
    EXPECT_EQ(forward_only, losses);
  }
}

TEST(CrossEntropy, GradientMatchesFiniteDifferences) {
  const int64_t rows = 3, V = 7, n = rows * V;
  const float scale = 1.0f / 3.0f;  // mean over rows
  Vec logits = random_vector(n, 82, 2.0f), losses(rows), dlogits(n);
  const std::vector<int32_t> targets = {4, -1, 0};
  cpu::cross_entropy(logits.data(), targets.data(), losses.data(), dlogits.data(), scale, rows, V);
  auto loss = [&] {
    cpu::ref::cross_entropy(logits.data(), targets.data(), losses.data(), nullptr, scale, rows, V);
    return scale * std::accumulate(losses.begin(), losses.end(), 0.0);
  };
  EXPECT_EQ(check_gradient("cross_entropy", logits.data(), dlogits.data(), n, loss), "");
}

// ---------------------------------------------------------------- routing

TEST(Topk, FastEqualsRefDescendingWithTiesToLowerIndex) {
  struct Case { int64_t rows, cols, k; };
  for (const Case c : {Case{1, 1, 1}, Case{7, 33, 2}, Case{33, 64, 8}, Case{100, 7, 7}, Case{5, 9, 0}}) {
    Vec x = random_vector(c.rows * c.cols, 90);
    for (float& v : x) v = std::round(v * 4.0f) / 4.0f;  // 9 distinct values: many ties
    Vec val_ref(c.rows * c.k), val_fast(c.rows * c.k);
    std::vector<int32_t> idx_ref(c.rows * c.k), idx_fast(c.rows * c.k);
    cpu::ref::topk(x.data(), val_ref.data(), idx_ref.data(), c.rows, c.cols, c.k);
    cpu::topk(x.data(), val_fast.data(), idx_fast.data(), c.rows, c.cols, c.k);
    EXPECT_EQ(idx_fast, idx_ref) << c.rows << "x" << c.cols << " k=" << c.k;
    EXPECT_EQ(val_fast, val_ref);
  }
  const Vec row = {1.0f, 3.0f, 3.0f, 2.0f, 3.0f, 2.0f};
  for (auto topk : {cpu::ref::topk, cpu::topk}) {
    Vec val(4);
    std::vector<int32_t> idx(4);
    topk(row.data(), val.data(), idx.data(), 1, 6, 4);
    EXPECT_EQ(idx, (std::vector<int32_t>{1, 2, 4, 3}));
    EXPECT_EQ(val, (Vec{3.0f, 3.0f, 3.0f, 2.0f}));
  }
}

TEST(PermuteCombine, FastEqualsRef) {
  const int64_t n = 33, k = 2, cols = 7, slots = n * k;
  const Vec x = random_vector(n * cols, 91), y = random_vector(slots * cols, 92);
  const Vec scale = random_vector(slots, 93), weight = random_vector(n * k, 94);
  std::vector<int32_t> index(slots), slot(n * k);
  for (int64_t i = 0; i < slots; ++i) index[i] = i % 9 == 4 ? -1 : static_cast<int32_t>((i * 13) % n);
  for (int64_t i = 0; i < n * k; ++i) slot[i] = i % 7 == 2 ? -1 : static_cast<int32_t>((i * 17) % slots);
  for (const bool weighted : {false, true}) {
    Vec p_ref(slots * cols), p_fast(slots * cols), c_ref(n * cols), c_fast(n * cols, 5.0f);
    const float* sp = weighted ? scale.data() : nullptr;
    const float* wp = weighted ? weight.data() : nullptr;
    cpu::ref::permute_rows(x.data(), index.data(), sp, p_ref.data(), slots, cols);
    cpu::permute_rows(x.data(), index.data(), sp, p_fast.data(), slots, cols);
    cpu::ref::combine_rows(y.data(), slot.data(), wp, c_ref.data(), n, k, cols);
    cpu::combine_rows(y.data(), slot.data(), wp, c_fast.data(), n, k, cols);
    EXPECT_EQ(p_fast, p_ref);
    EXPECT_TRUE(all_close(c_fast, c_ref, 1e-6, 1e-6));  // k float products vs double
  }
}

TEST(PermuteCombine, DispatchThenCombineIsIdentityAndAdjoint) {
  // Each token t goes to K slots; slot[t*K + j] is where, index[slot] = t inverts it.
  const int64_t n = 7, K = 2, cols = 5, slots = n * K;
  std::vector<int32_t> slot(n * K), index(slots);
  for (int64_t i = 0; i < n * K; ++i) {
    slot[i] = static_cast<int32_t>((i * 5) % slots);  // 5 is coprime to 14: a permutation
    index[slot[i]] = static_cast<int32_t>(i / K);
  }
  const Vec x = random_vector(n * cols, 95), weight = random_vector(n * K, 96);
  for (const bool fast : {false, true}) {
    auto permute = fast ? cpu::permute_rows : cpu::ref::permute_rows;
    auto combine = fast ? cpu::combine_rows : cpu::ref::combine_rows;
    // Combine weights 1/K: dispatch then combine returns the input.
    Vec dispatched(slots * cols), back(n * cols);
    const Vec mean_weight(n * K, 1.0f / K);
    permute(x.data(), index.data(), nullptr, dispatched.data(), slots, cols);
    combine(dispatched.data(), slot.data(), mean_weight.data(), back.data(), n, K, cols);
    EXPECT_TRUE(all_close(back, x, 1e-7, 1e-6));
    // combine_rows with weights w is the adjoint of permute_rows with the per-slot
    // scale w: <combine(y), x> = <y, permute(x)>. This is why combine's backward
    // is a permute and dispatch's backward is a combine.
    Vec slot_scale(slots), px(slots * cols), cy(n * cols);
    for (int64_t i = 0; i < n * K; ++i) slot_scale[slot[i]] = weight[i];
    const Vec y = random_vector(slots * cols, 97);
    permute(x.data(), index.data(), slot_scale.data(), px.data(), slots, cols);
    combine(y.data(), slot.data(), weight.data(), cy.data(), n, K, cols);
    EXPECT_NEAR(dot(cy.data(), x.data(), n * cols), dot(px.data(), y.data(), slots * cols), 1e-5);
  }
}

TEST(Embedding, ForwardGathersAndBackwardAccumulatesRepeats) {
  const int64_t V = 5, cols = 70, n = 6;  // cols > 64: two column blocks
  const Vec table = random_vector(V * cols, 98), dout = random_vector(n * cols, 99);
  const std::vector<int32_t> ids = {2, 0, 2, 4, 2, 0};
  for (const bool fast : {false, true}) {
    Vec out(n * cols);
    (fast ? cpu::embedding_forward : cpu::ref::embedding_forward)(table.data(), ids.data(), out.data(), n, cols);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(out[i * cols + c], table[ids[i] * cols + c]);
    Vec dtable(V * cols, 1.0f);
    (fast ? cpu::embedding_backward : cpu::ref::embedding_backward)(dout.data(), ids.data(), dtable.data(), n, cols);
    for (int64_t c = 0; c < cols; ++c) {
      EXPECT_FLOAT_EQ(dtable[2 * cols + c], 1.0f + dout[0 * cols + c] + dout[2 * cols + c] + dout[4 * cols + c]);
      EXPECT_FLOAT_EQ(dtable[0 * cols + c], 1.0f + dout[1 * cols + c] + dout[5 * cols + c]);
      EXPECT_EQ(dtable[1 * cols + c], 1.0f);  // never looked up: untouched
    }
  }
  // And against finite differences of the forward (a gather is linear in the table).
  Vec t = table, dt(V * cols, 0.0f), out(n * cols);
  cpu::embedding_backward(dout.data(), ids.data(), dt.data(), n, cols);
  auto loss = [&] { cpu::ref::embedding_forward(t.data(), ids.data(), out.data(), n, cols); return dot(out.data(), dout.data(), n * cols); };
  EXPECT_EQ(check_gradient("embedding", t.data(), dt.data(), V * cols, loss), "");
}

// ---------------------------------------------------------------- optimizer

TEST(Adamw, OneStepEqualsHandFormulaAndFastEqualsRef) {
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  const Vec p0 = random_vector(5, 100), g = random_vector(5, 101);
  for (auto adamw : {cpu::ref::adamw, cpu::adamw}) {
    Vec p = p0, m(5, 0.0f), v(5, 0.0f);
    adamw(p.data(), g.data(), m.data(), v.data(), 5, lr, b1, b2, eps, wd, 1);
    for (int i = 0; i < 5; ++i) {
      // Step 1 from zero moments: mhat = g, vhat = g^2, so the update is g/(|g|+eps).
      const double expected = p0[i] - lr * (g[i] / (std::fabs(g[i]) + eps) + wd * p0[i]);
      EXPECT_NEAR(p[i], expected, 1e-6);
      EXPECT_NEAR(m[i], (1 - b1) * g[i], 1e-7);
      EXPECT_NEAR(v[i], (1 - b2) * g[i] * g[i], 1e-7);
    }
  }
  for (const int64_t n : {1, 7, 100003}) {  // later steps, threaded size
    Vec p_ref = random_vector(n, 102), m_ref = random_vector(n, 103, 0.1f);
    Vec v_ref = random_vector(n, 104, 0.01f);
    for (float& x : v_ref) x = std::fabs(x);
    Vec p_fast = p_ref, m_fast = m_ref, v_fast = v_ref;
    const Vec grad = random_vector(n, 105);
    cpu::ref::adamw(p_ref.data(), grad.data(), m_ref.data(), v_ref.data(), n, lr, b1, b2, eps, wd, 7);
    cpu::adamw(p_fast.data(), grad.data(), m_fast.data(), v_fast.data(), n, lr, b1, b2, eps, wd, 7);
    EXPECT_TRUE(all_close(p_fast, p_ref, 1e-6, 1e-6)) << n;
    EXPECT_TRUE(all_close(m_fast, m_ref, 1e-7, 1e-6)) << n;
    EXPECT_TRUE(all_close(v_fast, v_ref, 1e-7, 1e-6)) << n;
  }
}

TEST(VectorOps, AxpyAndSumSquares) {
  for (const int64_t n : {1, 7, 33, 100003}) {
    const Vec x = random_vector(n, 106);
    Vec y_ref = random_vector(n, 107), y_fast = y_ref;
    cpu::ref::axpy(-0.5f, x.data(), y_ref.data(), n);
    cpu::axpy(-0.5f, x.data(), y_fast.data(), n);
    EXPECT_EQ(y_fast, y_ref);
    const double ref = cpu::ref::sum_squares(x.data(), n);
    EXPECT_NEAR(cpu::sum_squares(x.data(), n), ref, 1e-12 * n);  // double sums, reordered
  }
}

}  // namespace
}  // namespace moe
