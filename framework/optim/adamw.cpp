#include "framework/optim/adamw.h"

#include "framework/kernels/ops.h"

namespace moe {

AdamW::AdamW(ParamStore& store, const OptimConfig& config)
    : store_(store),
      beta1_(config.beta1),
      beta2_(config.beta2),
      eps_(config.eps),
      weight_decay_(config.weight_decay) {
  for (const Param& p : store_.params()) {  // the moments live beside the values
    ranges_.push_back({0, p.numel()});
    exp_avg_.emplace_back(p.value.device()).resize(p.numel());
    exp_avg_sq_.emplace_back(p.value.device()).resize(p.numel());
  }
}

void AdamW::step(float lr, float grad_scale) {
  MOE_CHECK(store_.params().size() == exp_avg_.size(), "AdamW: the store has ",
            store_.params().size(), " parameters but the optimizer was built for ",
            exp_avg_.size());
  ++step_;
  std::vector<ops::AdamWTensors> tensors;  // every parameter's state range, in store order
  size_t i = 0;
  for (Param& p : store_.params()) {
    const StateRange& r = ranges_[i];
    const Shape range{r.size()};
    const Device device = p.value.device();
    const auto view = [&](float* data) { return Tensor(data, range, DType::kF32, device); };
    if (r.size() > 0)
      tensors.push_back({view(p.value.data() + r.begin), view(p.grad.data() + r.begin),
                         view(exp_avg_[i].data()), view(exp_avg_sq_[i].data()),
                         p.spec.weight_decay});
    ++i;
  }
  ops::adamw_multi(tensors, {lr, beta1_, beta2_, eps_, weight_decay_, step_}, grad_scale);
}

Tensor AdamW::state_view(const Buffer& b, size_t i) const {
  MOE_CHECK(i < ranges_.size(), "AdamW state index ", i);
  const Param& p = store_.params()[i];
  const StateRange& r = ranges_[i];
  const Shape shape = r.begin == 0 && r.end == p.numel() ? p.local_shape : Shape{r.size()};
  return Tensor(b.data(), shape, DType::kF32, b.device());
}

Tensor AdamW::exp_avg(size_t i) { return state_view(exp_avg_.at(i), i); }
Tensor AdamW::exp_avg_sq(size_t i) { return state_view(exp_avg_sq_.at(i), i); }

void AdamW::set_state(size_t i, StateRange range, Buffer exp_avg, Buffer exp_avg_sq) {
  MOE_CHECK(i < ranges_.size(), "AdamW state index ", i);
  const Param& p = store_.params()[i];
  MOE_CHECK(0 <= range.begin && range.begin <= range.end && range.end <= p.numel() &&
                exp_avg.size() == range.size() && exp_avg_sq.size() == range.size(),
            "AdamW: state of ", exp_avg.size(), " and ", exp_avg_sq.size(),
            " elements over [", range.begin, ", ", range.end, ") of ", p.spec.name, " (",
            p.numel(), " elements)");
  ranges_[i] = range;
  exp_avg_[i] = std::move(exp_avg);
  exp_avg_sq_[i] = std::move(exp_avg_sq);
}

int64_t AdamW::state_bytes() const {
  int64_t bytes = 0;
  for (size_t i = 0; i < exp_avg_.size(); ++i)
    bytes += (exp_avg_[i].size() + exp_avg_sq_[i].size()) * int64_t{sizeof(float)};
  return bytes;
}

}  // namespace moe
