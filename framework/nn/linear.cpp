#include "framework/nn/linear.h"

#include "framework/kernels/ops.h"

namespace moe {

Linear::Linear(ParamStore& store, const std::string& name, int64_t in_features,
               int64_t out_features, Init init, const std::string& bias_name)
    : weight_(store.add({name, Shape{out_features, in_features}, Shard::kReplicated, init})),
      in_(in_features),
      out_(out_features),
      y_(store.device()),
      dx_(store.device()),
      weight16_(store.device(), DType::kBF16),
      x16_(store.device(), DType::kBF16),
      dy16_(store.device(), DType::kBF16) {
  if (!bias_name.empty())
    bias_ = &store.add({bias_name, Shape{out_features}, Shard::kReplicated, Init::zeros(),
                        /*weight_decay=*/false});
}

Linear::Linear(Param& weight, Param* bias)
    : weight_(weight),
      bias_(bias),
      in_(weight.local_shape[weight.local_shape.rank - 1]),
      out_(in_ > 0 ? weight.numel() / in_ : 0),
      y_(weight.value.device()),
      dx_(weight.value.device()),
      weight16_(weight.value.device(), DType::kBF16),
      x16_(weight.value.device(), DType::kBF16),
      dy16_(weight.value.device(), DType::kBF16) {
  MOE_CHECK(weight.local_shape.rank >= 2, "Linear ", weight.spec.name, ": weight of shape ",
            weight.local_shape.str());
  MOE_CHECK(!bias || bias->numel() == out_, "Linear ", weight.spec.name, ": bias of ",
            bias ? bias->numel() : 0, " for ", out_, " outputs");
}

Tensor Linear::forward(Tensor x) {
  MOE_CHECK(x.cols() == in_, "Linear ", weight_.spec.name, ": input width ", x.cols(),
            " != ", in_);
  const int64_t n = x.rows();
  Tensor y = y_.view({n, out_});
  if (mixed()) {
    Tensor w = weight16_.view(weight_.local_shape);
    ops::convert(weight_.data(), w);
    x_ = x16_.view({n, in_});
    ops::convert(x, x_);
    ops::matmul(x_, w, y, false, true);  // y (N, out) = bf16(x) bf16(W)^T
  } else {
    x_ = x;
    ops::matmul(x, weight_.data(), y, false, true);  // y (N, out) = x W^T
  }
  if (bias_) ops::add_rows(y, bias_->data(), y);
  return y;
}

Tensor Linear::backward(Tensor dy) {
  const int64_t n = x_.rows();
  MOE_CHECK(dy.rows() == n && dy.cols() == out_, "Linear ", weight_.spec.name,
            ": gradient shape ", dy.shape.str());
  if (bias_) ops::sum_rows(dy, bias_->dgrad());  // db (out) += column sums of dy
  Tensor dx = dx_.view({n, in_});
  Tensor w = weight_.data();
  if (mixed()) {  // bf16(dy), and the bf16 copies forward made
    w = weight16_.view_of(weight_.local_shape);
    Tensor dy16 = dy16_.view({n, out_});
    ops::convert(dy, dy16);
    dy = dy16;
  }
  // dW (out, in) += dy^T (out, N) x (N, in)
  ops::matmul(dy, x_, weight_.dgrad(), true, false, 1.0f, 1.0f);
  // dx (N, in) = dy (N, out) W (out, in)
  ops::matmul(dy, w, dx, false, false);
  return dx;
}

}  // namespace moe
