#include "framework/moe/bilevel_router.h"

#include <algorithm>

#include "framework/kernels/ops.h"
#include "framework/moe/aux_loss.h"

namespace moe {

namespace {

int64_t group_size_of(const MoeConfig& c) {
  return c.node_groups > 0 ? c.num_experts / c.node_groups : 0;
}

}  // namespace

BilevelRouter::BilevelRouter(ParamStore& store, const std::string& prefix, int64_t width,
                             const MoeConfig& config, float init_std)
    : node_weight_(store.add({prefix + ".router.node_weight", Shape{config.node_groups, width},
                              Shard::kReplicated, Init::normal(init_std)})),
      local_weight_(store.add({prefix + ".router.local_weight",
                               Shape{group_size_of(config), width},
                               Shard::kReplicated, Init::normal(init_std)})),
      width_(width),
      num_experts_(config.num_experts),
      groups_(config.node_groups),
      group_size_(group_size_of(config)),
      top_k_(config.top_k),
      renormalize_(config.renormalize),
      alpha_(config.aux_loss),
      z_coef_(config.z_loss) {
  const int64_t num_groups = groups_, num_experts = num_experts_, top_k = top_k_;
  MOE_CHECK(num_groups >= 1 && num_experts % num_groups == 0, "bi-level router ", prefix,
            ": ", num_experts, " experts do not split into ", num_groups, " groups");
  MOE_CHECK(top_k >= 1 && top_k <= group_size_, "bi-level router ", prefix, ": top_k ",
            top_k, " with ", group_size_, " experts per group");
}

RouterChoices BilevelRouter::forward(Tensor u, std::span<const float> bias,
                                     std::span<const int32_t> fixed_experts) {
  MOE_CHECK(bias.empty(), "bi-level router: no selection bias");
  MOE_CHECK(u.cols() == width_, "bi-level router ", node_weight_.spec.name, ": input width ",
            u.cols(), " != ", width_);
  u_ = u;
  const int64_t t = u.rows();
  Tensor a = node_logits_.view({t, groups_}), p1 = node_probs_.view({t, groups_});
  Tensor b = local_logits_.view({t, group_size_}), p2 = local_probs_.view({t, group_size_});
  // a (T, N) = u W1^T; b (T, G) = u W2^T
  ops::matmul(u, node_weight_.data(), a, false, true);
  ops::matmul(u, local_weight_.data(), b, false, true);
  ops::softmax_forward(a, p1);
  ops::softmax_forward(b, p2);

  node_choice_.resize(static_cast<size_t>(t));
  local_choice_.resize(static_cast<size_t>(t * top_k_));
  experts_.resize(static_cast<size_t>(t * top_k_));
  if (fixed_experts.empty()) {
    for (int64_t i = 0; i < t; ++i) {  // argmax, ties to the lower group
      const float* row = p1.data + i * groups_;
      node_choice_[i] = static_cast<int32_t>(std::max_element(row, row + groups_) - row);
    }
    Tensor top = top_values_.view({t, top_k_});
    ops::topk(p2, top, local_choice_);
  } else {
    MOE_CHECK(static_cast<int64_t>(fixed_experts.size()) == t * top_k_,
              "bi-level router: ", fixed_experts.size(), " fixed choices for ", t, " tokens");
    for (int64_t i = 0; i < t; ++i) {
      node_choice_[i] = static_cast<int32_t>(fixed_experts[i * top_k_] / group_size_);
      for (int64_t k = 0; k < top_k_; ++k) {
        const int32_t e = fixed_experts[i * top_k_ + k];
        MOE_CHECK(e / group_size_ == node_choice_[i], "bi-level router: token ", i,
                  " fixed to experts of two groups");
        local_choice_[i * top_k_ + k] = static_cast<int32_t>(e % group_size_);
      }
    }
  }
  for (int64_t i = 0; i < t; ++i)
    for (int64_t k = 0; k < top_k_; ++k)
      experts_[i * top_k_ + k] =
          static_cast<int32_t>(node_choice_[i] * group_size_ + local_choice_[i * top_k_ + k]);
  compute_weights(t);
  return {experts_, weights_};
}

void BilevelRouter::compute_weights(int64_t t) {
  weights_.resize(static_cast<size_t>(t * top_k_));
  q_.resize(weights_.size());
  const float* p1 = node_probs_.data();
  const float* p2 = local_probs_.data();
  for (int64_t i = 0; i < t; ++i) {
    float* q = q_.data() + i * top_k_;
    float sum = 0.0f;  // sum_k p2[j_k]
    for (int64_t k = 0; k < top_k_; ++k) {
      q[k] = p2[i * group_size_ + local_choice_[i * top_k_ + k]];
      sum += q[k];
    }
    if (renormalize_)
      for (int64_t k = 0; k < top_k_; ++k) q[k] /= sum;
    const float gate = p1[i * groups_ + node_choice_[i]];  // p1[n*]
    for (int64_t k = 0; k < top_k_; ++k) weights_[i * top_k_ + k] = gate * q[k];
  }
}

std::vector<int64_t> BilevelRouter::group_counts(std::span<const int64_t> counts) const {
  std::vector<int64_t> out(static_cast<size_t>(groups_), 0);
  for (size_t j = 0; j < counts.size(); ++j) out[j / group_size_] += counts[j];
  return out;
}

std::vector<int64_t> BilevelRouter::local_index_counts(std::span<const int64_t> counts) const {
  std::vector<int64_t> out(static_cast<size_t>(group_size_), 0);
  for (size_t j = 0; j < counts.size(); ++j) out[j % group_size_] += counts[j];
  return out;
}

void BilevelRouter::add_sums(RouterSums& sums) {
  const int64_t t = u_.rows();
  const float* p1 = node_probs_.data();
  const float* p2 = local_probs_.data();
  sums.prob_sums.assign(static_cast<size_t>(groups_ + group_size_), 0.0);
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t j = 0; j < groups_; ++j) sums.prob_sums[j] += p1[i * groups_ + j];
    for (int64_t j = 0; j < group_size_; ++j)
      sums.prob_sums[groups_ + j] += p2[i * group_size_ + j];
  }
  sums.z_loss += router_z_loss(node_logits_.data(), t, groups_, z_coef_);
  sums.z_loss += router_z_loss(local_logits_.data(), t, group_size_, z_coef_);
}

AuxLosses BilevelRouter::aux_losses(const RouterSums& global, const GlobalRouting& g) const {
  const std::vector<int64_t> per_group = group_counts(g.counts);
  const std::vector<int64_t> per_index = local_index_counts(g.counts);
  return {switch_aux_loss_global(global.prob_sums.data(), per_group.data(), g.tokens, groups_,
                                 top_k_, alpha_) +
              switch_aux_loss_global(global.prob_sums.data() + groups_, per_index.data(),
                                     g.tokens, group_size_, top_k_, alpha_),
          0.0};
}

Tensor BilevelRouter::backward(std::span<const float> dweights_span, const GlobalRouting& g,
                               float scale) {
  const int64_t t = u_.rows();
  const float* dweights = dweights_span.data();
  // per level: balance on p (global counts), z-loss on the logits
  Tensor dp1 = dnode_.view({t, groups_});
  Tensor dp2 = dlocal_.view({t, group_size_});
  Tensor dz1 = dnode_z_.view({t, groups_}), dz2 = dlocal_z_.view({t, group_size_});
  for (Buffer* b : {&dnode_, &dlocal_, &dnode_z_, &dlocal_z_}) b->zero();
  const std::vector<int64_t> per_group = group_counts(g.counts);
  const std::vector<int64_t> per_index = local_index_counts(g.counts);
  switch_aux_loss_backward(per_group.data(), t, groups_, top_k_, alpha_, scale, dp1.data,
                           g.tokens);
  switch_aux_loss_backward(per_index.data(), t, group_size_, top_k_, alpha_, scale, dp2.data,
                           g.tokens);
  router_z_loss_backward(node_logits_.data(), node_probs_.data(), t, groups_, z_coef_, scale,
                         dz1.data);
  router_z_loss_backward(local_logits_.data(), local_probs_.data(), t, group_size_, z_coef_,
                         scale, dz2.data);

  const float* p1 = node_probs_.data();
  const float* p2 = local_probs_.data();
  for (int64_t i = 0; i < t; ++i) {
    const float* dw = dweights + i * top_k_;
    const float* q = q_.data() + i * top_k_;
    const int32_t* j = local_choice_.data() + i * top_k_;
    const float gate = p1[i * groups_ + node_choice_[i]];
    // w_k = gate q_k: dgate = sum_k dw_k q_k, dq_k = dw_k gate
    float dgate = 0.0f, dot = 0.0f, sum = 0.0f;
    for (int64_t k = 0; k < top_k_; ++k) {
      dgate += dw[k] * q[k];
      dot += dw[k] * gate * q[k];
      sum += p2[i * group_size_ + j[k]];
    }
    dp1[i * groups_ + node_choice_[i]] += dgate;
    for (int64_t k = 0; k < top_k_; ++k) {
      const float dq = dw[k] * gate;
      // raw: dp2_j += dq;  renorm (q = p2_j / s): dp2_j += (dq_j - sum_k dq_k q_k) / s
      dp2[i * group_size_ + j[k]] += renormalize_ ? (dq - dot) / sum : dq;
    }
  }
  Tensor da = dnode_logits_.view({t, groups_});
  Tensor db = dlocal_logits_.view({t, group_size_});
  ops::softmax_backward(Tensor(const_cast<float*>(p1), da.shape), dp1, da);
  ops::softmax_backward(Tensor(const_cast<float*>(p2), db.shape), dp2, db);
  ops::axpy(1.0f, dz1, da);
  ops::axpy(1.0f, dz2, db);

  // dW1 (N, C) += da^T u; dW2 (G, C) += db^T u
  ops::matmul(da, u_, node_weight_.dgrad(), true, false, 1.0f, 1.0f);
  ops::matmul(db, u_, local_weight_.dgrad(), true, false, 1.0f, 1.0f);
  // du (T, C) = da W1 + db W2
  Tensor du = du_.view({t, width_});
  ops::matmul(da, node_weight_.data(), du, false, false);
  ops::matmul(db, local_weight_.data(), du, false, false, 1.0f, 1.0f);
  return du;
}

}  // namespace moe
