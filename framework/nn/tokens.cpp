#include "framework/nn/tokens.h"

#include <vector>

#include "framework/kernels/ops.h"

namespace moe {

ClsToken::ClsToken(ParamStore& store, const std::string& name, int64_t width,
                   float init_std)
    : token_(store.add({name, Shape{width}, Shard::kReplicated, Init::normal(init_std),
                        /*weight_decay=*/false})),
      width_(width),
      y_(store.device()),
      dx_(store.device()),
      dcls_(store.device()) {}

Tensor ClsToken::forward(Tensor x, int64_t batch) {
  MOE_CHECK(x.cols() == width_ && x.rows() % batch == 0, "ClsToken: input ", x.shape.str(),
            " is not (", batch, "*P, ", width_, ")");
  batch_ = batch;
  patches_ = x.rows() / batch;
  const int64_t t = patches_ + 1;
  Tensor y = y_.view({batch * t, width_});
  // image b's rows: the token at b*t, then its patches (index -1: a row the token fills)
  std::vector<int32_t> row_of(static_cast<size_t>(batch * t));
  for (int64_t r = 0; r < batch * t; ++r)
    row_of[r] = r % t == 0 ? -1 : static_cast<int32_t>(r / t * patches_ + r % t - 1);
  ops::permute_rows(x, row_of, {}, y);
  const Tensor token = token_.data().reshaped({1, width_});
  for (int64_t b = 0; b < batch; ++b) ops::copy(token, y.slice_rows(b * t, 1));
  return y;
}

Tensor ClsToken::backward(Tensor dy) {
  const int64_t t = patches_ + 1;
  MOE_CHECK(dy.rows() == batch_ * t && dy.cols() == width_, "ClsToken: gradient shape ",
            dy.shape.str());
  Tensor dx = dx_.view({batch_ * patches_, width_});
  std::vector<int32_t> patch_row(static_cast<size_t>(batch_ * patches_));  // [B*P] in dy
  for (int64_t i = 0; i < batch_ * patches_; ++i)
    patch_row[i] = static_cast<int32_t>(i / patches_ * t + 1 + i % patches_);
  ops::permute_rows(dy, patch_row, {}, dx);
  std::vector<int32_t> token_row(static_cast<size_t>(batch_));  // [B] in dy
  for (int64_t b = 0; b < batch_; ++b) token_row[b] = static_cast<int32_t>(b * t);
  Tensor dcls = dcls_.view({batch_, width_});
  ops::permute_rows(dy, token_row, {}, dcls);
  ops::sum_rows(dcls, token_.dgrad().reshaped({1, width_}));  // images in order
  return dx;
}

Tensor TokenPool::forward(Tensor x, int64_t batch) {
  MOE_CHECK(x.rows() % batch == 0, "TokenPool: ", x.rows(), " rows for ", batch, " images");
  batch_ = batch;
  tokens_ = x.rows() / batch;
  width_ = x.cols();
  Tensor y = y_.view({batch, width_});
  if (mode_ == Mode::kCls) {  // row b = token 0 of image b
    std::vector<int32_t> first(static_cast<size_t>(batch));
    for (int64_t b = 0; b < batch; ++b) first[b] = static_cast<int32_t>(b * tokens_);
    ops::permute_rows(x, first, {}, y);
    return y;
  }
  // the mean: image b's tokens summed in order, then scaled by 1/T
  y_.zero();
  for (int64_t b = 0; b < batch; ++b)
    ops::sum_rows(x.slice_rows(b * tokens_, tokens_), y.slice_rows(b, 1));
  ops::scale(y, 1.0f / static_cast<float>(tokens_));
  return y;
}

Tensor TokenPool::backward(Tensor dy) {
  MOE_CHECK(dy.rows() == batch_ && dy.cols() == width_, "TokenPool: gradient shape ",
            dy.shape.str());
  Tensor dx = dx_.view({batch_ * tokens_, width_});
  // row (b, t) = dy[b] / T for the mean; for kCls dy[b] at t = 0 and zeros elsewhere
  std::vector<int32_t> image(static_cast<size_t>(batch_ * tokens_));
  for (int64_t r = 0; r < batch_ * tokens_; ++r)
    image[r] = mode_ == Mode::kCls && r % tokens_ != 0 ? -1 : static_cast<int32_t>(r / tokens_);
  const std::vector<float> inv(mode_ == Mode::kMean ? image.size() : 0,
                               1.0f / static_cast<float>(tokens_));
  ops::permute_rows(dy, image, inv, dx);
  return dx;
}

}  // namespace moe
