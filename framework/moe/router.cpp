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
  node_experts_.resize(static_cast<size_t>(limit_.num_nodes));
  for (int64_t e = 0; e < num_experts; ++e) {
    const int node = limit_.expert_node[e];
    MOE_CHECK(node >= 0 && node < limit_.num_nodes, "router ", prefix, ": expert ", e,
              " on node ", node, " of ", limit_.num_nodes);
    node_experts_[node].push_back(static_cast<int32_t>(e));
  }
  // The worst case for a token: its M best nodes are the M smallest.
  std::vector<int64_t> sizes;
  for (const auto& experts : node_experts_) sizes.push_back(static_cast<int64_t>(experts.size()));
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
  cpu::matmul(u.data, weight_.value.data(), logits.data, n, num_experts_, width_, false,
              true, 1.0f, 0.0f);
  cpu::softmax_forward(logits.data, probs.data, n, num_experts_);

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
    cpu::topk(probs_.data(), top.data, experts_.data(), n, num_experts_, top_k_);
    return;
  }
  MOE_CHECK(bias.empty() || static_cast<int64_t>(bias.size()) == num_experts_,
            "router bias has ", bias.size(), " entries for ", num_experts_, " experts");
  Tensor scores = scores_.view({n, num_experts_});  // p + b
  for (int64_t t = 0; t < n; ++t)
    for (int64_t e = 0; e < num_experts_; ++e)
      scores[t * num_experts_ + e] =
          probs_.data()[t * num_experts_ + e] + (bias.empty() ? 0.0f : bias[e]);
  if (limited) limit_to_nodes(scores.data, n);
  cpu::topk(scores.data, top.data, experts_.data(), n, num_experts_, top_k_);
}

void Router::limit_to_nodes(float* scores, int64_t n) const {
  const int nodes = limit_.num_nodes, keep = limit_.max_nodes;
  const int64_t per_node = std::max<int64_t>(1, top_k_ / keep);  // top-(K/M) per node
#pragma omp parallel for if (n * num_experts_ > (1 << 14))
  for (int64_t t = 0; t < n; ++t) {
    float* s = scores + t * num_experts_;  // (E)
    std::vector<float> node_score(static_cast<size_t>(nodes), 0.0f), mine;
    for (int node = 0; node < nodes; ++node) {
      mine.clear();
      for (int32_t e : node_experts_[node]) mine.push_back(s[e]);
      const size_t m = std::min(mine.size(), static_cast<size_t>(per_node));
      std::partial_sort(mine.begin(), mine.begin() + static_cast<std::ptrdiff_t>(m), mine.end(),
                        std::greater<float>());
      for (size_t i = 0; i < m; ++i) node_score[node] += mine[i];
    }
    node_score[limit_.token_node] += limit_.own_node_bonus;
    std::vector<int> order(static_cast<size_t>(nodes));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return node_score[a] > node_score[b]; });
    for (int i = keep; i < nodes; ++i)
      for (int32_t e : node_experts_[order[i]]) s[e] = -std::numeric_limits<float>::infinity();
  }
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
  cpu::softmax_backward(probs_.data(), dp.data, dl.data, n, num_experts_);
  if (dlogits != nullptr) cpu::axpy(1.0f, dlogits, dl.data, ne);

  // dW (E, C) += dlogits^T (E, N) u (N, C)
  cpu::matmul(dl.data, u_.data, weight_.grad.data(), num_experts_, width_, n, true, false,
              1.0f, 1.0f);
  // du (N, C) = dlogits (N, E) W (E, C)
  Tensor du = du_.view({n, width_});
  cpu::matmul(dl.data, weight_.value.data(), du.data, n, width_, num_experts_, false,
              false, 1.0f, 0.0f);
  return du;
}

}  // namespace moe
