#pragma once
// Timestep embedding of DiT (docs/image-models.md):
//   freq(t) = [cos(t f_0), ..., cos(t f_{h-1}), sin(t f_0), ..., sin(t f_{h-1})],
//             f_k = exp(-ln(10^4) k / h), h = 128 (256 features)
//   y = W2 silu(W1 freq(t) + b1) + b2
// Parameters: <prefix>.fc1.weight (C, 256), .fc1.bias (C), .fc2.weight (C, C),
// .fc2.bias (C); weights N(0, init_std), biases zeros. t is data (no gradient).
// See framework/nn/linear.h for the layer conventions.

#include <string>

#include "framework/nn/linear.h"

namespace moe {

class TimestepEmbedder {
 public:
  static constexpr int64_t kFrequencies = 128;  // h; the features are 2h

  TimestepEmbedder(ParamStore& store, const std::string& prefix, int64_t width,
                   float init_std);

  Tensor forward(const float* t, int64_t n);  // t (n) -> (n, C)
  void backward(Tensor dy);                   // dy (n, C): parameter gradients only

 private:
  Linear fc1_, fc2_;
  Buffer freq_, act_, dpre_;  // (n, 2h), (n, C) silu output, (n, C)
  Buffer freq_host_;          // (n, 2h) the features' host copy, for a device model
  Tensor pre_;                // (n, C) view of fc1_'s output, kept for backward
};

}  // namespace moe
