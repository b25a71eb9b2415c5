#include "framework/moe/moe_layer.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "framework/kernels/ops.h"
#include "framework/moe/aux_loss.h"
#include "framework/moe/fssdp_dispatcher.h"
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
  if (config.routing == RoutingKind::kBilevel)
    return std::make_unique<BilevelRouter>(store, prefix, width, config, init_std);
  return std::make_unique<TopKRouter>(store, prefix, width, config, init_std, locality);
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
      experts_(store, prefix, width, config.expert_ffn, runtime.placement(), init_std,
               out_std, config.expert_act, runtime.etp()),
      shared_(make_shared_experts(store, prefix, width, config, init_std, out_std, runtime.tp(),
                                  runtime.sequence_parallel())),
      bias_(store.add_buffer(prefix + ".router.bias", Shape{config.num_experts})),
      window_(runtime.load_window() > 1
                  ? std::make_unique<LoadWindow>(store, prefix + ".experts",
                                                 runtime.load_window(), runtime.fssdp()->size(),
                                                 config.num_experts)
                  : nullptr),
      block_(block_of(prefix)),
      y_(store.device()),
      du_(store.device()),
      d_expert_out_(store.device()) {
  MOE_CHECK(runtime.placement().num_experts == config.num_experts, "MoE layer ", prefix,
            ": placement of ", runtime.placement().num_experts, " experts, config has ",
            config.num_experts);
}

TopKRouter& MoELayer::router() {
  auto* topk = dynamic_cast<TopKRouter*>(router_.get());
  MOE_CHECK(topk != nullptr, "MoE layer: router() of a bi-level layer");
  return *topk;
}

BilevelRouter* MoELayer::bilevel_router() { return dynamic_cast<BilevelRouter*>(router_.get()); }

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
  std::span<const float> bias;
  if (config_.bias_balance) bias = bias_.values();
  const RouterChoices r = router_->forward(u, bias, fixed);
  last_experts_.assign(r.experts.begin(), r.experts.end());
  // plan: capacity and admission of the global batch
  const std::vector<int64_t> ahead = gather_choice_counts(r.experts, n);
  const int64_t capacity = expert_capacity(config_.capacity_factor, global_tokens_, k, e);
  RoutingPlan routing = plan_global_batch(r, n, capacity, ahead);
  routing.owner_bounds = experts_.owner_bounds();  // fssdp: the layer's re-planned owners
  if (window_) routing.window_counts = window_->with(routing);
  auto plan = std::make_shared<const RoutingPlan>(std::move(routing));
  compute_losses(r.experts, n);
  compute_stats(capacity);
  // dispatch -> experts -> combine
  Dispatcher& dispatcher = runtime_.dispatcher();
  handle_.emplace(dispatcher.dispatch(u, std::move(plan)));
  if (Communicator* sharded = runtime_.fssdp())  // this step's replicas, from their owners
    experts_.materialize(state_as<FssdpState>(*handle_, "fssdp").items, *sharded);
  expert_out_ = experts_.forward(handle_->rows(), handle_->expert_offsets(),
                                 dispatcher.expert_rows(*handle_, Dispatcher::ExpertRows::kOutput));
  if (runtime_.rematerialize()) experts_.release_replicas();  // fetched again for backward
  round_exchanged_rows(expert_out_);
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
  Dispatcher& dispatcher = runtime_.dispatcher();
  Tensor d_expert_out = dispatcher.expert_rows(*handle_, Dispatcher::ExpertRows::kOutputGrad);
  if (d_expert_out.data == nullptr) d_expert_out = d_expert_out_.view(expert_out_.shape);
  dweights_.resize(static_cast<size_t>(n * k));
  dispatcher.combine_backward(*handle_, expert_out_, dy, d_expert_out, dweights_.data());
  if (runtime_.rematerialize()) experts_.rematerialize();  // what forward released
  const Tensor d_rows = experts_.backward(
      d_expert_out, dispatcher.expert_rows(*handle_, Dispatcher::ExpertRows::kInputGrad));
  if (runtime_.fssdp()) experts_.return_gradients();  // the replicas' to their owners
  round_exchanged_rows(d_rows);
  Tensor du = du_.view({n, width_});
  dispatcher.dispatch_backward(*handle_, d_rows, du);

  // Under sequence parallelism the router losses are normalised by this rank's N/tp
  // rows, but the router gradient is summed over tp before the mean over dp.
  const float router_scale =
      runtime_.sequence_parallel() ? aux_scale / static_cast<float>(tp_size(runtime_.tp()))
                                 : aux_scale;
  const Tensor du_router = router_->backward(dweights_, global_routing(), router_scale);
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

GlobalRouting MoELayer::global_routing() const {
  Communicator* tokens = runtime_.tokens();
  return {global_counts_, global_tokens_, tokens ? tokens->size() : 1};
}

RoutingPlan MoELayer::plan_global_batch(const RouterChoices& r, int64_t n, int64_t capacity,
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

void MoELayer::compute_losses(std::span<const int32_t> experts, int64_t n) {
  const int64_t k = config_.top_k;
  const ExpertLocality& loc = runtime_.locality();
  RouterSums sums;
  router_->add_sums(sums);
  for (int32_t x : experts) sums.node_local += loc.expert_node[x] == loc.token_node ? 1.0 : 0.0;
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < k; ++j) {  // count each node at its first assignment
      const int node = loc.expert_node[experts[t * k + j]];
      bool seen = false;
      for (int64_t i = 0; i < j; ++i) seen = seen || loc.expert_node[experts[t * k + i]] == node;
      if (seen) continue;
      sums.nodes_reached += 1.0;
      if (node != loc.token_node) sums.remote_nodes += 1.0;
    }
  }
  const GlobalRouting g = global_routing();
  if (g.ranks > 1) {  // one all-reduce over the token group
    std::vector<double> packed = sums.pack();
    runtime_.tokens()->all_reduce<double>(packed);
    sums.unpack(packed);
  }
  const AuxLosses aux = router_->aux_losses(sums, g);
  aux_loss_ = aux.balance;
  locality_loss_ = aux.locality;
  z_loss_ = sums.z_loss / g.ranks;  // mean over equal slices
  stats_.locality_loss = locality_loss_;
  const double assignments = static_cast<double>(global_tokens_ * k);
  stats_.node_local_fraction = assignments > 0 ? sums.node_local / assignments : 0.0;
  const double tokens_total = static_cast<double>(global_tokens_);
  stats_.nodes_per_token = tokens_total > 0 ? sums.nodes_reached / tokens_total : 0.0;
  stats_.remote_nodes_per_token = tokens_total > 0 ? sums.remote_nodes / tokens_total : 0.0;
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
  const std::span<float> bias = bias_.values();
  double mean_load = 0.0;
  for (int64_t i = 0; i < e; ++i) mean_load += static_cast<double>(global_load[i]);
  mean_load /= static_cast<double>(e);
  for (int64_t i = 0; i < e; ++i) {
    const double gap = mean_load - static_cast<double>(global_load[i]);
    // b_e += gamma * sign(mean_load - load_e): underloaded experts become likelier
    if (gap > 0.0) bias[i] += config_.bias_update_rate;
    if (gap < 0.0) bias[i] -= config_.bias_update_rate;
  }
}

void MoELayer::round_exchanged_rows(Tensor rows) {
  if (config_.a2a_dtype != Precision::kBf16) return;
  Tensor rounded = rows16_.view(rows.shape);
  ops::convert(rows, rounded);
  ops::convert(rounded, rows);
}

void MoELayer::freeze_routing(bool frozen) {
  MOE_CHECK(!frozen || !last_experts_.empty(),
            "MoE layer: freeze_routing needs a forward to take the choices from");
  frozen_ = frozen;
}

}  // namespace moe
