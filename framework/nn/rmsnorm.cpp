#include "framework/nn/rmsnorm.h"

#include "framework/kernels/ops.h"

namespace moe {

RMSNorm::RMSNorm(ParamStore& store, const std::string& name, int64_t width, float eps)
    : weight_(store.add({name, Shape{width}, Shard::kReplicated, Init::ones(),
                         /*weight_decay=*/false})),
      width_(width),
      eps_(eps),
      y_(store.device()),
      rstd_(store.device()),
      dx_(store.device()) {}

Tensor RMSNorm::forward(Tensor x) {
  MOE_CHECK(x.cols() == width_, "RMSNorm ", weight_.spec.name, ": input width ",
            x.cols(), " != ", width_);
  x_ = x;
  const int64_t n = x.rows();
  Tensor y = y_.view(x.shape);
  ops::rmsnorm_forward(x, weight_.data(), y, rstd_.view({n}), eps_);
  return y;
}

Tensor RMSNorm::backward(Tensor dy) {
  const int64_t n = x_.rows();
  MOE_CHECK(dy.numel() == x_.numel() && dy.cols() == width_, "RMSNorm ",
            weight_.spec.name, ": gradient shape ", dy.shape.str());
  Tensor dx = dx_.view(x_.shape);
  ops::rmsnorm_backward(x_, weight_.data(), rstd_.view({n}), dy, dx, weight_.dgrad());
  return dx;
}

}  // namespace moe
