#pragma once
// MoELayer: the MoE FFN of one transformer block (docs/architecture.md, "Routing",
// "Dispatch and combine"), a sequence of named steps:
//
//   route     logits, p, top-K choice, combine weights       Router       (N, E)
//             (moe.max_nodes_per_token: node-limited top-K; moe.routing = bilevel:
//             BilevelRouter, a node-level and a rank-level router)
//   plan      capacity, slots in the expert-ordered buffer   RoutingPlan  [N*K]
//             (moe.batch_priority: V-MoE Batch Priority Routing)
//   dispatch  token rows -> expert-ordered rows               Dispatcher   (S, C)
//   experts   one SwiGLU (or GELU) GEMM chain per expert      GroupedExperts (S, C)
//   combine   y_t = sum_k w_{t,k} Expert_{e_{t,k}}(u_t)       Dispatcher   (N, C)
//   shared    y += Shared(u) when moe.num_shared > 0          Mlp          (N, C)
//
// The layer's losses are part of the total loss with weight 1 (times aux_scale in
// backward): L_aux = alpha * E * sum_e f_e P_e and L_z = c_z * mean_t lse_t^2
// (framework/moe/aux_loss.h); backward adds their gradients. With bi-level routing
// L_aux is the sum of the two levels' balance losses (bilevel_router.h) and L_z covers
// both routers' logits. With moe.locality_loss = mu > 0 (top-K routing) the LocMoE
// locality loss joins L_aux:
//   L_loc = mu * mean_r KL(P^r || D_l^r)
//   P^r_e   = mean over rank r's tokens of p_{t,e} (the batch's assignment distribution)
//   D_l^r_e = (1 - eps (E - L)) / L on the L experts of rank r's node, eps elsewhere
//             (the distribution that keeps every token on its node; eps = 1e-4)
//   dL_loc/dp_{t,e} = mu (log(P_e / D_l_e) + 1) / N on each rank (the data-parallel
//   average of the gradients divides by R again, as for L_aux)
//
// Under data parallelism (runtime.tokens) the layer sees its rank's slice of the global
// batch but routes as one process holding the whole batch would: the capacity, the
// admission order (choice-major over the global token order), L_aux, L_z and the load
// statistics are those of the global batch (framework/moe/routing_plan.h, aux_loss.h).
// Only the forward communicates (two small collectives over runtime.tokens); the
// dispatcher moves the rows.
//
// Parameters: <prefix>.router.weight (E, C), <prefix>.experts.{w_gate,w_up} (E, F, C),
// <prefix>.experts.w_down (E, C, F), <prefix>.shared.* (SwiGLUMlp of width
// num_shared * shared_ffn); with moe.expert_act = gelu the experts are
// <prefix>.experts.{w_fc1,w_fc2} and the shared expert a GeluMlp. The balancing bias b [E] (moe.bias_balance) is layer state,
// not a parameter: it is checkpointed through bias().
// Layer conventions as in framework/nn/linear.h.

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/dispatcher.h"
#include "framework/moe/bilevel_router.h"
#include "framework/moe/experts.h"
#include "framework/moe/moe_runtime.h"
#include "framework/moe/placement.h"
#include "framework/moe/router.h"
#include "framework/nn/mlp.h"
#include "framework/parallel/communicator.h"

namespace moe {

// Expert load of the last forward over the global batch, for telemetry.
struct ExpertLoadStats {
  std::vector<int64_t> assigned;  // [E] assignments chosen per expert (before dropping)
  std::vector<int64_t> kept;      // [E] assignments kept (after capacity)
  double max_over_mean = 0.0;     // max_e assigned_e / mean_e assigned_e; 1 = balanced
  double dropped_fraction = 0.0;  // dropped assignments / (N*K)
  // assignments (before dropping) whose expert is on the token's node / (N*K)
  double node_local_fraction = 0.0;
  // distinct nodes a token's assignments reach, mean over tokens; and those other than
  // the token's own: the rows per token a dispatcher that sends a token once per node
  // (DeepSeek-V3, SMILE) would put on inter-node links
  double nodes_per_token = 0.0;
  double remote_nodes_per_token = 0.0;
  double locality_loss = 0.0;     // L_loc (part of the layer's aux_loss())
};

class MoELayer {
 public:
  // prefix e.g. "layers.3.moe"; init_std for router, gate/up weights, out_std for the
  // down projections. The runtime (dispatcher, communicator) must outlive the layer.
  MoELayer(ParamStore& store, const std::string& prefix, int64_t width,
           const MoeConfig& config, float init_std, float out_std, const MoeRuntime& runtime);

  Tensor forward(Tensor u);  // u (N, C) -> y (N, C)
  // dy (N, C) -> du (N, C). aux_scale is the weight of this layer's L_aux + L_z in the
  // loss being differentiated (1 for one micro-batch, 1/M when M are averaged).
  Tensor backward(Tensor dy, float aux_scale = 1.0f);

  // L_aux (+ L_loc) of the last forward
  double aux_loss() const { return aux_loss_ + locality_loss_; }
  double z_loss() const { return z_loss_; }      // L_z of the last forward
  const ExpertLoadStats& load_stats() const { return stats_; }
  // Routing plan of the last forward (null before the first).
  const RoutingPlan* last_plan() const { return handle_ ? &handle_->plan() : nullptr; }

  // Aux-loss-free balancing (DeepSeek-V3), after an optimizer step:
  //   b_e += gamma * sign(mean_e load_e - load_e)
  // global_load [E] the assignments per expert of the step, summed over ranks.
  void update_bias(const int64_t* global_load);
  std::span<float> bias() { return bias_; }  // [E] layer state for checkpoints
  std::span<const float> bias() const { return bias_; }

  // Test hook: while frozen, forward reuses the expert choices of the last forward
  // (same N required); the weights are still recomputed from p, so gradients through
  // them stay exact and the loss is smooth for finite differences.
  void freeze_routing(bool frozen);

  Router& router();  // top-K routing only
  BilevelRouter* bilevel_router() { return bilevel_.get(); }  // null unless bilevel
  GroupedExperts& experts() { return experts_; }
  Mlp* shared() { return shared_.get(); }
  int64_t num_experts() const { return config_.num_experts; }

 private:
  struct Choices {
    std::span<const int32_t> experts;  // [N*K]
    std::span<const float> weights;    // [N*K]
  };
  Choices route(Tensor u, std::span<const int32_t> fixed);
  // The choices' counts over the global batch; fills global_counts_, tokens_ and
  // returns queued_ahead for the plan (empty on a single rank).
  std::vector<int64_t> gather_choice_counts(std::span<const int32_t> experts, int64_t n);
  // This rank's plan, admitting what a plan of the whole global batch admits.
  RoutingPlan plan_global_batch(const Choices& r, int64_t n, int64_t capacity,
                                const std::vector<int64_t>& queued_ahead);
  // L_aux, L_loc and L_z of the global batch, and the node-local share, from this rank's
  // router outputs (one all-reduce over the token group).
  void compute_losses(std::span<const int32_t> experts, int64_t n);
  // [E] D_l of this rank's node (see above)
  std::vector<double> local_distribution() const;
  // Per group / per local index counts of the global batch (bi-level balance).
  std::vector<int64_t> group_counts() const;
  std::vector<int64_t> local_index_counts() const;
  void compute_stats(int64_t capacity);
  // dprobs/dlogits of the router losses, then the router's backward; returns its du.
  Tensor router_backward(int64_t n, float aux_scale);

  MoeConfig config_;
  int64_t width_;
  MoeRuntime runtime_;
  std::unique_ptr<Router> router_;           // top-K routing
  std::unique_ptr<BilevelRouter> bilevel_;   // moe.routing = bilevel
  GroupedExperts experts_;
  std::unique_ptr<Mlp> shared_;        // null when num_shared == 0
  std::vector<float> bias_;            // [E] selection bias, zeros unless bias_balance
  int64_t block_;                      // the block of the layer, for the watchdog

  bool frozen_ = false;
  std::vector<int32_t> last_experts_;  // [N*K] choices of the last forward
  std::optional<DispatchHandle> handle_;  // of the last forward, consumed by backward
  Tensor expert_out_;                     // (S, C) view of the experts' output
  double aux_loss_ = 0.0, z_loss_ = 0.0, locality_loss_ = 0.0;
  BilevelOutput last_bilevel_;         // views of the bi-level router's last forward
  std::vector<double> local_mean_p_;   // [E] P^r of the last forward (locality loss)
  int64_t global_tokens_ = 0;          // N_g, tokens of the global batch
  std::vector<int64_t> global_counts_;  // [E] assignments per expert in the global batch
  std::vector<int64_t> all_counts_;     // [R, K, E] choice counts of every rank
  ExpertLoadStats stats_;
  Buffer y_, du_, d_expert_out_, dprobs_, dlogits_;  // (N,C) (N,C) (S,C) (N,E) (N,E)
  Buffer dlocal_probs_, dlocal_logits_;              // bi-level: (N,G) (N,G)
  std::vector<float> dweights_;                      // [N*K]
};

}  // namespace moe
