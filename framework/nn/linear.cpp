#include "framework/nn/linear.h"

#include "framework/kernels/ops.h"

namespace moe {

Linear::Linear(ParamStore& store, const std::string& name, int64_t in_features,
               int64_t out_features, Init init, const std::string& bias_name)
    : weight_(store.add({name, Shape{out_features, in_features}, Shard::kReplicated, init})),
      in_(in_features),
      out_(out_features) {
  if (!bias_name.empty())
    bias_ = &store.add({bias_name, Shape{out_features}, Shard::kReplicated, Init::zeros(),
                        /*weight_decay=*/false});
}

Linear::Linear(Param& weight, Param* bias)
    : weight_(weight),
      bias_(bias),
      in_(weight.local_shape[weight.local_shape.rank - 1]),
      out_(in_ > 0 ? weight.numel() / in_ : 0) {
  MOE_CHECK(weight.local_shape.rank >= 2, "Linear ", weight.spec.name, ": weight of shape ",
            weight.local_shape.str());
  MOE_CHECK(!bias || bias->numel() == out_, "Linear ", weight.spec.name, ": bias of ",
            bias ? bias->numel() : 0, " for ", out_, " outputs");
}

Tensor Linear::forward(Tensor x) {
  MOE_CHECK(x.cols() == in_, "Linear ", weight_.spec.name, ": input width ", x.cols(),
            " != ", in_);
  x_ = x;
  const int64_t n = x.rows();
  Tensor y = y_.view({n, out_});
  cpu::matmul(x.data, weight_.value.data(), y.data, n, out_, in_, false, true, 1.0f, 0.0f);
  if (bias_) {
    const float* b = bias_->value.data();
#pragma omp parallel for if (n * out_ > (1 << 15))
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < out_; ++j) y.data[r * out_ + j] += b[j];
  }
  return y;
}

Tensor Linear::backward(Tensor dy) {
  const int64_t n = x_.rows();
  MOE_CHECK(dy.rows() == n && dy.cols() == out_, "Linear ", weight_.spec.name,
            ": gradient shape ", dy.shape.str());
  // dW (out, in) += dy^T (out, N) x (N, in)
  cpu::matmul(dy.data, x_.data, weight_.grad.data(), out_, in_, n, true, false, 1.0f, 1.0f);
  if (bias_) {
    // db (out) += column sums of dy
    float* db = bias_->grad.data();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < out_; ++j) db[j] += dy.data[r * out_ + j];
  }
  // dx (N, in) = dy (N, out) W (out, in)
  Tensor dx = dx_.view({n, in_});
  cpu::matmul(dy.data, weight_.value.data(), dx.data, n, in_, out_, false, false, 1.0f, 0.0f);
  return dx;
}

}  // namespace moe
