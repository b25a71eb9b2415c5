#include "framework/nn/layernorm.h"

#include "framework/kernels/ops.h"

namespace moe {

LayerNorm::LayerNorm(ParamStore& store, const std::string& prefix, int64_t width,
                     float eps, bool affine)
    : width_(width),
      eps_(eps),
      y_(store.device()),
      mean_(store.device()),
      rstd_(store.device()),
      dx_(store.device()) {
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
  ops::layernorm_forward(x, weight_ ? weight_->data() : Tensor(), bias_ ? bias_->data() : Tensor(),
                         y, mean_.view({n}), rstd_.view({n}), eps_);
  return y;
}

Tensor LayerNorm::backward(Tensor dy) {
  const int64_t n = x_.rows();
  MOE_CHECK(dy.numel() == x_.numel() && dy.cols() == width_,
            "LayerNorm: gradient shape ", dy.shape.str());
  Tensor dx = dx_.view(x_.shape);
  ops::layernorm_backward(x_, weight_ ? weight_->data() : Tensor(), mean_.view({n}),
                          rstd_.view({n}), dy, dx, weight_ ? weight_->dgrad() : Tensor(),
                          bias_ ? bias_->dgrad() : Tensor());
  return dx;
}

}  // namespace moe
