#include "framework/moe/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "framework/kernels/ops.h"
#include "framework/moe/aux_loss.h"
#include "framework/parallel/watchdog.h"

namespace moe {

namespace {

std::unique_ptr<Mlp> make_shared_experts(ParamStore& store, const std::string& prefix,
                                         int64_t width, const MoeConfig& config,
                                         float init_std, float out_std, Communicator* tp,
                                         bool sequence_parallel) {
  if (config.num_shared <= 0) return nullptr;
  // K_s shared experts of width F_s are one FFN of width K_s * F_s.
  const int64_t hidden = int64_t{config.num_shared} * config.shared_ffn;
  if (config.expert_act == ExpertActivation::kGelu)
    return std::make_unique<GeluMlp>(store, prefix + ".shared", width, hidden, init_std,
                                     out_std, tp, sequence_parallel);
  return std::make_unique<SwiGLUMlp>(store, prefix + ".shared", width, hidden, init_std,
                                     out_std, tp, sequence_parallel);
}

std::unique_ptr<Router> make_router(ParamStore& store, const std::string& prefix,
                                    int64_t width, const MoeConfig& config, float init_std,
                                    const ExpertLocality& locality) {
  if (config.routing == RoutingKind::kBilevel) return nullptr;
  return std::make_unique<Router>(
      store, prefix, width, config.num_experts, config.top_k, config.renormalize, init_std,
      NodeLimit{locality.expert_node, locality.num_nodes, config.max_nodes_per_token,
                locality.token_node, config.own_node_bonus});
}

std::unique_ptr<BilevelRouter> make_bilevel_router(ParamStore& store, const std::string& prefix,
                                                   int64_t width, const MoeConfig& config,
                                                   float init_std) {
  if (config.routing != RoutingKind::kBilevel) return nullptr;
  return std::make_unique<BilevelRouter>(store, prefix, width, config.num_experts,
                                         config.node_groups, config.top_k, config.renormalize,
                                         init_std);
}

// The block index in "layers.3.moe" (-1 when the prefix has none).
int64_t block_of(const std::string& prefix) {
  const size_t digit = prefix.find_first_of("0123456789");
  return digit == std::string::npos ? -1 : std::atoll(prefix.c_str() + digit);
}

}  // namespace

MoELayer::MoELayer(ParamStore& store, const std::string& prefix, int64_t width,
                   const MoeConfig& config, float init_std, float out_std,
                   const MoeRuntime& runtime)
    : config_(config),
      width_(width),
      runtime_(runtime),
      router_(make_router(store, prefix, width, config, init_std, runtime_.locality())),
      bilevel_(make_bilevel_router(store, prefix, width, config, init_std)),
      experts_(store, prefix, width, config.expert_ffn, runtime.placement(), init_std,
               out_std, config.expert_act, runtime.etp()),
      shared_(make_shared_experts(store, prefix, width, config, init_std, out_std, runtime.tp(),
                                  runtime.sequence_parallel())),
      bias_(static_cast<size_t>(config.num_experts), 0.0f),
      block_(block_of(prefix)) {
  MOE_CHECK(runtime.placement().num_experts == config.num_experts, "MoE layer ", prefix,
            ": placement of ", runtime.placement().num_experts, " experts, config has ",
            config.num_experts);
}

Router& MoELayer::router() {
  MOE_CHECK(router_ != nullptr, "MoE layer: router() of a bi-level layer");
  return *router_;
}

MoELayer::Choices MoELayer::route(Tensor u, std::span<const int32_t> fixed) {
  if (bilevel_) {
    last_bilevel_ = bilevel_->forward(u, fixed);
    return {last_bilevel_.experts, last_bilevel_.weights};
  }
  std::span<const float> bias;
  if (config_.bias_balance) bias = bias_;
  const RouterOutput r = router_->forward(u, bias, fixed);
  return {r.experts, r.weights};
}

Tensor MoELayer::forward(Tensor u) {
  const WatchedLayer watched(runtime_.tokens(), block_);
  const int64_t n = u.rows();
  const int64_t e = config_.num_experts, k = config_.top_k;
  std::span<const int32_t> fixed;
  if (frozen_) {
    MOE_CHECK(static_cast<int64_t>(last_experts_.size()) == n * k,
              "MoE layer: routing frozen for ", last_experts_.size() / k, " tokens, got ", n);
    fixed = last_experts_;
  }

  // route
  const Choices r = route(u, fixed);
  last_experts_.assign(r.experts.begin(), r.experts.end());
  // plan: capacity and admission of the global batch
  const std::vector<int64_t> ahead = gather_choice_counts(r.experts, n);
  const int64_t capacity = expert_capacity(config_.capacity_factor, global_tokens_, k, e);
  auto plan = std::make_shared<const RoutingPlan>(plan_global_batch(r, n, capacity, ahead));
  compute_losses(r.experts, n);
  compute_stats(capacity);
  // dispatch -> experts -> combine
  Dispatcher& dispatcher = runtime_.dispatcher();
  handle_.emplace(dispatcher.dispatch(u, std::move(plan)));
  expert_out_ = experts_.forward(handle_->rows(), handle_->expert_offsets());
  Tensor y = y_.view({n, width_});
  dispatcher.combine(*handle_, expert_out_, y);
  // shared experts see every token
  if (shared_) {
    const Tensor ys = shared_->forward(u);
    ops::axpy(1.0f, ys, y);
  }
  return y;
}

Tensor MoELayer::backward(Tensor dy, float aux_scale) {
  const WatchedLayer watched(runtime_.tokens(), block_);
  MOE_CHECK(handle_.has_value(), "MoE layer: backward without forward");
  const RoutingPlan& plan = handle_->plan();
  const int64_t n = plan.num_tokens, k = config_.top_k;
  MOE_CHECK(dy.rows() == n && dy.cols() == width_, "MoE layer: gradient shape ",
            dy.shape.str());

  // combine -> experts -> dispatch, reversed
  Tensor d_expert_out = d_expert_out_.view(expert_out_.shape);
  dweights_.resize(static_cast<size_t>(n * k));
  Dispatcher& dispatcher = runtime_.dispatcher();
  dispatcher.combine_backward(*handle_, expert_out_, dy, d_expert_out, dweights_.data());
  const Tensor d_rows = experts_.backward(d_expert_out);
  Tensor du = du_.view({n, width_});
  dispatcher.dispatch_backward(*handle_, d_rows, du);

  // Under sequence parallelism the router losses are normalised by this rank's N/tp
  // rows, but the router gradient is summed over tp before the mean over dp.
  const float router_scale =
      runtime_.sequence_parallel() ? aux_scale / static_cast<float>(tp_size(runtime_.tp()))
                                 : aux_scale;
  const Tensor du_router = router_backward(n, router_scale);
  ops::axpy(1.0f, du_router, du);

  if (shared_) {
    const Tensor du_shared = shared_->backward(dy);
    ops::axpy(1.0f, du_shared, du);
  }
  return du;
}

std::vector<int64_t> MoELayer::gather_choice_counts(std::span<const int32_t> experts,
                                                    int64_t n) {
  const int64_t e = config_.num_experts, k = config_.top_k;
  const std::vector<int64_t> counts = choice_counts(experts, n, k, e);  // [K, E]
  Communicator* tokens = runtime_.tokens();
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

Tensor MoELayer::router_backward(int64_t n, float aux_scale) {
  const int64_t e = config_.num_experts, k = config_.top_k;
  const float alpha = config_.aux_loss, cz = config_.z_loss;
  if (bilevel_) {
    // per level: balance on p (global counts), z-loss on the logits
    const int64_t groups = bilevel_->num_groups(), g = bilevel_->group_size();
    Tensor dp1 = dprobs_.view({n, groups}), da = dlogits_.view({n, groups});
    Tensor dp2 = dlocal_probs_.view({n, g}), db = dlocal_logits_.view({n, g});
    for (Tensor t : {dp1, da, dp2, db}) std::fill(t.data, t.data + t.numel(), 0.0f);
    const std::vector<int64_t> per_group = group_counts(), per_index = local_index_counts();
    switch_aux_loss_backward(per_group.data(), n, groups, k, alpha, aux_scale, dp1.data,
                             global_tokens_);
    switch_aux_loss_backward(per_index.data(), n, g, k, alpha, aux_scale, dp2.data,
                             global_tokens_);
    const BilevelOutput& r = last_bilevel_;
    router_z_loss_backward(r.node_logits.data, r.node_probs.data, n, groups, cz, aux_scale, da.data);
    router_z_loss_backward(r.local_logits.data, r.local_probs.data, n, g, cz, aux_scale, db.data);
    return bilevel_->backward(dweights_.data(), dp1.data, da.data, dp2.data, db.data);
  }
  // top-K: combine weights + aux loss (on p) + locality loss (on p) + z-loss (on the logits)
  Tensor dprobs = dprobs_.view({n, e});
  Tensor dlogits = dlogits_.view({n, e});
  dprobs_.zero();
  dlogits_.zero();
  // global f_e; each rank's gradient is later averaged over the token group
  switch_aux_loss_backward(global_counts_.data(), n, e, k, alpha, aux_scale, dprobs.data,
                           global_tokens_);
  if (config_.locality_loss > 0.0f && n > 0) {
    const std::vector<double> target = local_distribution();
    for (int64_t j = 0; j < e; ++j) {
      // mu (log(P_e / D_l_e) + 1) / N, the same for every token of the rank
      const double p = std::max(local_mean_p_[j], 1e-30);
      const float g = static_cast<float>(aux_scale * config_.locality_loss *
                                         (std::log(p / target[j]) + 1.0) / static_cast<double>(n));
      for (int64_t t = 0; t < n; ++t) dprobs.data[t * e + j] += g;
    }
  }
  router_z_loss_backward(router_->logits().data, router_->probs().data, n, e, cz, aux_scale,
                         dlogits.data);
  return router_->backward(dweights_.data(), dprobs.data, dlogits.data);
}

RoutingPlan MoELayer::plan_global_batch(const Choices& r, int64_t n, int64_t capacity,
                                        const std::vector<int64_t>& queued_ahead) {
  const int64_t e = config_.num_experts, k = config_.top_k;
  const RoutingPriority priority =
      config_.batch_priority ? RoutingPriority::kBatchPriority : RoutingPriority::kChoiceMajor;
  Communicator* tokens = runtime_.tokens();
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

std::vector<double> MoELayer::local_distribution() const {
  const ExpertLocality& loc = runtime_.locality();
  const int64_t e = config_.num_experts;
  const int64_t local = loc.experts_on(loc.token_node);  // L
  constexpr double kEps = 1e-4;  // D_l where a token would leave its node
  std::vector<double> d(static_cast<size_t>(e));
  for (int64_t j = 0; j < e; ++j)
    d[j] = loc.expert_node[j] == loc.token_node
               ? (1.0 - kEps * static_cast<double>(e - local)) / static_cast<double>(local)
               : kEps;
  return d;
}

std::vector<int64_t> MoELayer::group_counts() const {
  const int64_t g = bilevel_->group_size();
  std::vector<int64_t> out(static_cast<size_t>(bilevel_->num_groups()), 0);
  for (size_t j = 0; j < global_counts_.size(); ++j) out[j / g] += global_counts_[j];
  return out;
}

std::vector<int64_t> MoELayer::local_index_counts() const {
  const int64_t g = bilevel_->group_size();
  std::vector<int64_t> out(static_cast<size_t>(g), 0);
  for (size_t j = 0; j < global_counts_.size(); ++j) out[j % g] += global_counts_[j];
  return out;
}

void MoELayer::compute_losses(std::span<const int32_t> experts, int64_t n) {
  const int64_t e = config_.num_experts, k = config_.top_k;
  const ExpertLocality& loc = runtime_.locality();
  // sums: sum_t p over this rank's tokens ([E], or [N] and [G] for the two levels), then
  // this rank's L_z, its KL(P || D_l), its node-local assignments
  Tensor probs, probs2, logits, logits2;
  if (bilevel_) {
    probs = last_bilevel_.node_probs, probs2 = last_bilevel_.local_probs;
    logits = last_bilevel_.node_logits, logits2 = last_bilevel_.local_logits;
  } else {
    probs = router_->probs(), logits = router_->logits();
  }
  const int64_t cols = probs.cols(), cols2 = bilevel_ ? probs2.cols() : 0;
  std::vector<double> sums(static_cast<size_t>(cols + cols2 + 5), 0.0);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < cols; ++j) sums[j] += probs.data[t * cols + j];
    for (int64_t j = 0; j < cols2; ++j) sums[cols + j] += probs2.data[t * cols2 + j];
  }
  const size_t z = static_cast<size_t>(cols + cols2), kl = z + 1, near = z + 2,
               reached = z + 3, remote = z + 4;
  sums[z] = router_z_loss(logits.data, n, cols, config_.z_loss);
  if (bilevel_) sums[z] += router_z_loss(logits2.data, n, cols2, config_.z_loss);
  if (!bilevel_ && config_.locality_loss > 0.0f && n > 0) {
    local_mean_p_.assign(sums.begin(), sums.begin() + e);
    for (double& p : local_mean_p_) p /= static_cast<double>(n);
    const std::vector<double> target = local_distribution();
    for (int64_t j = 0; j < e; ++j)  // KL(P || D_l)
      sums[kl] += local_mean_p_[j] * std::log(std::max(local_mean_p_[j], 1e-30) / target[j]);
  }
  for (int32_t x : experts) sums[near] += loc.expert_node[x] == loc.token_node ? 1.0 : 0.0;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < k; ++j) {  // count each node at its first assignment
      const int node = loc.expert_node[experts[t * k + j]];
      bool seen = false;
      for (int64_t i = 0; i < j; ++i) seen = seen || loc.expert_node[experts[t * k + i]] == node;
      if (seen) continue;
      sums[reached] += 1.0;
      if (node != loc.token_node) sums[remote] += 1.0;
    }
  }

  Communicator* tokens = runtime_.tokens();
  const int ranks = tokens ? tokens->size() : 1;
  if (ranks > 1) tokens->all_reduce<double>(sums);
  if (bilevel_) {
    const std::vector<int64_t> per_group = group_counts(), per_index = local_index_counts();
    aux_loss_ = switch_aux_loss_global(sums.data(), per_group.data(), global_tokens_, cols, k,
                                       config_.aux_loss) +
                switch_aux_loss_global(sums.data() + cols, per_index.data(), global_tokens_,
                                       cols2, k, config_.aux_loss);
  } else {
    aux_loss_ = switch_aux_loss_global(sums.data(), global_counts_.data(), global_tokens_, e,
                                       k, config_.aux_loss);
  }
  z_loss_ = sums[z] / ranks;  // mean over equal slices
  locality_loss_ = config_.locality_loss * sums[kl] / ranks;
  stats_.locality_loss = locality_loss_;
  const double assignments = static_cast<double>(global_tokens_ * k);
  stats_.node_local_fraction = assignments > 0 ? sums[near] / assignments : 0.0;
  const double tokens_total = static_cast<double>(global_tokens_);
  stats_.nodes_per_token = tokens_total > 0 ? sums[reached] / tokens_total : 0.0;
  stats_.remote_nodes_per_token = tokens_total > 0 ? sums[remote] / tokens_total : 0.0;
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
