// Fast optimizer-side vector ops: AdamW update, axpy, sum of squares.

#include <cmath>

#include "framework/core/error.h"
#include "framework/kernels/cpu/kernel_util.h"
#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {

using detail::kMinParallelWork;

void adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr,
           float beta1, float beta2, float eps, float weight_decay, int64_t step) {
  MOE_CHECK(step >= 1, "adamw step counts from 1, got ", step);
  // Bias corrections in double: 1 - beta2^step is ~1e-3 at step 1 and loses digits
  // in float powf for beta2 close to 1.
  const float inv_bc1 = static_cast<float>(
      1.0 / (1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step))));
  const float inv_bc2 = static_cast<float>(
      1.0 / (1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step))));
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) {
    const float mi = beta1 * m[i] + (1.0f - beta1) * g[i];
    const float vi = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
    m[i] = mi;
    v[i] = vi;
    const float update = (mi * inv_bc1) / (std::sqrt(vi * inv_bc2) + eps);
    p[i] -= lr * (update + weight_decay * p[i]);
  }
}

void axpy(float alpha, const float* x, float* y, int64_t n) {
#pragma omp parallel for simd if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

double sum_squares(const float* x, int64_t n) {
  double s = 0.0;
#pragma omp parallel for simd reduction(+ : s) if (n > kMinParallelWork)
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
  return s;
}

}  // namespace moe::cpu
