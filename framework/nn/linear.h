#pragma once
// Linear layer without bias: y = x W^T, W (out, in) as in PyTorch.
//
// The layer conventions every nn/ and moe/ layer follows:
// - parameters are registered in a ParamStore under global names at construction;
// - forward(x) returns a view of a layer-owned output buffer and keeps a view of x
//   for backward (the caller keeps x alive until backward);
// - backward(dy) returns a view of a layer-owned dx buffer (overwritten) and
//   accumulates parameter gradients (+=), so several micro-batches can add up;
// - no communication, no globals; threads come from the kernels.

#include <string>

#include "framework/tensor/param_store.h"

namespace moe {

class Linear {
 public:
  Linear(ParamStore& store, const std::string& name, int64_t in_features,
         int64_t out_features, Init init);

  Tensor forward(Tensor x);    // x (N, in) -> y (N, out)
  Tensor backward(Tensor dy);  // dy (N, out) -> dx (N, in); dW += dy^T x

  Param& weight() { return weight_; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

 private:
  Param& weight_;  // (out, in)
  int64_t in_, out_;
  Tensor x_;       // (N, in) saved input
  Buffer y_, dx_;
};

}  // namespace moe
