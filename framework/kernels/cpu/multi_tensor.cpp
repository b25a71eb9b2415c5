// The multi-tensor optimizer kernels on the CPU: the per-tensor kernels in tensor order,
// so the results are those of one call per tensor, bit for bit (the GPU twins do the
// same work in one launch). The fast and the reference forms differ only in the
// per-tensor kernels they call.

#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {
namespace {

template <class SumSquares>
void sum_squares_each(SumSquares sum_squares, const float* const* x, const int64_t* n,
                      int64_t count, double* out) {
  for (int64_t t = 0; t < count; ++t) out[t] = sum_squares(x[t], n[t]);
}

template <class Scale, class AdamW>
void adamw_each(Scale scale, AdamW adamw, float* const* p, float* const* g, float* const* m,
                float* const* v, const int64_t* n, const float* weight_decay, int64_t count,
                float lr, float beta1, float beta2, float eps, int64_t step, float grad_scale) {
  for (int64_t t = 0; t < count; ++t) {
    if (grad_scale != 1.0f) scale(g[t], grad_scale, n[t]);
    adamw(p[t], g[t], m[t], v[t], n[t], lr, beta1, beta2, eps, weight_decay[t], step);
  }
}

}  // namespace

void sum_squares_multi(const float* const* x, const int64_t* n, int64_t count, double* out) {
  sum_squares_each(sum_squares, x, n, count, out);
}

void adamw_multi(float* const* p, float* const* g, float* const* m, float* const* v,
                 const int64_t* n, const float* weight_decay, int64_t count, float lr,
                 float beta1, float beta2, float eps, int64_t step, float grad_scale) {
  adamw_each(scale, adamw, p, g, m, v, n, weight_decay, count, lr, beta1, beta2, eps, step,
             grad_scale);
}

namespace ref {

void sum_squares_multi(const float* const* x, const int64_t* n, int64_t count, double* out) {
  sum_squares_each(sum_squares, x, n, count, out);
}

void adamw_multi(float* const* p, float* const* g, float* const* m, float* const* v,
                 const int64_t* n, const float* weight_decay, int64_t count, float lr,
                 float beta1, float beta2, float eps, int64_t step, float grad_scale) {
  adamw_each(scale, adamw, p, g, m, v, n, weight_decay, count, lr, beta1, beta2, eps, step,
             grad_scale);
}

}  // namespace ref
}  // namespace moe::cpu
