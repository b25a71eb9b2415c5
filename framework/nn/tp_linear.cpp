#include "framework/nn/tp_linear.h"

#include "framework/kernels/ops.h"
#include "framework/nn/sequence_parallel.h"

namespace moe {

namespace {

// This rank's block of a weight of logical shape (out, in) split along `dim` over tp;
// with parts > 1 (column split only) of logical shape (parts, out/parts, in).
Param& add_tp_weight(ParamStore& store, const std::string& name, int64_t in, int64_t out,
                     Init init, Communicator* tp, int dim, int64_t parts) {
  const int tps = tp_size(tp), r = tp_rank(tp);
  MOE_CHECK(parts == 1 || (dim == 0 && out % parts == 0), "tensor-parallel ", name, ": ",
            out, " outputs in ", parts, " parts");
  const int64_t split = dim == 0 ? out / parts : in;
  MOE_CHECK(split % tps == 0, "tensor-parallel ", name, ": ", split,
            " is not divisible by tp = ", tps);
  const int64_t block = split / tps;
  // Without a tp group the layer holds the whole weight on a rank that may be one of
  // several replicas: replicated, so that nothing sums it over a tp group.
  const Shard shard = !tp ? Shard::kReplicated : dim == 0 ? Shard::kTpColumn : Shard::kTpRow;
  if (parts > 1)
    return store.add_shard({name, Shape{parts, split, in}, shard, init},
                           Shape{parts, block, in}, {0, r * block, 0});
  ParamSpec spec{name, Shape{out, in}, shard, init};
  if (dim == 0) return store.add_shard(std::move(spec), Shape{block, in}, {r * block, 0});
  return store.add_shard(std::move(spec), Shape{out, block}, {0, r * block});
}

Param* add_column_bias(ParamStore& store, const std::string& bias_name, int64_t out,
                       Communicator* tp, int64_t parts) {
  if (bias_name.empty()) return nullptr;
  MOE_CHECK(parts == 1, "tensor-parallel ", bias_name, ": a bias of a weight in parts");
  const int64_t block = out / tp_size(tp);
  return &store.add_shard({bias_name, Shape{out}, tp ? Shard::kTpColumn : Shard::kReplicated,
                           Init::zeros(),
                           /*weight_decay=*/false},
                          Shape{block}, {tp_rank(tp) * block});
}

}  // namespace

void all_reduce_tp(Communicator* tp, Tensor t) {
  if (tp_size(tp) > 1) tp->all_reduce<float>({t.data, static_cast<size_t>(t.numel())});
}

ColumnParallelLinear::ColumnParallelLinear(ParamStore& store, const std::string& name,
                                           int64_t in_features, int64_t out_features,
                                           Init init, Communicator* tp,
                                           const std::string& bias_name, int64_t parts)
    : tp_(tp),
      local_(add_tp_weight(store, name, in_features, out_features, init, tp, 0, parts),
             add_column_bias(store, bias_name, out_features, tp, parts)) {}

Tensor ColumnParallelLinear::forward(Tensor x) { return local_.forward(x); }

Tensor ColumnParallelLinear::backward_all_reduce(Tensor dy) {
  Tensor dx = local_.backward(dy);  // this rank's share: dy_r W_r
  all_reduce_tp(tp_, dx);
  return dx;
}

Tensor ColumnParallelLinear::forward_all_gather(Tensor x) {
  return local_.forward(all_gather_rows(tp_, x, gathered_));
}

Tensor ColumnParallelLinear::backward_reduce_scatter(Tensor dy) {
  return reduce_scatter_rows(tp_, local_.backward(dy), scattered_);
}

RowParallelLinear::RowParallelLinear(ParamStore& store, const std::string& name,
                                     int64_t in_features, int64_t out_features, Init init,
                                     Communicator* tp, const std::string& bias_name)
    : tp_(tp),
      bias_(bias_name.empty() ? nullptr
                              : &store.add({bias_name, Shape{out_features}, Shard::kReplicated,
                                            Init::zeros(), /*weight_decay=*/false})),
      local_(add_tp_weight(store, name, in_features, out_features, init, tp, 1, 1), nullptr) {}

Tensor RowParallelLinear::forward_all_reduce(Tensor x) {
  Tensor y = local_.forward(x);  // partial sum x_r W_r^T
  all_reduce_tp(tp_, y);
  add_bias(y);
  return y;
}

Tensor RowParallelLinear::forward_reduce_scatter(Tensor x) {
  Tensor y = reduce_scatter_rows(tp_, local_.forward(x), scattered_);
  add_bias(y);
  return y;
}

Tensor RowParallelLinear::backward_all_gather(Tensor dy) {
  return backward(all_gather_rows(tp_, dy, gathered_));
}

void RowParallelLinear::add_bias(Tensor y) const {
  if (!bias_) return;
  ops::add_rows(y, bias_->data().reshaped({1, y.cols()}), y);  // y[r] += b
}

Tensor RowParallelLinear::backward(Tensor dy) {
  if (bias_) ops::sum_rows(dy, bias_->dgrad().reshaped({1, dy.cols()}));  // db += sum_r dy[r]
  return local_.backward(dy);
}

}  // namespace moe
