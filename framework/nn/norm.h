#pragma once
// Norm: what a transformer block needs of a normalisation layer (RMSNorm, LayerNorm), so
// that one block serves models that differ only in their norm. Layer conventions as in
// framework/nn/linear.h.

#include "framework/tensor/tensor.h"

namespace moe {

class Norm {
 public:
  virtual ~Norm() = default;
  virtual Tensor forward(Tensor x) = 0;    // x (N, C) -> y (N, C)
  virtual Tensor backward(Tensor dy) = 0;  // dy (N, C) -> dx (N, C); weights' grads +=
};

}  // namespace moe
