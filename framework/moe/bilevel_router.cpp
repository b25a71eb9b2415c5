#include "framework/moe/bilevel_router.h"

#include <algorithm>

#include "framework/kernels/ops.h"

namespace moe {

BilevelRouter::BilevelRouter(ParamStore& store, const std::string& prefix, int64_t width,
                             int64_t num_experts, int64_t num_groups, int64_t top_k,
                             bool renormalize, float init_std)
    : node_weight_(store.add({prefix + ".router.node_weight", Shape{num_groups, width},
                              Shard::kReplicated, Init::normal(init_std)})),
      local_weight_(store.add({prefix + ".router.local_weight",
                               Shape{num_groups > 0 ? num_experts / num_groups : 0, width},
                               Shard::kReplicated, Init::normal(init_std)})),
      width_(width),
      num_experts_(num_experts),
      groups_(num_groups),
      group_size_(num_groups > 0 ? num_experts / num_groups : 0),
      top_k_(top_k),
      renormalize_(renormalize) {
  MOE_CHECK(num_groups >= 1 && num_experts % num_groups == 0, "bi-level router ", prefix,
            ": ", num_experts, " experts do not split into ", num_groups, " groups");
  MOE_CHECK(top_k >= 1 && top_k <= group_size_, "bi-level router ", prefix, ": top_k ",
            top_k, " with ", group_size_, " experts per group");
}

BilevelOutput BilevelRouter::forward(Tensor u, std::span<const int32_t> fixed_experts) {
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
  return {a, p1, b, p2, experts_, weights_};
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

Tensor BilevelRouter::backward(const float* dweights, const float* dnode_probs,
                               const float* dnode_logits, const float* dlocal_probs,
                               const float* dlocal_logits) {
  const int64_t t = u_.rows();
  Tensor dp1 = dnode_.view({t, groups_});
  Tensor dp2 = dlocal_.view({t, group_size_});
  if (dnode_probs != nullptr) std::copy(dnode_probs, dnode_probs + t * groups_, dp1.data);
  else std::fill(dp1.data, dp1.data + t * groups_, 0.0f);
  if (dlocal_probs != nullptr)
    std::copy(dlocal_probs, dlocal_probs + t * group_size_, dp2.data);
  else std::fill(dp2.data, dp2.data + t * group_size_, 0.0f);

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
  if (dnode_logits != nullptr)
    ops::axpy(1.0f, Tensor(const_cast<float*>(dnode_logits), da.shape), da);
  if (dlocal_logits != nullptr)
    ops::axpy(1.0f, Tensor(const_cast<float*>(dlocal_logits), db.shape), db);

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
