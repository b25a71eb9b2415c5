#pragma once
// Tensor-parallel linear layers (Megatron-LM, Shoeybi et al. 2019): one weight split
// over the tp ranks, each rank multiplying by its block. Pairs of them make an MLP or
// an attention block with one all-reduce forward and one backward:
//
//   ColumnParallelLinear  W (out, in) split along out: rank r holds rows
//                         [r * out/tp, (r + 1) * out/tp) (Shard::kTpColumn), and its
//                         block of the bias. x (N, in) is the same on every tp rank;
//                         y_r = x W_r^T + b_r is this rank's (N, out/tp) columns of y.
//                         Backward: dx = sum_r dy_r W_r, an all-reduce over tp.
//                         With `parts` = P > 1 the weight is P stacked matrices,
//                         logical (P, out/P, in), each split along its rows: rank r
//                         holds (P, out/(P tp), in) and y_r is [part 0 | part 1 | ...]
//                         of its rows (attention's fused q, k, v split by heads).
//   RowParallelLinear     W (out, in) split along in: rank r holds columns
//                         [r * in/tp, (r + 1) * in/tp) (Shard::kTpRow); the bias is
//                         replicated. x_r (N, in/tp) is this rank's slice of the
//                         input (a column-parallel output); y = sum_r x_r W_r^T + b,
//                         an all-reduce over tp. Backward: dx_r = dy W_r, no exchange.
//
// Sequence parallelism (framework/nn/sequence_parallel.h) replaces each all-reduce by
// an all-gather / reduce-scatter pair: ColumnParallelLinear::forward_all_gather takes
// this rank's rows (N/tp, in), gathers them and multiplies; backward_reduce_scatter
// gives back this rank's rows of dx summed over tp. RowParallelLinear's
// forward_reduce_scatter leaves each rank its rows of y (N/tp, out), backward_all_gather
// gathers dy first; the bias gradient then sums all N rows on every rank, as without it.
//
// Only the functions named for it communicate: ColumnParallelLinear::backward_all_reduce,
// forward_all_gather, backward_reduce_scatter, RowParallelLinear::forward_all_reduce,
// forward_reduce_scatter, backward_all_gather and all_reduce_tp. The blocks are views of
// logical parameters, so their initial values are those of the unsharded layer
// (ParamStore) and checkpoints store the logical tensors. tp must divide the split
// dimension. A null tp is tensor parallelism of one: the whole weight, no exchange,
// annotated Shard::kReplicated.

#include <string>

#include "framework/nn/linear.h"
#include "framework/parallel/communicator.h"

namespace moe {

inline int tp_size(const Communicator* tp) { return tp ? tp->size() : 1; }
inline int tp_rank(const Communicator* tp) { return tp ? tp->rank() : 0; }

// t = sum of t over the tp ranks (nothing without tp or with one rank).
void all_reduce_tp(Communicator* tp, Tensor t);

class ColumnParallelLinear {
 public:
  ColumnParallelLinear(ParamStore& store, const std::string& name, int64_t in_features,
                       int64_t out_features, Init init, Communicator* tp,
                       const std::string& bias_name = "", int64_t parts = 1);

  Tensor forward(Tensor x);  // x (N, in) -> y_r (N, out/tp); no communication
  // dy_r (N, out/tp) -> dx (N, in) summed over the tp ranks; accumulates dW_r, db_r.
  Tensor backward_all_reduce(Tensor dy);
  // Sequence parallel: x_r (N/tp, in) -> y_r (N, out/tp) of every rank's rows.
  Tensor forward_all_gather(Tensor x);
  // dy_r (N, out/tp) -> this rank's rows of dx (N/tp, in), summed over the tp ranks.
  Tensor backward_reduce_scatter(Tensor dy);

  Linear& local() { return local_; }  // backward() of it: this rank's share of dx only

 private:
  Communicator* tp_;
  Linear local_;  // over this rank's (out/tp, in) block
  Buffer gathered_, scattered_;  // (N, in), (N/tp, in) under sequence parallelism
};

class RowParallelLinear {
 public:
  RowParallelLinear(ParamStore& store, const std::string& name, int64_t in_features,
                    int64_t out_features, Init init, Communicator* tp,
                    const std::string& bias_name = "");

  // x_r (N, in/tp) -> y (N, out) = sum over tp ranks of x_r W_r^T, plus the bias.
  Tensor forward_all_reduce(Tensor x);
  // dy (N, out), the same on every tp rank -> dx_r (N, in/tp); accumulates dW_r and
  // (on every rank, equally) db. No communication.
  Tensor backward(Tensor dy);
  // Sequence parallel: x_r (N, in/tp) -> this rank's rows of y (N/tp, out), summed over
  // the tp ranks, plus the bias.
  Tensor forward_reduce_scatter(Tensor x);
  // dy (N/tp, out), this rank's rows -> dx_r (N, in/tp) after gathering dy.
  Tensor backward_all_gather(Tensor dy);

  Linear& local() { return local_; }

 private:
  void add_bias(Tensor y) const;

  Communicator* tp_;
  Param* bias_;   // (out) replicated, added once after the reduction
  Linear local_;  // over this rank's (out, in/tp) block, without the bias
  Buffer scattered_, gathered_;  // (N/tp, out), (N, out) under sequence parallelism
};

}  // namespace moe
