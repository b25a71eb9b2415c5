#include "framework/moe/experts.h"

#include <algorithm>

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
      num_local_(placement.num_local()),
      gate_(store.device()),
      up_(store.device()),
      h_(store.device()),
      y_(store.device()),
      dh_(store.device()),
      dgate_(store.device()),
      dup_(store.device()),
      dx_(store.device()),
      w_gate16_(store.device(), DType::kBF16),
      w_up16_(store.device(), DType::kBF16),
      w_down16_(store.device(), DType::kBF16),
      x16_(store.device(), DType::kBF16),
      h16_(store.device(), DType::kBF16),
      dy16_(store.device(), DType::kBF16),
      dgate16_(store.device(), DType::kBF16),
      dup16_(store.device(), DType::kBF16) {}

void GroupedExperts::set_owners(const ExpertPlacement& owners) {
  for (const Param* p : params())
    MOE_CHECK(p->local_shape[0] == owners.num_local() && p->offset[0] == owners.first_local(),
              "experts: ", p->spec.name, " holds experts from ", p->offset[0], " (",
              p->local_shape[0], "), the owners give ", owners.first_local(), " (",
              owners.num_local(), ")");
  first_expert_ = owners.first_local();
  num_local_ = owners.num_local();
  owner_bounds_.resize(static_cast<size_t>(owners.ep_size) + 1);
  for (int r = 0; r <= owners.ep_size; ++r) owner_bounds_[r] = owners.first(r);
}

Tensor GroupedExperts::forward(Tensor x, std::span<const int64_t> offsets, Tensor out) {
  const int64_t s = x.rows();
  MOE_CHECK(x.cols() == width_, "experts ", w_up_.spec.name, ": input width ", x.cols(),
            " != ", width_);
  MOE_CHECK(static_cast<int64_t>(offsets.size()) == num_computed() + 1 &&
                offsets.front() == 0 && offsets.back() == s,
            "experts ", w_up_.spec.name, ": offsets do not split ", s, " rows over ",
            num_computed(), " local experts");
  x_ = x;
  if (mixed()) {
    round_weights();
    x_ = x16_.view({s, width_});
    ops::convert(x, x_);
  }
  offsets_.assign(offsets.begin(), offsets.end());
  Tensor y = out.data != nullptr ? out : y_.view({s, width_});
  check_rows_of(y, s, "output");
  ops::expert_ffn_forward(x_, offsets_, weights(), activations(s), y);
  return y;
}

void GroupedExperts::check_rows_of(Tensor t, int64_t rows, const char* what) const {
  MOE_CHECK(t.rows() == rows && t.cols() == width_ && t.device == w_up_.data().device,
            "experts ", w_up_.spec.name, ": ", what, " rows ", t.shape.str(), ", want (", rows,
            ", ", width_, ") on the weights' device");
}

void GroupedExperts::round_weights() {
  if (w_gate_) ops::convert(w_gate_->data(), w_gate16_.view(w_gate_->local_shape));
  ops::convert(w_up_.data(), w_up16_.view(w_up_.local_shape));
  ops::convert(w_down_.data(), w_down16_.view(w_down_.local_shape));
}

ops::ExpertWeights GroupedExperts::weights() {
  if (group_ != nullptr) {  // fssdp (fp32 only: validate.cpp refuses it with bf16)
    auto copy = [&](const Param* p, size_t k) {
      const Shape& b = p->local_shape;  // (E_local, ., .)
      return copies_[k].view_of(Shape{num_computed(), b[1], b[2]});
    };
    const size_t up = w_gate_ ? 1 : 0;
    return {w_gate_ ? copy(w_gate_, 0) : Tensor(), copy(&w_up_, up), copy(&w_down_, up + 1)};
  }
  if (mixed())
    return {w_gate_ ? w_gate16_.view_of(w_gate_->local_shape) : Tensor(),
            w_up16_.view_of(w_up_.local_shape), w_down16_.view_of(w_down_.local_shape)};
  return {w_gate_ ? w_gate_->data() : Tensor(), w_up_.data(), w_down_.data()};
}

ops::ExpertWeights GroupedExperts::weight_grads() {
  if (group_ == nullptr)
    return {w_gate_ ? w_gate_->dgrad() : Tensor(), w_up_.dgrad(), w_down_.dgrad()};
  auto grad = [&](const Param* p, size_t k) {
    const Shape& b = p->local_shape;
    return copy_grads_[k].view_of(Shape{num_computed(), b[1], b[2]});
  };
  const size_t up = w_gate_ ? 1 : 0;
  return {w_gate_ ? grad(w_gate_, 0) : Tensor(), grad(&w_up_, up), grad(&w_down_, up + 1)};
}

std::vector<Param*> GroupedExperts::params() {
  std::vector<Param*> out;
  if (w_gate_) out.push_back(w_gate_);
  out.push_back(&w_up_);
  out.push_back(&w_down_);
  return out;
}

void GroupedExperts::materialize(SparseItems items, Communicator& group) {
  const std::vector<Param*> ps = params();
  items.item = ps[0]->local_shape[1] * ps[0]->local_shape[2];  // F x C floats
  items_ = std::move(items);
  group_ = &group;
  num_replicas_ = static_cast<int64_t>(items_.replicas(group.rank()).size());
  fetch_copies();
}

void GroupedExperts::fetch_copies() {
  const std::vector<Param*> ps = params();
  const int64_t item = items_.item, owned = num_local_ * item;
  copies_.resize(ps.size());
  copy_grads_.resize(ps.size());
  for (size_t k = 0; k < ps.size(); ++k) {
    float* copy = copies_[k].view({num_computed() * item}).data;
    copy_grads_[k].view({num_computed() * item});
    copy_grads_[k].zero();
    std::copy(ps[k]->value.data(), ps[k]->value.data() + owned, copy);
    sparse_all_gather(*group_, items_, {ps[k]->value.data(), static_cast<size_t>(owned)},
                      {copy + owned, static_cast<size_t>(num_replicas_ * item)});
  }
  replica_peak_ = std::max(replica_peak_, replica_bytes());
}

void GroupedExperts::release_replicas() {
  MOE_CHECK(group_ != nullptr, "experts ", w_up_.spec.name, ": release without materialize");
  copies_.clear();
  copy_grads_.clear();
}

void GroupedExperts::rematerialize() {
  MOE_CHECK(group_ != nullptr && copies_.empty(), "experts ", w_up_.spec.name,
            ": rematerialize without a released materialize");
  fetch_copies();  // the owners' values are unchanged until the optimizer step
}

int64_t GroupedExperts::replica_bytes() const {
  int64_t floats = 0;  // every copy less the owned block at its front
  for (const std::vector<Buffer>* copies : {&copies_, &copy_grads_})
    for (const Buffer& b : *copies) floats += b.size() - num_local_ * items_.item;
  return floats * int64_t{sizeof(float)};
}

void GroupedExperts::return_gradients() {
  MOE_CHECK(group_ != nullptr, "experts ", w_up_.spec.name, ": gradients without materialize");
  const std::vector<Param*> ps = params();
  const int64_t owned = num_local_ * items_.item;
  for (size_t k = 0; k < ps.size(); ++k) {
    float* g = ps[k]->grad.data();
    const float* copy = copy_grads_[k].data();
    for (int64_t i = 0; i < owned; ++i) g[i] += copy[i];
    sparse_reduce_scatter(*group_, items_,
                          {copy + owned, static_cast<size_t>(num_replicas_ * items_.item)},
                          {g, static_cast<size_t>(owned)});
  }
  // nobody keeps a replica between steps: the copies live from forward to here
  copies_.clear();
  copy_grads_.clear();
  group_ = nullptr;
}

ops::ExpertActivations GroupedExperts::activations(int64_t rows) {
  Tensor h = mixed() ? h16_.view({rows, hidden_}) : h_.view({rows, hidden_});
  return {gate_.view({rows, hidden_}), up_.view({rows, hidden_}), h};
}

Tensor GroupedExperts::backward(Tensor dy, Tensor dx_out) {
  const int64_t s = x_.rows();
  MOE_CHECK(dy.rows() == s && dy.cols() == width_, "experts ", w_up_.spec.name,
            ": gradient shape ", dy.shape.str());
  Tensor dx = dx_out.data != nullptr ? dx_out : dx_.view({s, width_});
  check_rows_of(dx, s, "input gradient");
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
