#include "framework/moe/aux_loss.h"

#include <algorithm>
#include <cmath>

namespace moe {

namespace {

// logsumexp of one row of n logits, shifted by the row max for stability.
double logsumexp(const float* x, int64_t n) {
  const float m = *std::max_element(x, x + n);
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - m);
  return m + std::log(s);
}

}  // namespace

double switch_aux_loss(const float* probs, const int64_t* counts, int64_t num_tokens,
                       int64_t num_experts, int64_t top_k, float alpha) {
  if (num_tokens == 0) return 0.0;
  const double n_assign = static_cast<double>(num_tokens * top_k);
  double loss = 0.0;
  for (int64_t e = 0; e < num_experts; ++e) {
    double mean_p = 0.0;  // P_e
    for (int64_t t = 0; t < num_tokens; ++t) mean_p += probs[t * num_experts + e];
    mean_p /= static_cast<double>(num_tokens);
    loss += (static_cast<double>(counts[e]) / n_assign) * mean_p;  // f_e * P_e
  }
  return alpha * static_cast<double>(num_experts) * loss;
}

double switch_aux_loss_global(const double* prob_sums, const int64_t* counts,
                              int64_t counted_tokens, int64_t num_experts, int64_t top_k,
                              float alpha) {
  if (counted_tokens == 0) return 0.0;
  const double n = static_cast<double>(counted_tokens);
  double loss = 0.0;
  for (int64_t e = 0; e < num_experts; ++e)
    loss += (static_cast<double>(counts[e]) / (n * top_k)) * (prob_sums[e] / n);  // f_e P_e
  return alpha * static_cast<double>(num_experts) * loss;
}

void switch_aux_loss_backward(const int64_t* counts, int64_t num_tokens,
                              int64_t num_experts, int64_t top_k, float alpha,
                              float scale, float* dprobs, int64_t counted_tokens) {
  if (num_tokens == 0) return;
  if (counted_tokens < 0) counted_tokens = num_tokens;
  const double n_assign = static_cast<double>(counted_tokens * top_k);
  for (int64_t e = 0; e < num_experts; ++e) {
    // scale * alpha * E * f_e / N, the same for every token
    const float g = static_cast<float>(scale * alpha * static_cast<double>(num_experts) *
                                       (static_cast<double>(counts[e]) / n_assign) /
                                       static_cast<double>(num_tokens));
    for (int64_t t = 0; t < num_tokens; ++t) dprobs[t * num_experts + e] += g;
  }
}

double router_z_loss(const float* logits, int64_t num_tokens, int64_t num_experts,
                     float coef) {
  if (num_tokens == 0) return 0.0;
  double sum = 0.0;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const double lse = logsumexp(logits + t * num_experts, num_experts);
    sum += lse * lse;
  }
  return coef * sum / static_cast<double>(num_tokens);
}

void router_z_loss_backward(const float* logits, const float* probs, int64_t num_tokens,
                            int64_t num_experts, float coef, float scale,
                            float* dlogits) {
  for (int64_t t = 0; t < num_tokens; ++t) {
    const double lse = logsumexp(logits + t * num_experts, num_experts);
    // scale * c_z * 2 * lse_t / N, times p_{t,e}
    const float g = static_cast<float>(scale * coef * 2.0 * lse /
                                       static_cast<double>(num_tokens));
    for (int64_t e = 0; e < num_experts; ++e)
      dlogits[t * num_experts + e] += g * probs[t * num_experts + e];
  }
}

}  // namespace moe
