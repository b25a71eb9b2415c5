#pragma once
// Scalar bf16 <-> fp32 conversions: the one definition of the rounding that every bf16
// kernel, reference twin and test uses (the vectorised kernels in
// framework/kernels/cpu/bf16_convert.cpp compute the same bits).
//
// bf16 keeps the sign, the 8 exponent bits and the upper 7 mantissa bits of an fp32.
// fp32 -> bf16 rounds to nearest, ties to even (as vcvtneps2bf16 and PyTorch do), so the
// relative rounding error is at most 2^-9 ~ 0.2%; a NaN stays a (quiet) NaN, infinities
// and overflow to infinity follow from the same rounding. bf16 -> fp32 is exact.

#include <bit>
#include <cstdint>

#include "framework/core/dtype.h"

namespace moe {

inline bf16 to_bf16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u)  // NaN: keep it a NaN after truncation
    return bf16{static_cast<uint16_t>((bits >> 16) | 0x0040u)};
  // Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even.
  const uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  return bf16{static_cast<uint16_t>(rounded >> 16)};
}

inline float to_float(bf16 x) { return std::bit_cast<float>(static_cast<uint32_t>(x.bits) << 16); }

// x rounded to the nearest bf16 value, as an fp32.
inline float round_to_bf16(float x) { return to_float(to_bf16(x)); }

}  // namespace moe
