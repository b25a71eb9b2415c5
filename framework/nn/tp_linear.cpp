#include "framework/nn/tp_linear.h"

namespace moe {

namespace {

// This rank's block of a weight of logical shape (out, in) split along `dim` over tp.
Param& add_tp_weight(ParamStore& store, const std::string& name, int64_t in, int64_t out,
                     Init init, Communicator& tp, int dim) {
  const int64_t split = dim == 0 ? out : in;
  MOE_CHECK(split % tp.size() == 0, "tensor-parallel ", name, ": ", split,
            " is not divisible by tp = ", tp.size());
  const int64_t block = split / tp.size();
  ParamSpec spec{name, Shape{out, in}, dim == 0 ? Shard::kTpColumn : Shard::kTpRow, init};
  if (dim == 0) return store.add_shard(std::move(spec), Shape{block, in}, {tp.rank() * block, 0});
  return store.add_shard(std::move(spec), Shape{out, block}, {0, tp.rank() * block});
}

Param* add_column_bias(ParamStore& store, const std::string& bias_name, int64_t out,
                       Communicator& tp) {
  if (bias_name.empty()) return nullptr;
  const int64_t block = out / tp.size();
  return &store.add_shard({bias_name, Shape{out}, Shard::kTpColumn, Init::zeros(),
                           /*weight_decay=*/false},
                          Shape{block}, {tp.rank() * block});
}

}  // namespace

ColumnParallelLinear::ColumnParallelLinear(ParamStore& store, const std::string& name,
                                           int64_t in_features, int64_t out_features,
                                           Init init, Communicator& tp,
                                           const std::string& bias_name)
    : tp_(tp),
      local_(add_tp_weight(store, name, in_features, out_features, init, tp, 0),
             add_column_bias(store, bias_name, out_features, tp)) {}

Tensor ColumnParallelLinear::forward(Tensor x) { return local_.forward(x); }

Tensor ColumnParallelLinear::backward_all_reduce(Tensor dy) {
  Tensor dx = local_.backward(dy);  // this rank's share: dy_r W_r
  tp_.all_reduce<float>({dx.data, static_cast<size_t>(dx.numel())});
  return dx;
}

RowParallelLinear::RowParallelLinear(ParamStore& store, const std::string& name,
                                     int64_t in_features, int64_t out_features, Init init,
                                     Communicator& tp, const std::string& bias_name)
    : tp_(tp),
      bias_(bias_name.empty() ? nullptr
                              : &store.add({bias_name, Shape{out_features}, Shard::kReplicated,
                                            Init::zeros(), /*weight_decay=*/false})),
      local_(add_tp_weight(store, name, in_features, out_features, init, tp, 1), nullptr) {}

Tensor RowParallelLinear::forward_all_reduce(Tensor x) {
  Tensor y = local_.forward(x);  // partial sum x_r W_r^T
  tp_.all_reduce<float>({y.data, static_cast<size_t>(y.numel())});
  if (bias_) {
    const float* b = bias_->value.data();
    const int64_t n = y.rows(), out = y.cols();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < out; ++j) y.data[r * out + j] += b[j];
  }
  return y;
}

Tensor RowParallelLinear::backward(Tensor dy) {
  if (bias_) {
    float* db = bias_->grad.data();
    const int64_t n = dy.rows(), out = dy.cols();
    for (int64_t r = 0; r < n; ++r)
      for (int64_t j = 0; j < out; ++j) db[j] += dy.data[r * out + j];
  }
  return local_.backward(dy);
}

}  // namespace moe
