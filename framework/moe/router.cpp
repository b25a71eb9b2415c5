#include "framework/moe/router.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <numeric>

#include "framework/kernels/ops.h"
#include "framework/moe/aux_loss.h"

namespace moe {

namespace {

bool on_host(const Tensor& t) { return t.device == Device::kCpu; }

}  // namespace

std::vector<double> RouterSums::pack() const {
  std::vector<double> packed = prob_sums;
  packed.insert(packed.end(), {z_loss, kl, node_local, nodes_reached, remote_nodes});
  return packed;
}

void RouterSums::unpack(std::span<const double> packed) {
  const size_t n = prob_sums.size();
  MOE_CHECK(packed.size() == n + 5, "router sums: ", packed.size(), " values for ", n,
            " probability sums");
  std::copy(packed.begin(), packed.begin() + static_cast<std::ptrdiff_t>(n), prob_sums.begin());
  z_loss = packed[n];
  kl = packed[n + 1];
  node_local = packed[n + 2];
  nodes_reached = packed[n + 3];
  remote_nodes = packed[n + 4];
}

TopKRouter::TopKRouter(ParamStore& store, const std::string& prefix, int64_t width,
                       const MoeConfig& config, float init_std, const ExpertLocality& locality)
    : weight_(store.add({prefix + ".router.weight", Shape{config.num_experts, width},
                         Shard::kReplicated, Init::normal(init_std)})),
      width_(width),
      num_experts_(config.num_experts),
      top_k_(config.top_k),
      renormalize_(config.renormalize),
      alpha_(config.aux_loss),
      z_coef_(config.z_loss),
      locality_coef_(config.locality_loss),
      locality_(locality),
      limit_{locality.expert_node, locality.num_nodes, config.max_nodes_per_token,
             locality.token_node, config.own_node_bonus},
      product_(store.device()),
      du_(store.device()) {
  const int64_t num_experts = num_experts_, top_k = top_k_;
  MOE_CHECK(top_k >= 1 && top_k <= num_experts, "router ", prefix, ": top_k ", top_k,
            " with ", num_experts, " experts");
  if (config.router_skew > 0.0f)  // Zipf popularity p_e ~ (e + 1)^-s, as a logit bias
    for (int64_t e = 0; e < num_experts; ++e)
      skew_.push_back(-config.router_skew * std::log(static_cast<float>(e + 1)));
  if (!limit_.binds(top_k)) return;
  MOE_CHECK(static_cast<int64_t>(limit_.expert_node.size()) == num_experts, "router ", prefix,
            ": node of ", limit_.expert_node.size(), " experts, expected ", num_experts);
  MOE_CHECK(limit_.token_node >= 0 && limit_.token_node < limit_.num_nodes, "router ", prefix,
            ": tokens on node ", limit_.token_node, " of ", limit_.num_nodes);
  std::vector<int64_t> sizes(static_cast<size_t>(limit_.num_nodes), 0);  // experts per node
  for (int64_t e = 0; e < num_experts; ++e) {
    const int node = limit_.expert_node[e];
    MOE_CHECK(node >= 0 && node < limit_.num_nodes, "router ", prefix, ": expert ", e,
              " on node ", node, " of ", limit_.num_nodes);
    ++sizes[node];
  }
  // The worst case for a token: its M best nodes are the M smallest.
  std::sort(sizes.begin(), sizes.end());
  int64_t reachable = 0;
  for (int m = 0; m < limit_.max_nodes; ++m) reachable += sizes[m];
  MOE_USER_CHECK(reachable >= top_k, "moe.max_nodes_per_token: ", limit_.max_nodes,
                 " nodes may hold only ", reachable, " experts, fewer than moe.top_k = ",
                 top_k);
}

RouterChoices TopKRouter::forward(Tensor u, std::span<const float> bias,
                                  std::span<const int32_t> fixed_experts) {
  MOE_CHECK(u.cols() == width_, "router ", weight_.spec.name, ": input width ", u.cols(),
            " != ", width_);
  u_ = u;
  const int64_t n = u.rows();
  Tensor logits = logits_.view({n, num_experts_});
  Tensor probs = probs_.view({n, num_experts_});
  // logits (N, E) = u (N, C) W^T (C, E), on u's device, then in host memory
  const Tensor product = on_host(u) ? logits : product_.view({n, num_experts_});
  ops::matmul(u, weight_.data(), product, false, true);
  if (!on_host(u)) ops::copy(product, logits);
  // moe.router_skew: a constant per expert, so the gradients through the logits keep
  // their form
  if (!skew_.empty()) ops::add_rows(logits, Tensor(skew_.data(), Shape{1, num_experts_}), logits);
  ops::softmax_forward(logits, probs);

  if (fixed_experts.empty()) {
    select(bias, n);
  } else {
    MOE_CHECK(static_cast<int64_t>(fixed_experts.size()) == n * top_k_, "router ",
              weight_.spec.name, ": ", fixed_experts.size(), " fixed choices for ", n,
              " tokens of top-", top_k_);
    experts_.assign(fixed_experts.begin(), fixed_experts.end());
  }
  compute_weights(n);
  return {experts_, weights_};
}

void TopKRouter::select(std::span<const float> bias, int64_t n) {
  experts_.resize(static_cast<size_t>(n * top_k_));
  Tensor top = top_values_.view({n, top_k_});
  const bool limited = limit_.binds(top_k_);
  if (bias.empty() && !limited) {
    ops::topk(probs(), top, experts_);
    return;
  }
  MOE_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == num_experts_,
            "router bias has ", bias.size(), " entries for ", num_experts_, " experts");
  Tensor scores = scores_.view({n, num_experts_});  // p + b
  if (bias.empty())
    std::copy(probs_.data(), probs_.data() + n * num_experts_, scores.data);
  else
    ops::add_rows(probs(), Tensor(const_cast<float*>(bias.data()), {1, num_experts_}), scores);
  if (limited)
    ops::limit_to_nodes(scores, limit_.expert_node, limit_.num_nodes, limit_.max_nodes,
                        std::max<int64_t>(1, top_k_ / limit_.max_nodes),  // top-(K/M) per node
                        limit_.token_node, limit_.own_node_bonus);
  ops::topk(scores, top, experts_);
}

void TopKRouter::compute_weights(int64_t n) {
  weights_.resize(static_cast<size_t>(n * top_k_));
  const float* p = probs_.data();
  for (int64_t t = 0; t < n; ++t) {
    float* w = weights_.data() + t * top_k_;
    const int32_t* chosen = experts_.data() + t * top_k_;
    float sum = 0.0f;  // sum_k p_{e_k}
    for (int64_t k = 0; k < top_k_; ++k) {
      w[k] = p[t * num_experts_ + chosen[k]];
      sum += w[k];
    }
    if (renormalize_)
      for (int64_t k = 0; k < top_k_; ++k) w[k] /= sum;
  }
}

void TopKRouter::weights_backward(const float* dweights, float* dp, int64_t n) const {
  const float* p = probs_.data();
  for (int64_t t = 0; t < n; ++t) {
    const float* dw = dweights + t * top_k_;
    const float* w = weights_.data() + t * top_k_;
    const int32_t* chosen = experts_.data() + t * top_k_;
    float* dp_t = dp + t * num_experts_;
    if (!renormalize_) {
      for (int64_t k = 0; k < top_k_; ++k) dp_t[chosen[k]] += dw[k];
      continue;
    }
    // w_k = p_k / s: dp_j = (dw_j - sum_k dw_k w_k) / s
    float sum = 0.0f, dot = 0.0f;
    for (int64_t k = 0; k < top_k_; ++k) {
      sum += p[t * num_experts_ + chosen[k]];
      dot += dw[k] * w[k];
    }
    for (int64_t k = 0; k < top_k_; ++k) dp_t[chosen[k]] += (dw[k] - dot) / sum;
  }
}

std::vector<double> TopKRouter::local_distribution() const {
  const int64_t e = num_experts_;
  const int64_t local = locality_.experts_on(locality_.token_node);  // L
  constexpr double kEps = 1e-4;  // D_l where a token would leave its node
  std::vector<double> d(static_cast<size_t>(e));
  for (int64_t j = 0; j < e; ++j)
    d[j] = locality_.expert_node[j] == locality_.token_node
               ? (1.0 - kEps * static_cast<double>(e - local)) / static_cast<double>(local)
               : kEps;
  return d;
}

void TopKRouter::add_sums(RouterSums& sums) {
  const int64_t n = u_.rows(), e = num_experts_;
  const float* p = probs_.data();
  sums.prob_sums.assign(static_cast<size_t>(e), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < e; ++j) sums.prob_sums[j] += p[t * e + j];
  sums.z_loss += router_z_loss(logits_.data(), n, e, z_coef_);
  if (locality_coef_ <= 0.0f || n == 0) return;
  local_mean_p_ = sums.prob_sums;
  for (double& m : local_mean_p_) m /= static_cast<double>(n);
  const std::vector<double> target = local_distribution();
  for (int64_t j = 0; j < e; ++j)  // KL(P || D_l)
    sums.kl += local_mean_p_[j] * std::log(std::max(local_mean_p_[j], 1e-30) / target[j]);
}

AuxLosses TopKRouter::aux_losses(const RouterSums& global, const GlobalRouting& g) const {
  return {switch_aux_loss_global(global.prob_sums.data(), g.counts.data(), g.tokens,
                                 num_experts_, top_k_, alpha_),
          locality_coef_ * global.kl / g.ranks};
}

Tensor TopKRouter::backward(std::span<const float> dweights, const GlobalRouting& g,
                            float scale) {
  const int64_t n = u_.rows(), e = num_experts_;
  // the losses on p: the balance loss (global f_e; each rank's gradient is later
  // averaged over the token group) and the locality loss
  Tensor dp = dprobs_.view({n, e});
  dprobs_.zero();
  switch_aux_loss_backward(g.counts.data(), n, e, top_k_, alpha_, scale, dp.data, g.tokens);
  if (locality_coef_ > 0.0f && n > 0) {
    const std::vector<double> target = local_distribution();
    for (int64_t j = 0; j < e; ++j) {
      // mu (log(P_e / D_l_e) + 1) / N, the same for every token of the rank
      const double p = std::max(local_mean_p_[j], 1e-30);
      const float grad = static_cast<float>(scale * locality_coef_ *
                                            (std::log(p / target[j]) + 1.0) /
                                            static_cast<double>(n));
      for (int64_t t = 0; t < n; ++t) dp.data[t * e + j] += grad;
    }
  }
  // the z-loss on the logits
  Tensor dz = dz_.view({n, e});
  dz_.zero();
  router_z_loss_backward(logits_.data(), probs_.data(), n, e, z_coef_, scale, dz.data);
  // the combine weights, then through the softmax
  weights_backward(dweights.data(), dp.data, n);
  Tensor dl = dlogits_.view({n, e});
  ops::softmax_backward(probs(), dp, dl);
  ops::axpy(1.0f, dz, dl);

  // to u's device for the two products
  if (!on_host(u_)) {
    const Tensor on_device = product_.view({n, e});
    ops::copy(dl, on_device);
    dl = on_device;
  }
  // dW (E, C) += dlogits^T (E, N) u (N, C)
  ops::matmul(dl, u_, weight_.dgrad(), true, false, 1.0f, 1.0f);
  // du (N, C) = dlogits (N, E) W (E, C)
  Tensor du = du_.view({n, width_});
  ops::matmul(dl, weight_.data(), du, false, false);
  return du;
}

}  // namespace moe
