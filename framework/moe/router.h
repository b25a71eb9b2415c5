#pragma once
// The routers of an MoE layer behind one interface (Router), and the top-K softmax
// router (docs/architecture.md, "Routing"). A router owns its forward (the expert choice
// and combine weights), its losses (balance, locality, z) and their backward; the MoE
// layer runs route -> plan -> dispatch -> experts -> combine without knowing which kind
// it holds (TopKRouter here, BilevelRouter in bilevel_router.h).
//
// TopKRouter:
//   logits = u W^T              (N, E), fp32; W (E, C) is <prefix>.router.weight
//   p      = softmax(logits)    (N, E) over all E experts
//   choose the top-K experts of p + b (b: the aux-loss-free balancing bias, absent
//   unless moe.bias_balance; ties go to the lower expert index), choice k = 0 first
//   node-limited (moe.max_nodes_per_token = M, DeepSeek-V3): score every node by the
//   sum of the top max(1, K/M) scores of its experts, keep the M best nodes (ties to
//   the lower node), choose the top-K among their experts only
//   weight of a choice: w_k = p_{e_k}, or w_k = p_{e_k} / sum_j p_{e_j} (renormalize)
//   losses (framework/moe/aux_loss.h, over the global batch):
//     L_aux = alpha E sum_e f_e P_e,  L_z = c_z mean_t lse_t^2, and with moe.locality_loss
//     = mu > 0 the LocMoE locality loss L_loc = mu mean_r KL(P^r || D_l^r), P^r_e the mean
//     of p_{t,e} over rank r's tokens, D_l^r_e = (1 - eps (E - L)) / L on the L experts of
//     rank r's node and eps elsewhere (eps = 1e-4): dL_loc/dp_{t,e} = mu (log(P_e / D_l_e)
//     + 1) / N on each rank (the data-parallel mean divides by R again, as for L_aux)
//
// The choice is piecewise constant; gradients reach W and u through the weights
// (and their renormalisation) and through the losses on p and on the logits:
//   raw:     dp_{e_k} += dw_k
//   renorm:  dp_{e_j} += (dw_j - sum_k dw_k w_k) / sum_k p_{e_k}
//   dlogits = softmax_backward(p, dp) + dlogits_extra;  dW += dlogits^T u;  du = dlogits W
//
// Layer conventions as in framework/nn/linear.h: forward keeps a view of u.

#include <span>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/placement.h"
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

// The global batch's routing that a router's losses need (MoELayer gathers it).
struct GlobalRouting {
  std::span<const int64_t> counts;  // [E] assignments per expert, before dropping
  int64_t tokens = 0;               // N_g, tokens of the global batch
  int ranks = 1;                    // ranks holding its equal slices
};

// This rank's sums over its tokens that the layer's losses and statistics need. They
// are summed over the token group in one all-reduce (pack / unpack).
struct RouterSums {
  std::vector<double> prob_sums;  // sum_t p of each of the router's distributions
  double z_loss = 0.0;            // this rank's L_z (a mean over its tokens)
  double kl = 0.0;                // this rank's KL(P || D_l) (the locality loss)
  double node_local = 0.0;        // assignments whose expert is on the token's node
  double nodes_reached = 0.0;     // distinct nodes of each token's assignments, summed
  double remote_nodes = 0.0;      // of those, the ones other than the token's own

  std::vector<double> pack() const;
  void unpack(std::span<const double> packed);
};

struct AuxLosses {
  double balance = 0.0;   // L_aux (both levels' for the bi-level router)
  double locality = 0.0;  // L_loc
};

// The choices of a router's forward: views of router-owned storage, valid until the
// next forward.
struct RouterChoices {
  std::span<const int32_t> experts;  // [N*K] chosen experts, best first per token
  std::span<const float> weights;    // [N*K] combine weights
};

class Router {
 public:
  virtual ~Router() = default;
  // u (N, C). bias [E] shifts the selection only (empty: none). fixed_experts [N*K], when
  // not empty, replaces the choice (routing held fixed for gradient checks); the weights
  // are still computed from the probabilities.
  virtual RouterChoices forward(Tensor u, std::span<const float> bias,
                                std::span<const int32_t> fixed_experts) = 0;
  // Adds this rank's probability sums, L_z and locality KL of the last forward.
  virtual void add_sums(RouterSums& sums) = 0;
  // The layer's balance and locality losses from the sums over the token group.
  virtual AuxLosses aux_losses(const RouterSums& global, const GlobalRouting& g) const = 0;
  // dweights [N*K] of the combine weights; `scale` weighs the router losses. Returns du
  // (N, C) (overwritten); accumulates the router's weight gradients.
  virtual Tensor backward(std::span<const float> dweights, const GlobalRouting& g,
                          float scale) = 0;
};

class TopKRouter final : public Router {
 public:
  // moe.num_experts, top_k, renormalize, aux_loss, z_loss, locality_loss,
  // max_nodes_per_token and own_node_bonus of `config`; locality: the node of every
  // expert and of this rank's tokens. Node-limited routing needs the M nodes with the
  // fewest experts to hold K experts (a user error otherwise).
  TopKRouter(ParamStore& store, const std::string& prefix, int64_t width,
             const MoeConfig& config, float init_std, const ExpertLocality& locality);

  RouterChoices forward(Tensor u, std::span<const float> bias,
                        std::span<const int32_t> fixed_experts) override;
  void add_sums(RouterSums& sums) override;
  AuxLosses aux_losses(const RouterSums& global, const GlobalRouting& g) const override;
  Tensor backward(std::span<const float> dweights, const GlobalRouting& g,
                  float scale) override;

  // Views of the last forward's logits and p, (N, E) each.
  Tensor logits() const { return Tensor(logits_.data(), {u_.rows(), num_experts_}); }
  Tensor probs() const { return Tensor(probs_.data(), {u_.rows(), num_experts_}); }
  Param& weight() { return weight_; }

 private:
  void select(std::span<const float> bias, int64_t n);
  void compute_weights(int64_t n);
  void weights_backward(const float* dweights, float* dp, int64_t n) const;
  std::vector<double> local_distribution() const;  // [E] D_l of this rank's node

  Param& weight_;  // (E, C)
  int64_t width_, num_experts_, top_k_;
  bool renormalize_;
  float alpha_, z_coef_, locality_coef_;  // moe.aux_loss, z_loss, locality_loss
  std::vector<float> skew_;  // (1, E) -s ln(e + 1), moe.router_skew; empty when s = 0
  ExpertLocality locality_;
  NodeLimit limit_;
  // The (N, E) tensors below live in host memory whatever the model's device: the expert
  // choice, the combine weights and the routing plan are host data (the op API takes
  // them as host spans) and the router losses are sums over them. Only the two products
  // with u run on u's device, through product_ (N, E) there, and the logits and their
  // gradient cross once each way (nothing crosses on the CPU).
  Tensor u_;                         // (N, C) saved input
  Buffer product_;                   // (N, E) logits or dlogits on u's device
  Buffer logits_, probs_;            // (N, E)
  Buffer scores_, top_values_;       // (N, E) p + b; (N, K) scratch of the top-K
  std::vector<int32_t> experts_;     // [N*K]
  std::vector<float> weights_;       // [N*K]
  std::vector<double> local_mean_p_; // [E] P^r of the last forward (locality loss)
  Buffer dprobs_, dlogits_, dz_;     // (N, E) x3
  Buffer du_;                        // (N, C) on u's device
};

}  // namespace moe
