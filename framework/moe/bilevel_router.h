#pragma once
// SMILE bi-level router (moe.routing = bilevel; docs/parallelism.md, "Routing options").
//
// The E experts form N node groups of G = E / N consecutive experts (moe.node_groups =
// N; expert e = n*G + j is expert j of group n; with the contiguous placement and an
// ep group spanning N nodes, group n is node n). Two small routers replace the E-way one:
//
//   node level   a = u W1^T  (T, N),  p1 = softmax(a)      W1 (N, C) <prefix>.router.node_weight
//   rank level   b = u W2^T  (T, G),  p2 = softmax(b)      W2 (G, C) <prefix>.router.local_weight
//   choose       n* = argmax p1 (ties to the lower group): the one node the token travels
//                to; then the top-K local indices j_k of p2 (ties to the lower index)
//   expert       e_k = n* G + j_k
//   weight       w_k = p1[n*] q_k,  q_k = p2[j_k]  (or p2[j_k] / sum_k p2[j_k] with
//                moe.renormalize)
//
// So every token crosses the inter-node links at most once and its K copies fan out
// inside the node: the two-stage dispatch of SMILE. Router parameters fall from E C to
// (N + G) C. W2 is shared by the groups (SMILE's (N + G) C count); SMILE publishes no
// code, and the gate product p1 p2 is our reading of the paper (documented in docs/).
//
// Balance losses, one per level (moe_layer.cpp, with the global-batch counts):
//   L_bal = alpha N sum_n f1_n P1_n + alpha G sum_j f2_j P2_j
//   f1_n = assignments to group n / (T K) (= tokens sent to n / T),  P1_n = mean_t p1_{t,n}
//   f2_j = assignments to local index j / (T K),                    P2_j = mean_t p2_{t,j}
// and the z-loss on both sets of logits.
//
// Backward: dp1[n*] += sum_k dw_k q_k; dq_k = dw_k p1[n*]; q -> p2 as in Router
// (renormalised or not); then softmax backward of each level, plus the extra gradients
// on p1, p2 (balance) and on the logits (z-loss); du = da W1 + db W2.

#include <span>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/router.h"
#include "framework/tensor/param_store.h"

namespace moe {

class BilevelRouter final : public Router {
 public:
  // moe.num_experts, node_groups (N), top_k, renormalize, aux_loss and z_loss of
  // `config`.
  BilevelRouter(ParamStore& store, const std::string& prefix, int64_t width,
                const MoeConfig& config, float init_std);

  // u (T, C); no selection bias (moe.bias_balance is refused with bi-level routing).
  // fixed_experts [T*K], when not empty, replaces the choice (all K of a token in one
  // group); the weights are still computed from p1, p2.
  RouterChoices forward(Tensor u, std::span<const float> bias,
                        std::span<const int32_t> fixed_experts) override;
  void add_sums(RouterSums& sums) override;  // prob_sums: [N] of p1, then [G] of p2
  AuxLosses aux_losses(const RouterSums& global, const GlobalRouting& g) const override;
  Tensor backward(std::span<const float> dweights, const GlobalRouting& g,
                  float scale) override;

  int64_t num_groups() const { return groups_; }       // N
  int64_t group_size() const { return group_size_; }   // G = E / N
  Param& node_weight() { return node_weight_; }
  Param& local_weight() { return local_weight_; }

 private:
  void compute_weights(int64_t t);
  // The global batch's assignments per group / per local index (the two levels' f).
  std::vector<int64_t> group_counts(std::span<const int64_t> counts) const;
  std::vector<int64_t> local_index_counts(std::span<const int64_t> counts) const;

  Param& node_weight_;   // (N, C)
  Param& local_weight_;  // (G, C)
  int64_t width_, num_experts_, groups_, group_size_, top_k_;
  bool renormalize_;
  float alpha_, z_coef_;  // moe.aux_loss, moe.z_loss
  Tensor u_;                                 // (T, C) saved input
  Buffer node_logits_, node_probs_;          // (T, N)
  Buffer local_logits_, local_probs_;        // (T, G)
  Buffer top_values_;                        // (T, K) scratch
  std::vector<int32_t> node_choice_;         // [T] n*
  std::vector<int32_t> local_choice_;        // [T*K] j_k
  std::vector<int32_t> experts_;             // [T*K]
  std::vector<float> weights_, q_;           // [T*K] w_k, q_k
  Buffer dnode_, dlocal_, du_;               // (T, N), (T, G), (T, C)
  Buffer dnode_logits_, dlocal_logits_;      // (T, N), (T, G)
  Buffer dnode_z_, dlocal_z_;                // (T, N), (T, G) z-loss gradients
};

}  // namespace moe
