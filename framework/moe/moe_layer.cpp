#include "framework/moe/moe_layer.h"

#include <algorithm>

#include "framework/kernels/ops.h"
#include "framework/moe/aux_loss.h"

namespace moe {

namespace {

ExpertActivation expert_activation(const MoeConfig& config) {
  return config.expert_act == "gelu" ? ExpertActivation::kGelu : ExpertActivation::kSwiGLU;
}

std::unique_ptr<Mlp> make_shared_experts(ParamStore& store, const std::string& prefix,
                                         int64_t width, const MoeConfig& config,
                                         float init_std, float out_std) {
  if (config.num_shared <= 0) return nullptr;
  // K_s shared experts of width F_s are one FFN of width K_s * F_s.
  const int64_t hidden = int64_t{config.num_shared} * config.shared_ffn;
  if (expert_activation(config) == ExpertActivation::kGelu)
    return std::make_unique<GeluMlp>(store, prefix + ".shared", width, hidden, init_std,
                                     out_std);
  return std::make_unique<SwiGLUMlp>(store, prefix + ".shared", width, hidden, init_std,
                                     out_std);
}

}  // namespace

MoELayer::MoELayer(ParamStore& store, const std::string& prefix, int64_t width,
                   const MoeConfig& config, float init_std, float out_std,
                   Dispatcher& dispatcher)
    : config_(config),
      width_(width),
      dispatcher_(dispatcher),
      router_(store, prefix, width, config.num_experts, config.top_k, config.renormalize,
              init_std),
      experts_(store, prefix, width, config.expert_ffn, config.num_experts, init_std,
               out_std, expert_activation(config)),
      shared_(make_shared_experts(store, prefix, width, config, init_std, out_std)),
      bias_(static_cast<size_t>(config.num_experts), 0.0f) {}

Tensor MoELayer::forward(Tensor u) {
  const int64_t n = u.rows();
  const int64_t e = config_.num_experts, k = config_.top_k;
  std::span<const float> bias;
  if (config_.bias_balance) bias = bias_;
  std::span<const int32_t> fixed;
  if (frozen_) {
    MOE_CHECK(static_cast<int64_t>(last_experts_.size()) == n * k,
              "MoE layer: routing frozen for ", last_experts_.size() / k, " tokens, got ", n);
    fixed = last_experts_;
  }

  // route
  const RouterOutput r = router_.forward(u, bias, fixed);
  last_experts_.assign(r.experts.begin(), r.experts.end());
  // plan
  auto plan = std::make_shared<const RoutingPlan>(build_routing_plan(
      r.experts, r.weights, n, k, e, expert_capacity(config_.capacity_factor, n, k, e),
      config_.batch_priority ? RoutingPriority::kBatchPriority : RoutingPriority::kChoiceMajor));
  aux_loss_ = switch_aux_loss(r.probs.data, plan->counts_before.data(), n, e, k,
                              config_.aux_loss);
  z_loss_ = router_z_loss(r.logits.data, n, e, config_.z_loss);
  compute_stats(*plan);
  // dispatch -> experts -> combine
  handle_.emplace(dispatcher_.dispatch(u, std::move(plan)));
  expert_out_ = experts_.forward(handle_->rows(), handle_->expert_offsets());
  Tensor y = y_.view({n, width_});
  dispatcher_.combine(*handle_, expert_out_, y);
  // shared experts see every token
  if (shared_) {
    const Tensor ys = shared_->forward(u);
    cpu::axpy(1.0f, ys.data, y.data, y.numel());
  }
  return y;
}

Tensor MoELayer::backward(Tensor dy, float aux_scale) {
  MOE_CHECK(handle_.has_value(), "MoE layer: backward without forward");
  const RoutingPlan& plan = handle_->plan();
  const int64_t n = plan.num_tokens, e = config_.num_experts, k = config_.top_k;
  MOE_CHECK(dy.rows() == n && dy.cols() == width_, "MoE layer: gradient shape ",
            dy.shape.str());

  // combine -> experts -> dispatch, reversed
  Tensor d_expert_out = d_expert_out_.view(expert_out_.shape);
  dweights_.resize(static_cast<size_t>(n * k));
  dispatcher_.combine_backward(*handle_, expert_out_, dy, d_expert_out, dweights_.data());
  const Tensor d_rows = experts_.backward(d_expert_out);
  Tensor du = du_.view({n, width_});
  dispatcher_.dispatch_backward(*handle_, d_rows, du);

  // router: combine weights + aux loss (on p) + z-loss (on the logits)
  Tensor dprobs = dprobs_.view({n, e});
  Tensor dlogits = dlogits_.view({n, e});
  dprobs_.zero();
  dlogits_.zero();
  switch_aux_loss_backward(plan.counts_before.data(), n, e, k, config_.aux_loss, aux_scale,
                           dprobs.data);
  router_z_loss_backward(router_.logits().data, router_.probs().data, n, e, config_.z_loss,
                         aux_scale, dlogits.data);
  const Tensor du_router = router_.backward(dweights_.data(), dprobs.data, dlogits.data);
  cpu::axpy(1.0f, du_router.data, du.data, du.numel());

  if (shared_) {
    const Tensor du_shared = shared_->backward(dy);
    cpu::axpy(1.0f, du_shared.data, du.data, du.numel());
  }
  return du;
}

void MoELayer::compute_stats(const RoutingPlan& plan) {
  stats_.assigned = plan.counts_before;
  stats_.kept = plan.counts_after;
  const int64_t total = plan.num_assignments();
  const int64_t max_load = *std::max_element(plan.counts_before.begin(),
                                             plan.counts_before.end());
  const double mean_load = static_cast<double>(total) / static_cast<double>(plan.num_experts);
  stats_.max_over_mean = total > 0 ? static_cast<double>(max_load) / mean_load : 0.0;
  stats_.dropped_fraction =
      total > 0 ? static_cast<double>(plan.num_dropped()) / static_cast<double>(total) : 0.0;
}

void MoELayer::update_bias(const int64_t* global_load) {
  MOE_CHECK(config_.bias_balance, "MoE layer: update_bias without moe.bias_balance");
  const int64_t e = config_.num_experts;
  double mean_load = 0.0;
  for (int64_t i = 0; i < e; ++i) mean_load += static_cast<double>(global_load[i]);
  mean_load /= static_cast<double>(e);
  for (int64_t i = 0; i < e; ++i) {
    const double gap = mean_load - static_cast<double>(global_load[i]);
    // b_e += gamma * sign(mean_load - load_e): underloaded experts become likelier
    if (gap > 0.0) bias_[i] += config_.bias_update_rate;
    if (gap < 0.0) bias_[i] -= config_.bias_update_rate;
  }
}

void MoELayer::freeze_routing(bool frozen) {
  MOE_CHECK(!frozen || !last_experts_.empty(),
            "MoE layer: freeze_routing needs a forward to take the choices from");
  frozen_ = frozen;
}

}  // namespace moe
