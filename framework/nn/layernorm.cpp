#include "framework/nn/layernorm.h"

#include "framework/kernels/ops.h"

namespace moe {

LayerNorm::LayerNorm(ParamStore& store, const std::string& prefix, int64_t width,
                     float eps, bool affine)
    : width_(width), eps_(eps) {
  if (!affine) return;
  weight_ = &store.add({prefix + ".weight", Shape{width}, Shard::kReplicated,
                        Init::ones(), /*weight_decay=*/false});
  bias_ = &store.add({prefix + ".bias", Shape{width}, Shard::kReplicated, Init::zeros(),
                      /*weight_decay=*/false});
}

Tensor LayerNorm::forward(Tensor x) {
  MOE_CHECK(x.cols() == width_, "LayerNorm: input width ", x.cols(), " != ", width_);
  x_ = x;
  const int64_t n = x.rows();
  Tensor y = y_.view(x.shape);
  float* mean = mean_.view({n}).data;
  float* rstd = rstd_.view({n}).data;
  cpu::layernorm_forward(x.data, weight_ ? weight_->value.data() : nullptr,
                         bias_ ? bias_->value.data() : nullptr, y.data, mean, rstd, n,
                         width_, eps_);
  return y;
}

Tensor LayerNorm::backward(Tensor dy) {
  const int64_t n = x_.rows();
  MOE_CHECK(dy.numel() == x_.numel() && dy.cols() == width_,
            "LayerNorm: gradient shape ", dy.shape.str());
  Tensor dx = dx_.view(x_.shape);
  cpu::layernorm_backward(x_.data, weight_ ? weight_->value.data() : nullptr,
                          mean_.data(), rstd_.data(), dy.data, dx.data,
                          weight_ ? weight_->grad.data() : nullptr,
                          bias_ ? bias_->grad.data() : nullptr, n, width_);
  return dx;
}

}  // namespace moe
