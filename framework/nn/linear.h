#pragma once
// Linear layer: y = x W^T (+ b), W (out, in) as in PyTorch; the bias b (out) is
// optional (the language model has none; the image models' embedders, adaLN and heads
// have one). A bias starts at zero and is not weight-decayed.
//
// The layer conventions every nn/ and moe/ layer follows:
// - parameters are registered in a ParamStore under global names at construction;
// - forward(x) returns a view of a layer-owned output buffer and keeps a view of x
//   for backward (the caller keeps x alive until backward);
// - backward(dy) returns a view of a layer-owned dx buffer (overwritten) and
//   accumulates parameter gradients (+=), so several micro-batches can add up;
// - no communication, no globals; threads come from the kernels.
//
// Mixed precision (the weight's Param::matmul_dtype is bf16, train.precision = bf16):
// both products take bf16 operands and sum in fp32. forward rounds the fp32 master
// weight to a bf16 copy (once per forward; backward uses the same copy) and the input to
// a bf16 copy, which is what the layer keeps for backward (half the bytes of the fp32
// input); backward rounds dy. The bias, its gradient and dW stay fp32.

#include <string>

#include "framework/tensor/param_store.h"

namespace moe {

class Linear {
 public:
  // `name` is the weight's global name; a non-empty `bias_name` adds a bias.
  Linear(ParamStore& store, const std::string& name, int64_t in_features,
         int64_t out_features, Init init, const std::string& bias_name = "");
  // Over parameters registered elsewhere, e.g. this rank's block of a tensor-parallel
  // weight: the layer works on the local (out, in) block and its local bias (or none).
  // A block of more dimensions (P, out/P, in) is the (out, in) matrix of its rows.
  Linear(Param& weight, Param* bias);

  Tensor forward(Tensor x);    // x (N, in) -> y (N, out)
  Tensor backward(Tensor dy);  // dy (N, out) -> dx (N, in); dW += dy^T x, db += sum_n dy

  Param& weight() { return weight_; }
  Param* bias() { return bias_; }  // null without a bias
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 private:
  bool mixed() const { return weight_.matmul_dtype == DType::kBF16; }

  Param& weight_;            // (out, in)
  Param* bias_ = nullptr;    // (out)
  int64_t in_, out_;
  Tensor x_;       // (N, in) saved input (mixed precision: the bf16 copy)
  Buffer y_, dx_;
  // Mixed precision: bf16 copies of the weight (out, in), the input (N, in) and dy (N, out)
  Buffer weight16_, x16_, dy16_;  // on the weight's device
};

}  // namespace moe
