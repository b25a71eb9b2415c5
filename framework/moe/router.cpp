#include "framework/moe/router.h"

#include <algorithm>

#include "framework/kernels/ops.h"

namespace moe {

Router::Router(ParamStore& store, const std::string& prefix, int64_t width,
               int64_t num_experts, int64_t top_k, bool renormalize, float init_std)
    : weight_(store.add({prefix + ".router.weight", Shape{num_experts, width},
                         Shard::kReplicated, Init::normal(init_std)})),
      width_(width),
      num_experts_(num_experts),
      top_k_(top_k),
      renormalize_(renormalize) {
  MOE_CHECK(top_k >= 1 && top_k <= num_experts, "router ", prefix, ": top_k ", top_k,
            " with ", num_experts, " experts");
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
  if (bias.empty()) {
    cpu::topk(probs_.data(), top.data, experts_.data(), n, num_experts_, top_k_);
    return;
  }
  MOE_CHECK(static_cast<int64_t>(bias.size()) == num_experts_, "router bias has ",
            bias.size(), " entries for ", num_experts_, " experts");
  Tensor scores = scores_.view({n, num_experts_});  // p + b
  for (int64_t t = 0; t < n; ++t)
    for (int64_t e = 0; e < num_experts_; ++e)
      scores[t * num_experts_ + e] = probs_.data()[t * num_experts_ + e] + bias[e];
  cpu::topk(scores.data, top.data, experts_.data(), n, num_experts_, top_k_);
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
