#pragma once
// LayerNorm: y = (x - mean) / sqrt(var + eps) * w + b over rows of width C.
// With affine: <prefix>.weight (C, ones) and <prefix>.bias (C, zeros), neither
// weight-decayed. Without affine there are no parameters (y is only normalised); DiT's
// adaLN applies its own conditioned scale and shift afterwards.
// See framework/nn/linear.h for the layer conventions.

#include <string>

#include "framework/nn/norm.h"
#include "framework/tensor/param_store.h"

namespace moe {

class LayerNorm final : public Norm {
 public:
  LayerNorm(ParamStore& store, const std::string& prefix, int64_t width, float eps,
            bool affine);

  Tensor forward(Tensor x) override;    // x (N, C) -> y (N, C)
  Tensor backward(Tensor dy) override;  // dy (N, C) -> dx (N, C); dw, db += ... when affine

  bool affine() const { return weight_ != nullptr; }
  Param* weight() { return weight_; }  // null without affine
  Param* bias() { return bias_; }      // null without affine

 private:
  Param* weight_ = nullptr;  // (C)
  Param* bias_ = nullptr;    // (C)
  int64_t width_;
  float eps_;
  Tensor x_;                         // (N, C) saved input
  Buffer y_, mean_, rstd_, dx_;      // y, dx (N, C); mean, rstd (N) saved for backward
};

}  // namespace moe
