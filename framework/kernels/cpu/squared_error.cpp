// The squared error of a prediction (DiT's diffusion loss), reference and CPU kernel. The
// sum runs serially in double so that it is one fixed order: the same bits on any number
// of threads. The kernel is memory-bound and small beside the model (one pass over the
// images), so the fast version is the reference loop.

#include "framework/kernels/cpu/cpu_ops.h"

namespace moe::cpu {
namespace {

double squared_error_loop(const float* pred, const float* target, float* dpred, float scale,
                          int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float diff = pred[i] - target[i];
    sum += static_cast<double>(diff) * diff;
    dpred[i] = scale * diff;  // d (scale/2) sum diff^2 / d pred
  }
  return sum;
}

}  // namespace

double squared_error(const float* pred, const float* target, float* dpred, float scale,
                     int64_t n) {
  return squared_error_loop(pred, target, dpred, scale, n);
}

namespace ref {

double squared_error(const float* pred, const float* target, float* dpred, float scale,
                     int64_t n) {
  return squared_error_loop(pred, target, dpred, scale, n);
}

}  // namespace ref
}  // namespace moe::cpu
