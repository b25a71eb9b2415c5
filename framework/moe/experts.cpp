#include "framework/moe/experts.h"

#include "framework/kernels/ops.h"

namespace moe {

namespace {

// This rank's block of an expert weight: the experts `placement` puts here, and hidden
// block split.rank of split.size along `hidden_dim` (1: (E, F, C), 2: (E, C, F)).
Param& add_expert_param(ParamStore& store, std::string name, int64_t rows, int64_t cols,
                        const ExpertPlacement& placement, ExpertTensorSplit split,
                        int hidden_dim, float std) {
  const Shard shard = hidden_dim == 1 ? Shard::kExpertColumn : Shard::kExpertRow;
  ParamSpec spec{std::move(name), Shape{placement.num_experts, rows, cols}, shard,
                 Init::normal(std)};
  const int64_t hidden = hidden_dim == 1 ? rows : cols;
  MOE_CHECK(split.size > 0 && split.rank >= 0 && split.rank < split.size &&
                hidden % split.size == 0,
            "experts ", spec.name, ": hidden width ", hidden, " cannot be split over etp = ",
            split.size);
  const int64_t block = hidden / split.size;
  if (hidden_dim == 1)
    return store.add_shard(std::move(spec), Shape{placement.num_local(), block, cols},
                           {placement.first_local(), split.rank * block, 0});
  return store.add_shard(std::move(spec), Shape{placement.num_local(), rows, block},
                         {placement.first_local(), 0, split.rank * block});
}

}  // namespace

GroupedExperts::GroupedExperts(ParamStore& store, const std::string& prefix, int64_t width,
                               int64_t hidden, const ExpertPlacement& placement,
                               float init_std, float out_std, ExpertActivation activation,
                               ExpertTensorSplit split)
    : w_gate_(activation == ExpertActivation::kSwiGLU
                  ? &add_expert_param(store, prefix + ".experts.w_gate", hidden, width,
                                      placement, split, 1, init_std)
                  : nullptr),
      w_up_(add_expert_param(store, prefix + (w_gate_ ? ".experts.w_up" : ".experts.w_fc1"),
                             hidden, width, placement, split, 1, init_std)),
      w_down_(add_expert_param(store,
                               prefix + (w_gate_ ? ".experts.w_down" : ".experts.w_fc2"),
                               width, hidden, placement, split, 2, out_std)),
      width_(width),
      hidden_(hidden / split.size),
      first_expert_(placement.first_local()),
      num_local_(placement.num_local()) {}

Tensor GroupedExperts::forward(Tensor x, std::span<const int64_t> offsets) {
  const int64_t s = x.rows();
  MOE_CHECK(x.cols() == width_, "experts ", w_up_.spec.name, ": input width ", x.cols(),
            " != ", width_);
  MOE_CHECK(static_cast<int64_t>(offsets.size()) == num_local_ + 1 && offsets.front() == 0 &&
                offsets.back() == s,
            "experts ", w_up_.spec.name, ": offsets do not split ", s, " rows over ",
            num_local_, " local experts");
  x_ = x;
  if (mixed()) {
    round_weights();
    x_ = x16_.view({s, width_});
    ops::convert(x, x_);
  }
  offsets_.assign(offsets.begin(), offsets.end());
  Tensor y = y_.view({s, width_});
  ops::expert_ffn_forward(x_, offsets_, weights(), activations(s), y);
  return y;
}

void GroupedExperts::round_weights() {
  if (w_gate_) ops::convert(w_gate_->data(), w_gate16_.view(w_gate_->local_shape));
  ops::convert(w_up_.data(), w_up16_.view(w_up_.local_shape));
  ops::convert(w_down_.data(), w_down16_.view(w_down_.local_shape));
}

ops::ExpertWeights GroupedExperts::weights() {
  if (mixed())
    return {w_gate_ ? w_gate16_.view_of(w_gate_->local_shape) : Tensor(),
            w_up16_.view_of(w_up_.local_shape), w_down16_.view_of(w_down_.local_shape)};
  return {w_gate_ ? w_gate_->data() : Tensor(), w_up_.data(), w_down_.data()};
}

ops::ExpertWeights GroupedExperts::weight_grads() {
  return {w_gate_ ? w_gate_->dgrad() : Tensor(), w_up_.dgrad(), w_down_.dgrad()};
}

ops::ExpertActivations GroupedExperts::activations(int64_t rows) {
  Tensor h = mixed() ? h16_.view({rows, hidden_}) : h_.view({rows, hidden_});
  return {gate_.view({rows, hidden_}), up_.view({rows, hidden_}), h};
}

Tensor GroupedExperts::backward(Tensor dy) {
  const int64_t s = x_.rows();
  MOE_CHECK(dy.rows() == s && dy.cols() == width_, "experts ", w_up_.spec.name,
            ": gradient shape ", dy.shape.str());
  Tensor dx = dx_.view({s, width_});
  Buffer& dgate = mixed() ? dgate16_ : dgate_;
  Buffer& dup = mixed() ? dup16_ : dup_;
  const ops::ExpertActivations d_acts{dgate.view({s, hidden_}), dup.view({s, hidden_}),
                                      dh_.view({s, hidden_})};
  if (mixed()) {
    Tensor dy16 = dy16_.view({s, width_});
    ops::convert(dy, dy16);
    dy = dy16;
  }
  ops::expert_ffn_backward(x_, offsets_, weights(), activations(s), dy, weight_grads(), d_acts,
                           dx);
  return dx;
}

}  // namespace moe
