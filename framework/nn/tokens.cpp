#include "framework/nn/tokens.h"

#include <algorithm>

namespace moe {

ClsToken::ClsToken(ParamStore& store, const std::string& name, int64_t width,
                   float init_std)
    : token_(store.add({name, Shape{width}, Shard::kReplicated, Init::normal(init_std),
                        /*weight_decay=*/false})),
      width_(width) {}

Tensor ClsToken::forward(Tensor x, int64_t batch) {
  MOE_CHECK(x.cols() == width_ && x.rows() % batch == 0, "ClsToken: input ", x.shape.str(),
            " is not (", batch, "*P, ", width_, ")");
  batch_ = batch;
  patches_ = x.rows() / batch;
  const int64_t t = patches_ + 1;
  Tensor y = y_.view({batch * t, width_});
  for (int64_t b = 0; b < batch; ++b) {
    float* out = y.data + b * t * width_;
    std::copy(token_.value.data(), token_.value.data() + width_, out);
    std::copy(x.data + b * patches_ * width_, x.data + (b + 1) * patches_ * width_,
              out + width_);
  }
  return y;
}

Tensor ClsToken::backward(Tensor dy) {
  const int64_t t = patches_ + 1;
  MOE_CHECK(dy.rows() == batch_ * t && dy.cols() == width_, "ClsToken: gradient shape ",
            dy.shape.str());
  Tensor dx = dx_.view({batch_ * patches_, width_});
  float* dtoken = token_.grad.data();
  for (int64_t b = 0; b < batch_; ++b) {
    const float* g = dy.data + b * t * width_;
    for (int64_t j = 0; j < width_; ++j) dtoken[j] += g[j];
    std::copy(g + width_, g + t * width_, dx.data + b * patches_ * width_);
  }
  return dx;
}

Tensor TokenPool::forward(Tensor x, int64_t batch) {
  MOE_CHECK(x.rows() % batch == 0, "TokenPool: ", x.rows(), " rows for ", batch, " images");
  batch_ = batch;
  tokens_ = x.rows() / batch;
  width_ = x.cols();
  Tensor y = y_.view({batch, width_});
  for (int64_t b = 0; b < batch; ++b) {
    const float* in = x.data + b * tokens_ * width_;
    float* out = y.data + b * width_;
    if (mode_ == Mode::kCls) {
      std::copy(in, in + width_, out);
      continue;
    }
    std::fill(out, out + width_, 0.0f);
    for (int64_t t = 0; t < tokens_; ++t)
      for (int64_t j = 0; j < width_; ++j) out[j] += in[t * width_ + j];
    const float inv = 1.0f / static_cast<float>(tokens_);
    for (int64_t j = 0; j < width_; ++j) out[j] *= inv;
  }
  return y;
}

Tensor TokenPool::backward(Tensor dy) {
  MOE_CHECK(dy.rows() == batch_ && dy.cols() == width_, "TokenPool: gradient shape ",
            dy.shape.str());
  Tensor dx = dx_.view({batch_ * tokens_, width_});
  const float inv = 1.0f / static_cast<float>(tokens_);
  for (int64_t b = 0; b < batch_; ++b) {
    const float* g = dy.data + b * width_;
    float* out = dx.data + b * tokens_ * width_;
    for (int64_t t = 0; t < tokens_; ++t)
      for (int64_t j = 0; j < width_; ++j)
        out[t * width_ + j] = mode_ == Mode::kCls ? (t == 0 ? g[j] : 0.0f) : g[j] * inv;
  }
  return dx;
}

}  // namespace moe
