#pragma once
// Helpers shared by the fast CPU kernels (moe::cpu), private to framework/kernels/cpu.
//
// Why hand-written exp/erf: the build has no -ffast-math, so glibc's expf/erff are
// scalar calls and a loop that calls them does not vectorise. These versions are
// branch-free float arithmetic that GCC vectorises (AVX-512: 16 lanes) inside
// `#pragma omp simd` loops. Accuracy: exp_approx within ~2 ulp of expf on its range;
// erf_approx within 1.5e-7 absolute (Abramowitz & Stegun 7.1.26).

#include <bit>
#include <cmath>
#include <cstdint>

namespace moe::cpu::detail {

// Below this many floats of work a kernel runs on one thread: forking an OpenMP
// team costs a few microseconds, about what one core needs for ~32K simple flops.
inline constexpr int64_t kMinParallelWork = 1 << 15;

// e^x for float x. Range reduction x = n ln2 + r with |r| <= ln2/2, Cephes
// polynomial for e^r, 2^n assembled in the exponent bits. Returns exactly 0 below
// -87.3 (where expf goes subnormal): softmax of masked or far-off logits is 0.
inline float exp_approx(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln2 split so n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kMin = -87.3f, kMax = 88.7f;
  const float xc = x < kMin ? kMin : (x > kMax ? kMax : x);
  // Round to nearest by adding 1.5 * 2^23: floorf would not vectorise (its SIMD
  // form is only used with -fno-trapping-math).
  constexpr float kRound = 12582912.0f;
  const float n = (xc * kLog2e + kRound) - kRound;
  const float r = xc - n * kLn2Hi - n * kLn2Lo;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n, n in [-126, 128)
  const float result = er * std::bit_cast<float>(bits);
  return x < kMin ? 0.0f : result;
}

// The bits of bf16(x) (framework/core/bf16.h: nearest, ties to even; NaN stays NaN) in
// branch-free integer arithmetic that vectorises.
inline uint16_t bf16_bits(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  return static_cast<uint16_t>(nan ? (bits >> 16) | 0x0040u : rounded >> 16);
}

// 1 / (1 + e^-x); saturates cleanly to 0 and 1.
inline float sigmoid_approx(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// erf(x) = 1 - (a1 t + ... + a5 t^5) e^{-x^2}, t = 1 / (1 + p|x|), odd extension.
inline float erf_approx(float x) {
  const float ax = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.3275911f * ax);
  float poly = 1.061405429f;
  poly = poly * t - 1.453152027f;
  poly = poly * t + 1.421413741f;
  poly = poly * t - 0.284496736f;
  poly = poly * t + 0.254829592f;
  const float y = 1.0f - poly * t * exp_approx(-ax * ax);
  return std::copysign(y, x);
}

}  // namespace moe::cpu::detail
