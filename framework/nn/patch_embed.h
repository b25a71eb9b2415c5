#pragma once
// Patch embedding: a conv with kernel = stride = p as patchify + Linear.
//   cols = patchify(x)            x (B, Cin, H, W) -> (B*P, Cin*p*p), P = (H/p)(W/p)
//   y    = cols W^T + b           W (C, Cin*p*p) = the conv weight (C, Cin, p, p) flattened
// Parameters: <prefix>.weight, N(0, 1/sqrt(Cin*p*p)) so that unit-variance pixels give
// unit-variance tokens (LeCun), and <prefix>.bias (C), zeros.
// See framework/nn/linear.h for the layer conventions.

#include <string>

#include "framework/nn/linear.h"

namespace moe {

class PatchEmbed {
 public:
  PatchEmbed(ParamStore& store, const std::string& prefix, int64_t channels,
             int64_t image_size, int64_t patch, int64_t width);

  // x (B, Cin, H, W) -> tokens (B*P, C), patches of an image in row-major order
  Tensor forward(Tensor x);
  // dy (B*P, C) -> dx (B, Cin, H, W); dW, db += ...
  Tensor backward(Tensor dy);

  int64_t num_patches() const { return grid_ * grid_; }  // P
  int64_t grid() const { return grid_; }                  // H/p patches per side
  Linear& proj() { return proj_; }

 private:
  int64_t channels_, image_size_, patch_, grid_;  // Cin, H = W, p, H/p
  Linear proj_;
  int64_t batch_ = 0;
  Buffer cols_, dx_;  // (B*P, Cin*p*p), (B, Cin, H, W)
};

}  // namespace moe
