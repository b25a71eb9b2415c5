#pragma once
// Router auxiliary losses of one MoE layer, values and gradients.
//
// Switch/GShard load-balancing loss:
//   L_aux = alpha * E * sum_e f_e * P_e
//   f_e   = count_e / (N*K)      assignments chosen for e before capacity dropping;
//                                 piecewise constant in the router, so no gradient
//   P_e   = mean_t p_{t,e}       mean router probability
//   dL_aux/dp_{t,e} = alpha * E * f_e / N
// At perfect balance (f_e = 1/E) L_aux = alpha * sum_e P_e = alpha, whatever p is.
//
// Router z-loss (ST-MoE), keeps the logits small:
//   L_z = c_z * mean_t (lse_t)^2,  lse_t = logsumexp_e logits_{t,e}
//   dL_z/dlogits_{t,e} = c_z * 2 * lse_t * softmax(logits)_{t,e} / N
//
// Values are returned in double; gradients accumulate (+=) `scale` times the
// derivative, scale being the weight of the loss in the total (1 in a plain step).
//
// Data parallelism: the balance loss is that of the global batch of N_g tokens, so f_e
// comes from the global counts and P_e from the global sum of p (switch_aux_loss_global).
// Each rank's gradients are averaged over the D = N_g / N data-parallel ranks, so a rank
// contributes D times the true derivative for its own tokens:
//   D * alpha * E * f_e / N_g = alpha * E * f_e / N
// which is switch_aux_loss_backward with the global counts, counted_tokens = N_g and the
// local num_tokens = N. L_z is a mean over tokens: local values average to the global.

#include <cstdint>

namespace moe {

// probs (N, E) softmax of the router logits; counts [E] assignments before dropping.
double switch_aux_loss(const float* probs, const int64_t* counts, int64_t num_tokens,
                       int64_t num_experts, int64_t top_k, float alpha);
// L_aux of a global batch of counted_tokens tokens from prob_sums [E] = sum_t p_{t,e}
// and counts [E] (assignments before dropping), both summed over the batch.
double switch_aux_loss_global(const double* prob_sums, const int64_t* counts,
                              int64_t counted_tokens, int64_t num_experts, int64_t top_k,
                              float alpha);
// dprobs (N, E) += scale * alpha * E * f_e / N with f_e = counts_e / (counted_tokens * K);
// counted_tokens < 0 means N (the counts are this batch's own).
void switch_aux_loss_backward(const int64_t* counts, int64_t num_tokens,
                              int64_t num_experts, int64_t top_k, float alpha,
                              float scale, float* dprobs, int64_t counted_tokens = -1);

// logits (N, E) router logits.
double router_z_loss(const float* logits, int64_t num_tokens, int64_t num_experts,
                     float coef);
// dlogits (N, E) += scale * dL_z/dlogits; probs (N, E) = softmax(logits)
void router_z_loss_backward(const float* logits, const float* probs, int64_t num_tokens,
                            int64_t num_experts, float coef, float scale,
                            float* dlogits);

}  // namespace moe
