#pragma once
// Sequence-level pieces of the image transformers (docs/image-models.md).
//
//   ClsToken:  prepends a learned token to each image's patch tokens
//              x (B*P, C) -> y (B*(P+1), C), row 0 of each image = <name> (C)
//   TokenPool: one vector per image from its T tokens, (B*T, C) -> (B, C):
//              kCls takes token 0, kMean averages all T (global average pooling)
// See framework/nn/linear.h for the layer conventions.

#include <cstdint>
#include <string>

#include "framework/tensor/param_store.h"

namespace moe {

class ClsToken {
 public:
  ClsToken(ParamStore& store, const std::string& name, int64_t width, float init_std);

  Tensor forward(Tensor x, int64_t batch);  // x (B*P, C) -> (B*(P+1), C)
  Tensor backward(Tensor dy);               // -> dx (B*P, C); dtoken += sum_b dy[b, 0]

  Param& weight() { return token_; }

 private:
  Param& token_;  // (C)
  int64_t width_, batch_ = 0, patches_ = 0;
  Buffer y_, dx_;
  Buffer dcls_;  // (B, C) the gradients of the token rows, summed into dtoken in order
};

class TokenPool {
 public:
  enum class Mode : uint8_t { kCls, kMean };
  // Its outputs live on `device` (the model's, ParamStore::device()).
  TokenPool(Mode mode, Device device) : mode_(mode), y_(device), dx_(device) {}

  Tensor forward(Tensor x, int64_t batch);  // x (B*T, C) -> (B, C)
  Tensor backward(Tensor dy);               // dy (B, C) -> dx (B*T, C)

 private:
  Mode mode_;
  int64_t batch_ = 0, tokens_ = 0, width_ = 0;
  Buffer y_, dx_;
};

}  // namespace moe
