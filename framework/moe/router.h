#pragma once
// Top-K softmax router of one MoE layer (docs/architecture.md, "Routing").
//
//   logits = u W^T              (N, E), fp32; W (E, C) is <prefix>.router.weight
//   p      = softmax(logits)    (N, E) over all E experts
//   choose the top-K experts of p + b (b: the aux-loss-free balancing bias, absent
//   unless moe.bias_balance; ties go to the lower expert index), choice k = 0 first
//   node-limited (moe.max_nodes_per_token = M, DeepSeek-V3): score every node by the
//   sum of the top max(1, K/M) scores of its experts, keep the M best nodes (ties to
//   the lower node), choose the top-K among their experts only
//   weight of a choice: w_k = p_{e_k}, or w_k = p_{e_k} / sum_j p_{e_j} (renormalize)
//
// The choice is piecewise constant; gradients reach W and u through the weights
// (and their renormalisation) and through whatever the caller adds on p and on the
// logits (the aux loss and the z-loss, framework/moe/aux_loss.h):
//   raw:     dp_{e_k} += dw_k
//   renorm:  dp_{e_j} += (dw_j - sum_k dw_k w_k) / sum_k p_{e_k}
//   dlogits = softmax_backward(p, dp) + dlogits_extra;  dW += dlogits^T u;  du = dlogits W
//
// Layer conventions as in framework/nn/linear.h: forward keeps a view of u.

#include <span>
#include <string>
#include <vector>

#include "framework/tensor/param_store.h"

namespace moe {

// Node-limited routing: each token's experts lie on at most max_nodes nodes.
struct NodeLimit {
  std::vector<int> expert_node;  // [E] node of each expert (ExpertLocality)
  int num_nodes = 1;
  int max_nodes = 0;  // 0: unlimited
  // Added to the score of the tokens' own node (token_node) before the M best nodes are
  // kept: among nodes scoring within `own_node_bonus` of each other the token stays home.
  int token_node = 0;
  float own_node_bonus = 0.0f;

  // Whether the limit can bind: a token reaches at most min(K, nodes) nodes anyway.
  bool binds(int64_t top_k) const {
    return max_nodes > 0 && max_nodes < num_nodes && max_nodes < top_k;
  }
};

// The result of Router::forward: views of router-owned storage, valid until the
// next forward.
struct RouterOutput {
  Tensor logits;                     // (N, E)
  Tensor probs;                      // (N, E)
  std::span<const int32_t> experts;  // [N*K] chosen experts, best first per token
  std::span<const float> weights;    // [N*K] combine weights
};

class Router {
 public:
  // limit: node-limited routing (default: none). Its M nodes with the fewest experts
  // must hold at least K experts (a user error otherwise).
  Router(ParamStore& store, const std::string& prefix, int64_t width, int64_t num_experts,
         int64_t top_k, bool renormalize, float init_std, NodeLimit limit = {});

  // u (N, C). bias [E] shifts the selection only (empty: no bias). fixed_experts
  // [N*K], when not empty, replaces the top-K choice (routing held fixed for
  // gradient checks); the weights are still computed from p.
  RouterOutput forward(Tensor u, std::span<const float> bias = {},
                       std::span<const int32_t> fixed_experts = {});
  // dweights [N*K] gradient of the combine weights; dprobs (N, E) and dlogits (N, E)
  // extra gradients on p and on the logits (nullptr: none). Returns du (N, C)
  // (overwritten), accumulates dW.
  Tensor backward(const float* dweights, const float* dprobs, const float* dlogits);

  // Views of the last forward's logits and p, (N, E) each.
  Tensor logits() const { return Tensor(logits_.data(), {u_.rows(), num_experts_}); }
  Tensor probs() const { return Tensor(probs_.data(), {u_.rows(), num_experts_}); }
  Param& weight() { return weight_; }
  int64_t num_experts() const { return num_experts_; }
  int64_t top_k() const { return top_k_; }

 private:
  void select(std::span<const float> bias, int64_t n);
  void compute_weights(int64_t n);
  void weights_backward(const float* dweights, float* dp, int64_t n) const;

  Param& weight_;  // (E, C)
  int64_t width_, num_experts_, top_k_;
  bool renormalize_;
  NodeLimit limit_;
  Tensor u_;                     // (N, C) saved input
  Buffer logits_, probs_;        // (N, E)
  Buffer scores_, top_values_;   // (N, E) p + b; (N, K) scratch of the top-K
  std::vector<int32_t> experts_; // [N*K]
  std::vector<float> weights_;   // [N*K]
  Buffer dprobs_, dlogits_, du_; // (N, E), (N, E), (N, C)
};

}  // namespace moe
