// Fast kernels of incremental (KV-cached) decoding: rotary embedding at given positions
// and attention of query rows over their sequences' cached keys and values. For the rows
// they are given they compute what rope_apply and attention_forward compute for a whole
// sequence (tests/unit/test_generate.cpp checks SelfAttention::forward_cached against
// SelfAttention::forward).

#include <algorithm>
#include <cmath>
#include <vector>

#include "framework/core/error.h"
#include "framework/kernels/cpu/cpu_ops.h"
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

namespace {

// One query row q (H, D) over `len` cached positions k, v (len, H*D); scratch holds len
// floats.
void decode_row(const float* q, const float* k, const float* v, float* out, float* scratch,
                int64_t len, int64_t H, int64_t D) {
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

}  // namespace

void attention_decode(const float* q, int64_t q_stride, const float* const* k,
                      const float* const* v, const int64_t* len, float* out, int64_t rows,
                      int64_t H, int64_t D) {
  int64_t longest = 0;
  for (int64_t i = 0; i < rows; ++i) longest = std::max(longest, len[i]);
#pragma omp parallel
  {
    std::vector<float> scratch(static_cast<size_t>(longest));
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < rows; ++i)
      decode_row(q + i * q_stride, k[i], v[i], out + i * H * D, scratch.data(), len[i], H, D);
  }
}

}  // namespace moe::cpu
