#include "framework/moe/router.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <numeric>

#include "framework/kernels/ops.h"

namespace moe {

Router::Router(ParamStore& store, const std::string& prefix, int64_t width,
               int64_t num_experts, int64_t top_k, bool renormalize, float init_std,
               NodeLimit limit)
    : weight_(store.add({prefix + ".router.weight", Shape{num_experts, width},
                         Shard::kReplicated, Init::normal(init_std)})),
      width_(width),
      num_experts_(num_experts),
      top_k_(top_k),
      renormalize_(renormalize),
      limit_(std::move(limit)) {
  MOE_CHECK(top_k >= 1 && top_k <= num_experts, "router ", prefix, ": top_k ", top_k,
            " with ", num_experts, " experts");
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

RouterOutput Router::forward(Tensor u, std::span<const float> bias,
                             std::span<const int32_t> fixed_experts) {
  MOE_CHECK(u.cols() == width_, "router ", weight_.spec.name, ": input width ", u.cols(),
            " != ", width_);
  u_ = u;
  const int64_t n = u.rows();
  Tensor logits = logits_.view({n, num_experts_});
  Tensor probs = probs_.view({n, num_experts_});
  // logits (N, E) = u (N, C) W^T (C, E)
  ops::matmul(u, weight_.data(), logits, false, true);
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
  return {logits, probs, experts_, weights_};
}

void Router::select(std::span<const float> bias, int64_t n) {
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

void Router::compute_weights(int64_t n) {
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

void Router::weights_backward(const float* dweights, float* dp, int64_t n) const {
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

Tensor Router::backward(const float* dweights, const float* dprobs, const float* dlogits) {
  const int64_t n = u_.rows();
  const int64_t ne = n * num_experts_;
  Tensor dp = dprobs_.view({n, num_experts_});
  if (dprobs != nullptr)
    std::copy(dprobs, dprobs + ne, dp.data);
  else
    std::fill(dp.data, dp.data + ne, 0.0f);
  weights_backward(dweights, dp.data, n);

  Tensor dl = dlogits_.view({n, num_experts_});
  ops::softmax_backward(probs(), dp, dl);
  if (dlogits != nullptr) ops::axpy(1.0f, Tensor(const_cast<float*>(dlogits), dl.shape), dl);

  // dW (E, C) += dlogits^T (E, N) u (N, C)
  ops::matmul(dl, u_, weight_.dgrad(), true, false, 1.0f, 1.0f);
  // du (N, C) = dlogits (N, E) W (E, C)
  Tensor du = du_.view({n, width_});
  ops::matmul(dl, weight_.data(), du, false, false);
  return du;
}

}  // namespace moe
