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
// The router (TopKRouter, or BilevelRouter with moe.routing = bilevel; router.h) owns
// the layer's losses: L_aux (balance; with moe.locality_loss the LocMoE locality loss
// joins it) and L_z, part of the total loss with weight 1 (times aux_scale in backward).
//
// Under data parallelism (runtime.tokens()) the layer sees its rank's slice of the global
// batch but routes as one process holding the whole batch would: the capacity, the
// admission order (choice-major over the global token order), L_aux, L_z and the load
// statistics are those of the global batch (framework/moe/routing_plan.h, aux_loss.h).
// Only the forward communicates (two small collectives over runtime.tokens()); the
// dispatcher moves the rows.
//
// moe.a2a_dtype = bf16: the rows the dispatchers send back, the experts' outputs and
// their input gradients, are rounded to bf16 here, on every layout (one process too), so
// that a bf16 wire moves them exactly and results do not depend on the layout.
//
// Parameters: <prefix>.router.weight (E, C), <prefix>.experts.{w_gate,w_up} (E, F, C),
// <prefix>.experts.w_down (E, C, F), <prefix>.shared.* (SwiGLUMlp of width
// num_shared * shared_ffn); with moe.expert_act = gelu the experts are
// <prefix>.experts.{w_fc1,w_fc2} and the shared expert a GeluMlp. The balancing bias b
// [E] (moe.bias_balance) is layer state, not a parameter: a ParamStore buffer named
// <prefix>.router.bias, which checkpoints keep. Sharded experts with a load window
// (runtime.load_window() > 1) add the window's history buffer,
// <prefix>.experts.load_history_w<W>_r<R> (load_window.h).
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
#include "framework/moe/load_window.h"
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
  // Rows this rank's experts computed in the last forward (0 before the first).
  int64_t rows_computed() const { return handle_ ? handle_->rows().rows() : 0; }

  // Aux-loss-free balancing (DeepSeek-V3), after an optimizer step:
  //   b_e += gamma * sign(mean_e load_e - load_e)
  // global_load [E] the assignments per expert of the step, summed over ranks.
  void update_bias(const int64_t* global_load);
  std::span<float> bias() { return bias_.values(); }  // [E]

  // Test hook: while frozen, forward reuses the expert choices of the last forward
  // (same N required); the weights are still recomputed from p, so gradients through
  // them stay exact and the loss is smooth for finite differences.
  void freeze_routing(bool frozen);
  // fssdp with parallel.load_window > 1: the window the replica plan reads (null: this
  // step's counts). The trainer pushes each training step's counts into it.
  LoadWindow* load_window() { return window_.get(); }

  TopKRouter& router();             // top-K routing only
  BilevelRouter* bilevel_router();  // null unless bilevel
  GroupedExperts& experts() { return experts_; }
  Mlp* shared() { return shared_.get(); }
  int64_t num_experts() const { return config_.num_experts; }

 private:
  // The choices' counts over the global batch; fills global_counts_, tokens_ and
  // returns queued_ahead for the plan (empty on a single rank).
  std::vector<int64_t> gather_choice_counts(std::span<const int32_t> experts, int64_t n);
  // This rank's plan, admitting what a plan of the whole global batch admits.
  RoutingPlan plan_global_batch(const RouterChoices& r, int64_t n, int64_t capacity,
                                const std::vector<int64_t>& queued_ahead);
  // L_aux, L_loc and L_z of the global batch, and the node-local share, from this rank's
  // router outputs (one all-reduce over the token group).
  void compute_losses(std::span<const int32_t> experts, int64_t n);
  void compute_stats(int64_t capacity);
  GlobalRouting global_routing() const;  // of the last forward's gather
  // moe.a2a_dtype = bf16: rows (expert outputs or input gradients) rounded to bf16 in place
  void round_exchanged_rows(Tensor rows);

  MoeConfig config_;
  int64_t width_;
  MoeRuntime runtime_;
  std::unique_ptr<Router> router_;     // TopKRouter, or BilevelRouter (moe.routing)
  GroupedExperts experts_;
  std::unique_ptr<Mlp> shared_;        // null when num_shared == 0
  StateBuffer& bias_;                  // [E] selection bias, zeros unless bias_balance
  std::unique_ptr<LoadWindow> window_;  // fssdp load window, null unless load_window > 1
  int64_t block_;                      // the block of the layer, for the watchdog

  bool frozen_ = false;
  std::vector<int32_t> last_experts_;  // [N*K] choices of the last forward
  std::optional<DispatchHandle> handle_;  // of the last forward, consumed by backward
  Tensor expert_out_;                     // (S, C) view of the experts' output
  double aux_loss_ = 0.0, z_loss_ = 0.0, locality_loss_ = 0.0;
  int64_t global_tokens_ = 0;          // N_g, tokens of the global batch
  std::vector<int64_t> global_counts_;  // [E] assignments per expert in the global batch
  std::vector<int64_t> all_counts_;     // [R, K, E] choice counts of every rank
  ExpertLoadStats stats_;
  Buffer y_, du_, d_expert_out_;                     // (N,C) (N,C) (S,C)
  Buffer rows16_{Device::kCpu, DType::kBF16};        // (S,C) round_exchanged_rows
  std::vector<float> dweights_;                      // [N*K]
};

}  // namespace moe
