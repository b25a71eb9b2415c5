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
                   const MoeRuntime& runtime)
    : config_(config),
      width_(width),
      runtime_(runtime),
      router_(store, prefix, width, config.num_experts, config.top_k, config.renormalize,
              init_std),
      experts_(store, prefix, width, config.expert_ffn, runtime.placement, init_std,
               out_std, expert_activation(config)),
      shared_(make_shared_experts(store, prefix, width, config, init_std, out_std)),
      bias_(static_cast<size_t>(config.num_experts), 0.0f) {
  MOE_CHECK(runtime.dispatcher != nullptr, "MoE layer ", prefix, ": no dispatcher");
  MOE_CHECK(runtime.placement.num_experts == config.num_experts, "MoE layer ", prefix,
            ": placement of ", runtime.placement.num_experts, " experts, config has ",
            config.num_experts);
}

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
  // plan: capacity and admission of the global batch
  const std::vector<int64_t> ahead = gather_choice_counts(r.experts, n);
  const int64_t capacity = expert_capacity(config_.capacity_factor, global_tokens_, k, e);
  auto plan = std::make_shared<const RoutingPlan>(plan_global_batch(r, n, capacity, ahead));
  compute_losses(r, n);
  compute_stats(capacity);
  // dispatch -> experts -> combine
  Dispatcher& dispatcher = *runtime_.dispatcher;
  handle_.emplace(dispatcher.dispatch(u, std::move(plan)));
  expert_out_ = experts_.forward(handle_->rows(), handle_->expert_offsets());
  Tensor y = y_.view({n, width_});
  dispatcher.combine(*handle_, expert_out_, y);
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
  Dispatcher& dispatcher = *runtime_.dispatcher;
  dispatcher.combine_backward(*handle_, expert_out_, dy, d_expert_out, dweights_.data());
  const Tensor d_rows = experts_.backward(d_expert_out);
  Tensor du = du_.view({n, width_});
  dispatcher.dispatch_backward(*handle_, d_rows, du);

  // router: combine weights + aux loss (on p) + z-loss (on the logits)
  Tensor dprobs = dprobs_.view({n, e});
  Tensor dlogits = dlogits_.view({n, e});
  dprobs_.zero();
  dlogits_.zero();
  // global f_e; each rank's gradient is later averaged over the token group
  switch_aux_loss_backward(global_counts_.data(), n, e, k, config_.aux_loss, aux_scale,
                           dprobs.data, global_tokens_);
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

std::vector<int64_t> MoELayer::gather_choice_counts(std::span<const int32_t> experts,
                                                    int64_t n) {
  const int64_t e = config_.num_experts, k = config_.top_k;
  const std::vector<int64_t> counts = choice_counts(experts, n, k, e);  // [K, E]
  Communicator* tokens = runtime_.tokens;
  const int ranks = tokens ? tokens->size() : 1;
  std::vector<int64_t>& all_counts = all_counts_;  // [R, K, E]
  all_counts = counts;
  if (ranks > 1) {
    all_counts.resize(static_cast<size_t>(ranks * k * e));
    tokens->all_gather<int64_t>(counts, all_counts);
  }
  global_counts_.assign(static_cast<size_t>(e), 0);
  int64_t assignments = 0;
  for (int64_t i = 0; i < ranks * k; ++i)
    for (int64_t j = 0; j < e; ++j) global_counts_[j] += all_counts[i * e + j];
  for (int64_t c : global_counts_) assignments += c;
  // Every rank holds an equal slice of the global batch (the sampler's contract).
  MOE_CHECK(assignments == ranks * n * k, "MoE layer: ranks route unequal token counts (",
            assignments, " assignments, ", ranks, " x ", n, " tokens x ", k, ")");
  global_tokens_ = ranks * n;
  if (ranks == 1) return {};
  return queued_ahead_of_rank(all_counts, ranks, tokens->rank(), k, e);
}

RoutingPlan MoELayer::plan_global_batch(const RouterOutput& r, int64_t n, int64_t capacity,
                                        const std::vector<int64_t>& queued_ahead) {
  const int64_t e = config_.num_experts, k = config_.top_k;
  const RoutingPriority priority =
      config_.batch_priority ? RoutingPriority::kBatchPriority : RoutingPriority::kChoiceMajor;
  Communicator* tokens = runtime_.tokens;
  const int ranks = tokens ? tokens->size() : 1;
  Admission admission;
  admission.priority = priority;
  if (ranks == 1)
    return build_routing_plan(r.experts, r.weights, n, k, e, capacity, admission);
  if (capacity < 0 || priority == RoutingPriority::kChoiceMajor) {
    if (capacity >= 0) admission.queued_ahead = queued_ahead;
    RoutingPlan plan = build_routing_plan(r.experts, r.weights, n, k, e, capacity, admission);
    // what every rank keeps follows from the gathered counts: no counts exchange needed
    plan.group_counts_after = kept_counts_of_ranks(all_counts_, ranks, k, e, capacity);
    return plan;
  }
  // Batch priority orders each round by the priorities of every rank's tokens: plan the
  // gathered global batch ([R*N*K] choices and weights) and keep this rank's slice.
  std::vector<int32_t> all_experts(static_cast<size_t>(ranks * n * k));
  std::vector<float> all_weights(all_experts.size());
  tokens->all_gather<int32_t>(r.experts, all_experts);
  tokens->all_gather<float>(r.weights, all_weights);
  const RoutingPlan whole =
      build_routing_plan(all_experts, all_weights, ranks * n, k, e, capacity, admission);
  std::vector<uint8_t> kept(static_cast<size_t>(n * k));
  const int64_t first = static_cast<int64_t>(tokens->rank()) * n * k;
  for (int64_t a = 0; a < n * k; ++a) kept[a] = whole.slot[first + a] >= 0 ? 1 : 0;
  admission.kept = kept;
  RoutingPlan plan = build_routing_plan(r.experts, r.weights, n, k, e, capacity, admission);
  plan.group_counts_after.assign(static_cast<size_t>(ranks * e), 0);
  for (int64_t a = 0; a < ranks * n * k; ++a)
    if (whole.slot[a] >= 0) ++plan.group_counts_after[(a / (n * k)) * e + all_experts[a]];
  return plan;
}

void MoELayer::compute_losses(const RouterOutput& r, int64_t n) {
  const int64_t e = config_.num_experts;
  // sums [E + 1]: sum_t p_{t,e} over this rank's tokens, then this rank's L_z
  std::vector<double> sums(static_cast<size_t>(e + 1), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < e; ++j) sums[j] += r.probs.data[t * e + j];
  sums[e] = router_z_loss(r.logits.data, n, e, config_.z_loss);
  Communicator* tokens = runtime_.tokens;
  const int ranks = tokens ? tokens->size() : 1;
  if (ranks > 1) tokens->all_reduce<double>(sums);
  aux_loss_ = switch_aux_loss_global(sums.data(), global_counts_.data(), global_tokens_, e,
                                     config_.top_k, config_.aux_loss);
  z_loss_ = sums[e] / ranks;  // mean over equal slices
}

void MoELayer::compute_stats(int64_t capacity) {
  stats_.assigned = global_counts_;
  stats_.kept = global_counts_;
  // Admission keeps a prefix of each expert's queue: min(capacity, load) survive.
  if (capacity >= 0)
    for (int64_t& c : stats_.kept) c = std::min(c, capacity);
  int64_t total = 0, kept = 0, max_load = 0;
  for (size_t i = 0; i < stats_.assigned.size(); ++i) {
    total += stats_.assigned[i];
    kept += stats_.kept[i];
    max_load = std::max(max_load, stats_.assigned[i]);
  }
  const double mean_load = static_cast<double>(total) / static_cast<double>(config_.num_experts);
  stats_.max_over_mean = total > 0 ? static_cast<double>(max_load) / mean_load : 0.0;
  stats_.dropped_fraction =
      total > 0 ? static_cast<double>(total - kept) / static_cast<double>(total) : 0.0;
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
