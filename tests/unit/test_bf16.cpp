// The bf16 kernels of mixed precision (train.precision = bf16): each fast kernel against
// its reference twin (moe::cpu::ref, the same rounding points, sums in double) and
// against the fp32 computation on unrounded inputs (what bf16 costs in accuracy).
//
// Tolerances (docs/precision.md quotes them):
//  - conversions: bit-identical to the scalar rounding of framework/core/bf16.h
//    (nearest, ties to even; NaN stays NaN), and bf16 -> fp32 -> bf16 is the identity.
//  - matmul_bf16, fast vs reference: both sum the same exact products (a bf16 times a
//    bf16 is exact in fp32); the fast one in fp32, so |err| <= k u sum_p |a_ip b_pj|
//    with u = 2^-24, as for the fp32 GEMM.
//  - matmul_bf16 vs fp32 matmul of the unrounded operands: each operand carries a
//    relative rounding error <= 2^-9, so |err| <= (2^-8 + k u) sum_p |a_ip b_pj|.
//  - expert_ffn bf16, fast vs reference: fp32 summation differences, which can flip a
//    value rounded to bf16 (h, dgate, dup) by one bf16 ulp in rare elements:
//    max |err| <= 1e-4 max |ref| per output.
//  - expert_ffn bf16 vs fp32 on the unrounded inputs: relative error of the whole
//    output (Frobenius) <= 1e-2 (three chained products of bf16 operands).
//  - attention bf16, fast vs reference: fp32 sums and one-ulp flips of the probabilities
//    and score gradients rounded to bf16: max |err| <= 1e-4 max |ref| per output (att:
//    1e-5 absolute); vs fp32 attention on the unrounded qkv: relative error (Frobenius)
//    <= 1e-2 for out and dqkv.

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <ostream>
#include <string>
#include <tuple>
#include <vector>

#include "framework/core/bf16.h"
#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/ops.h"
#include "framework/tensor/tensor.h"
#include "tests/unit/gradcheck.h"

namespace moe {
namespace {

using moe::testing::random_vector;
using Vec = std::vector<float>;
using Vec16 = std::vector<bf16>;

Vec16 rounded(const Vec& x) {
  Vec16 out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = to_bf16(x[i]);
  return out;
}

Vec widened(const Vec16& x) {
  Vec out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = to_float(x[i]);
  return out;
}

double max_abs(const Vec& x) {
  double m = 0.0;
  for (float v : x) m = std::max(m, std::fabs(static_cast<double>(v)));
  return m;
}

// ||a - b|| / ||b|| (Frobenius).
double relative_error(const Vec& a, const Vec& b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
    den += static_cast<double>(b[i]) * b[i];
  }
  return std::sqrt(num / den);
}

// ---------------------------------------------------------------- conversions

TEST(Bf16Convert, RoundsToNearestTiesToEven) {
  const float one = 1.0f, ulp = 1.0f / 128;  // bf16 has 7 explicit mantissa bits
  EXPECT_EQ(round_to_bf16(one + ulp * 0.49f), one);
  EXPECT_EQ(round_to_bf16(one + ulp * 0.51f), one + ulp);
  EXPECT_EQ(round_to_bf16(one + ulp * 0.5f), one);                   // tie: to even (1.0)
  EXPECT_EQ(round_to_bf16(one + ulp * 1.5f), one + 2 * ulp);         // tie: to even (1+2ulp)
  EXPECT_EQ(round_to_bf16(-(one + ulp * 0.51f)), -(one + ulp));
  EXPECT_EQ(round_to_bf16(0.0f), 0.0f);
  EXPECT_TRUE(std::signbit(round_to_bf16(-0.0f)));
  EXPECT_EQ(round_to_bf16(std::numeric_limits<float>::infinity()),
            std::numeric_limits<float>::infinity());
  EXPECT_EQ(round_to_bf16(std::numeric_limits<float>::max()),  // rounds up past bf16's max
            std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(round_to_bf16(std::numeric_limits<float>::quiet_NaN())));
  // A NaN whose payload sits only in the dropped bits stays a NaN (not an infinity).
  EXPECT_TRUE(std::isnan(round_to_bf16(std::bit_cast<float>(0x7f800001u))));
}

TEST(Bf16Convert, FastEqualsReferenceBitForBit) {
  Vec x = random_vector(10000, 1, 100.0f);
  for (float special : {0.0f, -0.0f, 1e-40f, -1e-40f, std::numeric_limits<float>::infinity(),
                        -std::numeric_limits<float>::infinity(),
                        std::numeric_limits<float>::quiet_NaN(),
                        std::bit_cast<float>(0x7f800001u), std::numeric_limits<float>::max(),
                        std::bit_cast<float>(0x3f808000u), std::bit_cast<float>(0x3f818000u)})
    x.push_back(special);
  // more than one OpenMP chunk's worth, so the parallel path runs too
  const Vec big = random_vector(1 << 17, 2);
  for (const Vec& input : {x, big}) {
    const int64_t n = static_cast<int64_t>(input.size());
    Vec16 fast(input.size()), ref(input.size());
    cpu::convert_to_bf16(input.data(), fast.data(), n);
    cpu::ref::convert_to_bf16(input.data(), ref.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(fast[i].bits, ref[i].bits) << "element " << i;
    Vec back(input.size()), back_ref(input.size());
    cpu::convert_from_bf16(fast.data(), back.data(), n);
    cpu::ref::convert_from_bf16(ref.data(), back_ref.data(), n);
    Vec16 again(input.size());
    cpu::convert_to_bf16(back.data(), again.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(back_ref[i]));
      ASSERT_EQ(again[i].bits, fast[i].bits) << "bf16 -> fp32 -> bf16 changed element " << i;
    }
  }
}

TEST(Bf16Convert, OpChecksDtypesAndCounts) {
  Vec x = random_vector(6, 3);
  Buffer b16(Device::kCpu, DType::kBF16);
  Vec y(6);
  ops::convert(Tensor(x.data(), {2, 3}), b16.view({2, 3}));
  ops::convert(b16.view({3, 2}), Tensor(y.data(), {3, 2}));
  for (int i = 0; i < 6; ++i) EXPECT_EQ(y[i], round_to_bf16(x[i]));
  EXPECT_THROW(ops::convert(Tensor(x.data(), {6}), Tensor(y.data(), {6})), Error);
  EXPECT_THROW(ops::convert(Tensor(x.data(), {6}), b16.view({5})), Error);
}

// ---------------------------------------------------------------- matmul

struct Dims {
  int64_t m, n, k;
};

TEST(Bf16Matmul, FastEqualsReferenceAllTransposesAndAccumulate) {
  for (const Dims d : {Dims{1, 1, 1}, Dims{7, 33, 5}, Dims{33, 7, 64}, Dims{64, 48, 33},
                       Dims{300, 70, 130}}) {
    for (int ta = 0; ta < 2; ++ta) {
      for (int tb = 0; tb < 2; ++tb) {
        for (const bool acc : {false, true}) {
          const Vec16 a = rounded(random_vector(d.m * d.k, 1)),
                      b = rounded(random_vector(d.k * d.n, 2));
          Vec c_ref = random_vector(d.m * d.n, 3), c_fast = c_ref;
          cpu::ref::matmul_bf16(a.data(), b.data(), c_ref.data(), d.m, d.n, d.k, ta, tb, acc);
          cpu::matmul_bf16(a.data(), b.data(), c_fast.data(), d.m, d.n, d.k, ta, tb, acc);
          // |a|, |b| <= 1: sum_p |a b| <= k, so |err| <= k^2 u (+ |c| u when accumulating)
          const double atol = static_cast<double>(d.k) * d.k * 6e-8 + 1e-6;
          for (int64_t i = 0; i < d.m * d.n; ++i)
            ASSERT_NEAR(c_fast[i], c_ref[i], atol)
                << d.m << "x" << d.n << "x" << d.k << " ta=" << ta << " tb=" << tb
                << " acc=" << acc << " element " << i;
        }
      }
    }
  }
}

TEST(Bf16Matmul, EmptySumOverwritesOrKeeps) {
  Vec c = {1.0f, 2.0f};
  const Vec16 none;
  cpu::matmul_bf16(none.data(), none.data(), c.data(), 1, 2, 0, false, false, true);
  EXPECT_EQ(c, (Vec{1.0f, 2.0f}));
  cpu::matmul_bf16(none.data(), none.data(), c.data(), 1, 2, 0, false, false, false);
  EXPECT_EQ(c, (Vec{0.0f, 0.0f}));
}

TEST(Bf16Matmul, WithinBf16RoundingOfTheFp32Product) {
  const Dims d{96, 80, 256};
  const Vec a = random_vector(d.m * d.k, 4), b = random_vector(d.k * d.n, 5);
  Vec c32(d.m * d.n), c16(d.m * d.n);
  cpu::ref::matmul(a.data(), b.data(), c32.data(), d.m, d.n, d.k, false, true, 1.0f, 0.0f);
  const Vec16 a16 = rounded(a), b16 = rounded(b);
  cpu::matmul_bf16(a16.data(), b16.data(), c16.data(), d.m, d.n, d.k, false, true, false);
  double worst = 0.0;
  for (int64_t i = 0; i < d.m; ++i) {
    for (int64_t j = 0; j < d.n; ++j) {
      double magnitude = 0.0;  // sum_p |a_ip b_pj|
      for (int64_t p = 0; p < d.k; ++p)
        magnitude += std::fabs(static_cast<double>(a[i * d.k + p]) * b[j * d.k + p]);
      const double err = std::fabs(static_cast<double>(c16[i * d.n + j]) - c32[i * d.n + j]);
      ASSERT_LE(err, (std::ldexp(1.0, -8) + d.k * 6e-8) * magnitude) << i << "," << j;
      worst = std::max(worst, err / magnitude);
    }
  }
  // The bound is not vacuous: bf16 operands do move the product.
  EXPECT_GT(worst, 1e-5);
}

TEST(Bf16Matmul, OpDispatchesOnTheOperandsDtype) {
  const Vec a = random_vector(4 * 3, 6), b = random_vector(3 * 5, 7);
  Buffer a16(Device::kCpu, DType::kBF16), b16(Device::kCpu, DType::kBF16);
  ops::convert(Tensor(const_cast<float*>(a.data()), {4, 3}), a16.view({4, 3}));
  ops::convert(Tensor(const_cast<float*>(b.data()), {3, 5}), b16.view({3, 5}));
  Vec c(4 * 5), expected(4 * 5);
  ops::matmul(a16.view({4, 3}), b16.view({3, 5}), Tensor(c.data(), {4, 5}), false, false);
  cpu::ref::matmul(widened(rounded(a)).data(), widened(rounded(b)).data(), expected.data(), 4,
                   5, 3, false, false, 1.0f, 0.0f);
  for (int i = 0; i < 20; ++i) EXPECT_NEAR(c[i], expected[i], 1e-6);
  // accumulate: beta 1
  ops::matmul(a16.view({4, 3}), b16.view({3, 5}), Tensor(c.data(), {4, 5}), false, false, 1.0f,
              1.0f);
  for (int i = 0; i < 20; ++i) EXPECT_NEAR(c[i], 2 * expected[i], 2e-6);
  // mixed operands, a bf16 output, an alpha or a beta the bf16 GEMM does not take
  Vec f(3 * 5);
  EXPECT_THROW(ops::matmul(a16.view({4, 3}), Tensor(f.data(), {3, 5}), Tensor(c.data(), {4, 5}),
                           false, false),
               Error);
  EXPECT_THROW(ops::matmul(a16.view({4, 3}), b16.view({3, 5}), a16.view({4, 5}), false, false),
               Error);
  EXPECT_THROW(ops::matmul(a16.view({4, 3}), b16.view({3, 5}), Tensor(c.data(), {4, 5}), false,
                           false, 2.0f),
               Error);
  EXPECT_THROW(ops::matmul(a16.view({4, 3}), b16.view({3, 5}), Tensor(c.data(), {4, 5}), false,
                           false, 1.0f, 0.5f),
               Error);
}

// The GEMM in use is named at start-up; without bf16 instructions (or with oneDNN's ISA
// lowered below avx512_core_bf16 through ONEDNN_MAX_CPU_ISA, as one registration of this
// test does) it is the fp32 fallback, whose results the tests above hold to the same
// tolerances.
TEST(Bf16Matmul, NamesTheKernelAndItsIsa) {
  const std::string name = ops::cpu_bf16_gemm_name();
  EXPECT_NE(name.find("oneDNN"), std::string::npos) << name;
  const char* max_isa = std::getenv("ONEDNN_MAX_CPU_ISA");
  const bool lowered = max_isa != nullptr && std::string(max_isa).find("BF16") == std::string::npos &&
                       std::string(max_isa).find("AMX") == std::string::npos &&
                       std::string(max_isa) != "ALL";
  if (lowered) {
    EXPECT_FALSE(ops::cpu_bf16_gemm_native()) << name;
  }
  const bool fallback = name.find("converted to fp32") != std::string::npos;
  EXPECT_EQ(fallback, !ops::cpu_bf16_gemm_native()) << name;
  EXPECT_NE(name.find("ISA "), std::string::npos) << name;
}

// ---------------------------------------------------------------- experts

struct ExpertData {
  int64_t experts = 3, width = 24, hidden = 40;
  std::vector<int64_t> offsets = {0, 37, 37, 90};  // an empty expert in the middle
  int64_t rows() const { return offsets.back(); }
  Vec x, w_gate, w_up, w_down, dy;

  explicit ExpertData(uint64_t seed) {
    const int64_t fc = hidden * width;
    x = random_vector(rows() * width, seed);
    w_gate = random_vector(experts * fc, seed + 1, 0.3f);
    w_up = random_vector(experts * fc, seed + 2, 0.3f);
    w_down = random_vector(experts * fc, seed + 3, 0.3f);
    dy = random_vector(rows() * width, seed + 4);
  }
};

// Outputs of one forward + backward: y, dx and the weight gradients, concatenated.
struct ExpertOutputs {
  Vec y, dx, dw_gate, dw_up, dw_down;
};

template <bool kFast>
ExpertOutputs run_bf16_experts(const ExpertData& d, bool gated) {
  const int64_t s = d.rows(), f = d.hidden, c = d.width, fc = f * c;
  const Vec16 x = rounded(d.x), wg = rounded(d.w_gate), wu = rounded(d.w_up),
              wd = rounded(d.w_down), dy = rounded(d.dy);
  Vec gate(s * f), up(s * f), dh(s * f);
  Vec16 h(s * f), dgate(s * f), dup(s * f);
  ExpertOutputs out{Vec(s * c), Vec(s * c), Vec(d.experts * fc, 0.5f), Vec(d.experts * fc, 0.5f),
                    Vec(d.experts * fc, 0.5f)};  // gradients accumulate onto 0.5
  auto fwd = kFast ? cpu::expert_ffn_forward_bf16 : cpu::ref::expert_ffn_forward_bf16;
  auto bwd = kFast ? cpu::expert_ffn_backward_bf16 : cpu::ref::expert_ffn_backward_bf16;
  fwd(x.data(), d.offsets.data(), d.experts, gated ? wg.data() : nullptr, wu.data(), wd.data(),
      gate.data(), up.data(), h.data(), out.y.data(), c, f);
  bwd(x.data(), d.offsets.data(), d.experts, gated ? wg.data() : nullptr, wu.data(), wd.data(),
      gate.data(), up.data(), h.data(), dy.data(), gated ? out.dw_gate.data() : nullptr,
      out.dw_up.data(), out.dw_down.data(), dh.data(), gated ? dgate.data() : nullptr, dup.data(),
      out.dx.data(), c, f);
  return out;
}

ExpertOutputs run_fp32_experts(const ExpertData& d, bool gated) {
  const int64_t s = d.rows(), f = d.hidden, c = d.width, fc = f * c;
  Vec gate(s * f), up(s * f), h(s * f), dh(s * f), dgate(s * f), dup(s * f);
  ExpertOutputs out{Vec(s * c), Vec(s * c), Vec(d.experts * fc, 0.5f), Vec(d.experts * fc, 0.5f),
                    Vec(d.experts * fc, 0.5f)};
  cpu::ref::expert_ffn_forward(d.x.data(), d.offsets.data(), d.experts,
                               gated ? d.w_gate.data() : nullptr, d.w_up.data(),
                               d.w_down.data(), gate.data(), up.data(), h.data(), out.y.data(),
                               c, f);
  cpu::ref::expert_ffn_backward(d.x.data(), d.offsets.data(), d.experts,
                                gated ? d.w_gate.data() : nullptr, d.w_up.data(),
                                d.w_down.data(), gate.data(), up.data(), h.data(), d.dy.data(),
                                gated ? out.dw_gate.data() : nullptr, out.dw_up.data(),
                                out.dw_down.data(), dh.data(), gated ? dgate.data() : nullptr,
                                dup.data(), out.dx.data(), c, f);
  return out;
}

class Bf16Experts : public ::testing::TestWithParam<bool> {};  // SwiGLU (true) or GELU

TEST_P(Bf16Experts, FastEqualsReference) {
  const bool gated = GetParam();
  const ExpertData d(10);
  const ExpertOutputs fast = run_bf16_experts<true>(d, gated);
  const ExpertOutputs ref = run_bf16_experts<false>(d, gated);
  auto expect_close = [](const Vec& a, const Vec& b, const char* what) {
    const double tol = 1e-4 * max_abs(b);
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_NEAR(a[i], b[i], tol) << what << " element " << i;
  };
  expect_close(fast.y, ref.y, "y");
  expect_close(fast.dx, ref.dx, "dx");
  expect_close(fast.dw_up, ref.dw_up, "dw_up");
  expect_close(fast.dw_down, ref.dw_down, "dw_down");
  if (gated) expect_close(fast.dw_gate, ref.dw_gate, "dw_gate");
}

TEST_P(Bf16Experts, WithinBf16ToleranceOfFp32) {
  const bool gated = GetParam();
  const ExpertData d(20);
  const ExpertOutputs b = run_bf16_experts<true>(d, gated);
  const ExpertOutputs f = run_fp32_experts(d, gated);
  for (const auto& [got, want, what] :
       {std::tuple{&b.y, &f.y, "y"}, std::tuple{&b.dx, &f.dx, "dx"},
        std::tuple{&b.dw_up, &f.dw_up, "dw_up"}, std::tuple{&b.dw_down, &f.dw_down, "dw_down"}}) {
    const double err = relative_error(*got, *want);
    EXPECT_LE(err, 1e-2) << what;
    EXPECT_GT(err, 1e-5) << what << ": bf16 made no difference";
  }
  if (gated) {
    EXPECT_LE(relative_error(b.dw_gate, f.dw_gate), 1e-2);
  }
}

INSTANTIATE_TEST_SUITE_P(Activations, Bf16Experts, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "swiglu" : "gelu"; });

TEST(Bf16Experts, OpRequiresBf16Operands) {
  const ExpertData d(30);
  const int64_t s = d.rows(), f = d.hidden, c = d.width;
  Buffer x16(Device::kCpu, DType::kBF16), wu16(Device::kCpu, DType::kBF16),
      wd16(Device::kCpu, DType::kBF16), h16(Device::kCpu, DType::kBF16);
  Vec up(s * f), y(s * c), wd32 = d.w_down;
  Tensor x = x16.view({s, c}), wu = wu16.view({d.experts, f, c}), wd = wd16.view({d.experts, c, f});
  ops::convert(Tensor(const_cast<float*>(d.x.data()), {s, c}), x);
  // an fp32 weight among bf16 operands is refused, naming the op
  const ops::ExpertWeights mixed{Tensor(), wu, Tensor(wd32.data(), {d.experts, c, f})};
  const ops::ExpertActivations acts{Tensor(), Tensor(up.data(), {s, f}), h16.view({s, f})};
  try {
    ops::expert_ffn_forward(x, d.offsets, mixed, acts, Tensor(y.data(), {s, c}));
    FAIL() << "fp32 weight accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("expert_ffn_forward"), std::string::npos) << e.what();
  }
  ops::expert_ffn_forward(x, d.offsets, {Tensor(), wu, wd}, acts, Tensor(y.data(), {s, c}));
}

// ---------------------------------------------------------------- attention

struct AttentionCase {
  int64_t B, T, H, D;
  bool causal;
};
void PrintTo(const AttentionCase& c, std::ostream* os) {
  *os << "B" << c.B << " T" << c.T << " H" << c.H << " D" << c.D << (c.causal ? " causal" : " full");
}

struct AttentionOutputs {
  Vec stats, out, dqkv;
};

// Forward and backward of the bf16 attention (fast or reference) on qkv rounded to bf16.
template <bool kFast>
AttentionOutputs run_bf16_attention(const AttentionCase& c, const Vec& qkv, const Vec& dout) {
  const Vec16 q16 = rounded(qkv);
  AttentionOutputs o{Vec(c.B * c.H * c.T * 2), Vec(dout.size()), Vec(qkv.size())};
  auto fwd = kFast ? cpu::attention_forward_bf16 : cpu::ref::attention_forward_bf16;
  auto bwd = kFast ? cpu::attention_backward_bf16 : cpu::ref::attention_backward_bf16;
  fwd(q16.data(), o.stats.data(), o.out.data(), c.B, c.T, c.H, c.D, c.causal);
  bwd(q16.data(), o.stats.data(), o.out.data(), dout.data(), o.dqkv.data(), c.B, c.T, c.H, c.D,
      c.causal);
  return o;
}

class Bf16Attention : public ::testing::TestWithParam<AttentionCase> {};

TEST_P(Bf16Attention, FastEqualsReference) {
  const AttentionCase c = GetParam();
  const Vec qkv = random_vector(c.B * c.T * 3 * c.H * c.D, 40);
  const Vec dout = random_vector(c.B * c.T * c.H * c.D, 41);
  const AttentionOutputs fast = run_bf16_attention<true>(c, qkv, dout);
  const AttentionOutputs ref = run_bf16_attention<false>(c, qkv, dout);
  // stats: each row's softmax maximum and 1 / sum, to float rounding of the sums
  for (size_t i = 0; i < ref.stats.size(); ++i)
    ASSERT_NEAR(fast.stats[i], ref.stats[i], 1e-5 * std::abs(ref.stats[i]) + 1e-7) << i;
  for (const auto& [got, want, what] :
       {std::tuple{&fast.out, &ref.out, "out"}, std::tuple{&fast.dqkv, &ref.dqkv, "dqkv"}}) {
    // The fast kernel's fp32 probabilities and score gradients differ from the reference's
    // double ones by float rounding, which now and then rounds an operand to the
    // neighbouring bf16 (one bf16 ulp of that term, ~4e-3 relative): a few elements in a
    // thousand may be off by such a term (1e-3 of the largest), all others agree to 1e-4.
    const double tol = 1e-4 * max_abs(*want), flip_tol = 1e-3 * max_abs(*want);
    size_t flips = 0;
    for (size_t i = 0; i < want->size(); ++i) {
      const double err = std::abs((*got)[i] - (*want)[i]);
      ASSERT_LE(err, flip_tol) << what << " element " << i;
      flips += err > tol;
    }
    EXPECT_LE(flips, want->size() / 500) << what << ": elements beyond 1e-4 of the largest";
  }
}

TEST_P(Bf16Attention, WithinBf16ToleranceOfFp32) {
  const AttentionCase c = GetParam();
  const Vec qkv = random_vector(c.B * c.T * 3 * c.H * c.D, 42);
  const Vec dout = random_vector(c.B * c.T * c.H * c.D, 43);
  const AttentionOutputs b = run_bf16_attention<true>(c, qkv, dout);
  const int64_t scores = c.B * c.H * c.T * c.T;
  Vec att(scores), out(b.out.size()), dqkv(b.dqkv.size()), scratch(scores);
  cpu::ref::attention_forward(qkv.data(), att.data(), out.data(), c.B, c.T, c.H, c.D, c.causal);
  cpu::ref::attention_backward(qkv.data(), att.data(), dout.data(), dqkv.data(), scratch.data(),
                               c.B, c.T, c.H, c.D, c.causal);
  EXPECT_LE(relative_error(b.out, out), 1e-2);
  EXPECT_LE(relative_error(b.dqkv, dqkv), 1e-2);
  EXPECT_GT(relative_error(b.dqkv, dqkv), 1e-5) << "bf16 made no difference";
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Bf16Attention,
    ::testing::Values(AttentionCase{2, 37, 3, 8, true}, AttentionCase{1, 70, 2, 32, true},
                      AttentionCase{1, 19, 2, 128, true}, AttentionCase{2, 33, 2, 6, false},
                      AttentionCase{1, 1, 1, 2, true}, AttentionCase{1, 131, 2, 16, false},
                      AttentionCase{1, 150, 1, 64, true}),
    [](const auto& info) {
      const AttentionCase& c = info.param;
      return "B" + std::to_string(c.B) + "T" + std::to_string(c.T) + "H" + std::to_string(c.H) +
             "D" + std::to_string(c.D) + (c.causal ? "causal" : "full");
    });

TEST(Bf16Attention, OpTakesBf16QkvAndFp32Rest) {
  const AttentionCase c{1, 8, 2, 4, true};
  const int64_t n = c.T, width = c.H * c.D;
  Buffer qkv16(Device::kCpu, DType::kBF16);
  Vec qkv = random_vector(n * 3 * width, 44), stats(c.H * c.T * 2), out(n * width);
  ops::convert(Tensor(qkv.data(), {n, 3 * width}), qkv16.view({n, 3 * width}));
  const Tensor q16 = qkv16.view({n, 3 * width});
  ops::attention_forward_mixed(q16, Tensor(stats.data(), {c.H * c.T * 2}),
                               Tensor(out.data(), {n, width}), 1, c.H, true);
  Vec expected(out.size()), expected_stats(stats.size());
  cpu::ref::attention_forward_bf16(q16.ptr<bf16>(), expected_stats.data(), expected.data(), 1,
                                   c.T, c.H, c.D, true);
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], expected[i], 1e-5);
  // stats must be fp32 (B, H, T, 2); the fp32 op refuses bf16 operands
  EXPECT_THROW(ops::attention_forward_mixed(q16, qkv16.view({c.H * c.T * 2}),
                                            Tensor(out.data(), {n, width}), 1, c.H, true),
               Error);
  EXPECT_THROW(ops::attention_forward_mixed(q16, Tensor(stats.data(), {c.H * c.T}),
                                            Tensor(out.data(), {n, width}), 1, c.H, true),
               Error);
  Vec att(c.H * c.T * c.T);
  EXPECT_THROW(ops::attention_forward(q16, Tensor(att.data(), {c.H * c.T * c.T}),
                                      Tensor(out.data(), {n, width}), 1, c.H, true),
               Error);
}

}  // namespace
}  // namespace moe
