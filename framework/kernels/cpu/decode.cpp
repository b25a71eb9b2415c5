#include "framework/kernels/cpu/decode.h"

#include <algorithm>
#include <cmath>

#include "framework/core/error.h"
#include "framework/kernels/cpu/kernel_util.h"

namespace moe::cpu {

void rope_apply_at(float* x, const int32_t* pos, int64_t rows, int64_t H, int64_t D,
                   int64_t stride, float theta) {
  constexpr int64_t kMaxHalf = 256;
  MOE_CHECK(D % 2 == 0 && D / 2 <= kMaxHalf, "rope needs an even head dim <= ", 2 * kMaxHalf,
            ", got D=", D);
  const int64_t half = D / 2;
  double inv_freq[kMaxHalf];  // theta^(-2i/D), as rope_apply computes it
  for (int64_t i = 0; i < half; ++i)
    inv_freq[i] = std::pow(static_cast<double>(theta), -2.0 * i / D);
#pragma omp parallel for if (rows * H * D > detail::kMinParallelWork)
  for (int64_t r = 0; r < rows; ++r) {
    float cs[kMaxHalf], sn[kMaxHalf];
    for (int64_t i = 0; i < half; ++i) {
      const double angle = static_cast<double>(pos[r]) * inv_freq[i];
      cs[i] = static_cast<float>(std::cos(angle));
      sn[i] = static_cast<float>(std::sin(angle));
    }
    for (int64_t h = 0; h < H; ++h) {
      float* x1 = x + r * stride + h * D;  // first half of the head
      float* x2 = x1 + half;               // second half
      for (int64_t i = 0; i < half; ++i) {
        const float a = x1[i], c = x2[i];
        x1[i] = a * cs[i] - c * sn[i];
        x2[i] = c * cs[i] + a * sn[i];
      }
    }
  }
}

void attention_decode(const float* q, const float* k, const float* v, float* out,
                      float* scratch, int64_t len, int64_t H, int64_t D) {
  const int64_t width = H * D;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (int64_t h = 0; h < H; ++h) {
    const float* qh = q + h * D;
    float m = -INFINITY;
    for (int64_t t = 0; t < len; ++t) {
      const float* kt = k + t * width + h * D;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (int64_t d = 0; d < D; ++d) s += qh[d] * kt[d];
      scratch[t] = s * scale;
      m = std::max(m, scratch[t]);
    }
    float sum = 0.0f;
    for (int64_t t = 0; t < len; ++t) {
      scratch[t] = std::exp(scratch[t] - m);
      sum += scratch[t];
    }
    float* oh = out + h * D;
    for (int64_t d = 0; d < D; ++d) oh[d] = 0.0f;
    for (int64_t t = 0; t < len; ++t) {
      const float p = scratch[t] / sum;
      const float* vt = v + t * width + h * D;
#pragma omp simd
      for (int64_t d = 0; d < D; ++d) oh[d] += p * vt[d];
    }
  }
}

}  // namespace moe::cpu
