// Fast fp32 <-> bf16 conversion: the rounding of framework/core/bf16.h as branch-free
// integer arithmetic that GCC vectorises (detail::bf16_bits; 16 lanes with AVX-512), one
// OpenMP-parallel pass. Memory-bound: 6 bytes per element.

#include <bit>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/cpu/kernel_util.h"

namespace moe::cpu {

using detail::kMinParallelWork;

void convert_to_bf16(const float* x, bf16* y, int64_t n) {
  // bf16 is a struct of one uint16_t: write its bits through a uint16_t view.
  static_assert(sizeof(bf16) == sizeof(uint16_t));
  auto* out = reinterpret_cast<uint16_t*>(y);
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) out[i] = detail::bf16_bits(x[i]);
}

void convert_from_bf16(const bf16* x, float* y, int64_t n) {
  const auto* in = reinterpret_cast<const uint16_t*>(x);
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) y[i] = std::bit_cast<float>(static_cast<uint32_t>(in[i]) << 16);
}

}  // namespace moe::cpu
