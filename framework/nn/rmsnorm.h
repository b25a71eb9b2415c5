#pragma once
// RMSNorm: y = x / sqrt(mean(x^2) + eps) * w, rows of width C; w (C) starts at ones
// and is not weight-decayed. See framework/nn/linear.h for the layer conventions.

#include <string>

#include "framework/nn/norm.h"
#include "framework/tensor/param_store.h"

namespace moe {

class RMSNorm final : public Norm {
 public:
  // `name` is the weight's global name, e.g. "layers.0.attn_norm.weight".
  RMSNorm(ParamStore& store, const std::string& name, int64_t width, float eps);

  Tensor forward(Tensor x) override;    // x (N, C) -> y (N, C)
  Tensor backward(Tensor dy) override;  // dy (N, C) -> dx (N, C); dw += ...

  Param& weight() { return weight_; }

 private:
  Param& weight_;  // (C)
  int64_t width_;
  float eps_;
  Tensor x_;                // (N, C) saved input
  Buffer y_, rstd_, dx_;    // y, dx (N, C); rstd (N) saved for backward
};

}  // namespace moe
