#include "framework/optim/clip.h"

#include <cmath>

#include "framework/kernels/ops.h"

namespace moe {

double grad_sum_squares(const ParamStore& store,
                        const std::function<bool(const Param&)>& include) {
  double sum = 0.0;
  for (const Param& p : store.params())
    if (!include || include(p)) sum += ops::sum_squares(p.dgrad());
  return sum;
}

std::vector<double> grad_squares_each(const ParamStore& store) {
  std::vector<Tensor> grads;
  for (const Param& p : store.params()) grads.push_back(p.dgrad());
  std::vector<double> sums(grads.size());
  ops::sum_squares_multi(grads, sums);
  return sums;
}

float clip_coefficient(double norm, float max_norm) {
  if (max_norm <= 0.0f || !std::isfinite(norm) || norm <= max_norm) return 1.0f;
  return static_cast<float>(max_norm / norm);
}

void scale_grads(ParamStore& store, float scale) {
  if (scale == 1.0f) return;
  for (Param& p : store.params()) ops::scale(p.dgrad(), scale);
}

double clip_grad_norm(ParamStore& store, float max_norm) {
  const double norm = std::sqrt(grad_sum_squares(store));
  scale_grads(store, clip_coefficient(norm, max_norm));
  return norm;
}

}  // namespace moe
