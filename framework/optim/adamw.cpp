#include "framework/optim/adamw.h"

#include "framework/kernels/ops.h"

namespace moe {

AdamW::AdamW(ParamStore& store, const OptimConfig& config)
    : store_(store),
      beta1_(config.beta1),
      beta2_(config.beta2),
      eps_(config.eps),
      weight_decay_(config.weight_decay) {
  for (const Param& p : store_.params()) {
    exp_avg_.emplace_back(p.numel());
    exp_avg_sq_.emplace_back(p.numel());
  }
}

void AdamW::step(float lr) {
  MOE_CHECK(store_.params().size() == exp_avg_.size(), "AdamW: the store has ",
            store_.params().size(), " parameters but the optimizer was built for ",
            exp_avg_.size());
  ++step_;
  size_t i = 0;
  for (Param& p : store_.params()) {
    const float wd = p.spec.weight_decay ? weight_decay_ : 0.0f;
    ops::adamw(p.data(), p.dgrad(), exp_avg(i), exp_avg_sq(i),
               {lr, beta1_, beta2_, eps_, wd, step_});
    ++i;
  }
}

Tensor AdamW::exp_avg(size_t i) {
  MOE_CHECK(i < exp_avg_.size(), "AdamW state index ", i);
  return Tensor(exp_avg_[i].data(), store_.params()[i].local_shape);
}

Tensor AdamW::exp_avg_sq(size_t i) {
  MOE_CHECK(i < exp_avg_sq_.size(), "AdamW state index ", i);
  return Tensor(exp_avg_sq_[i].data(), store_.params()[i].local_shape);
}

}  // namespace moe
