#include "framework/data/image_sampler.h"

#include <algorithm>

#include "framework/core/error.h"

namespace moe {

ImageBatchSampler::ImageBatchSampler(const ImageDataset& data, int64_t global_batch,
                                     uint64_t seed, ImageTransform transform)
    : data_(data),
      global_batch_(global_batch),
      transform_(transform),
      train_key_(philox_key(seed, hash_name("data.train"))),
      flip_key_(philox_key(seed, hash_name("data.hflip"))) {
  MOE_CHECK(global_batch > 0, "ImageBatchSampler: global batch ", global_batch);
  MOE_USER_CHECK(data.size() > 0, data.images_path(), ": holds no images");
}

int64_t ImageBatchSampler::local_batch(int dp_size) const {
  MOE_CHECK(dp_size > 0 && global_batch_ % dp_size == 0, "global batch ", global_batch_,
            " is not divisible by dp size ", dp_size);
  return global_batch_ / dp_size;
}

int64_t ImageBatchSampler::sample_index(int64_t step, int64_t b) const {
  return static_cast<int64_t>(random_u64(train_key_, static_cast<uint64_t>(step),
                                         static_cast<uint64_t>(b)) %
                              static_cast<uint64_t>(data_.size()));
}

bool ImageBatchSampler::sample_flipped(int64_t step, int64_t b) const {
  return transform_.hflip &&
         (random_u64(flip_key_, static_cast<uint64_t>(step), static_cast<uint64_t>(b)) & 1u);
}

void ImageBatchSampler::load(int64_t item, bool flip, float* out) const {
  const int64_t h = data_.height(), w = data_.width();
  const uint8_t* pixels = data_.image(item);
  const float scale = 1.0f / (255.0f * transform_.std);
  const float shift = transform_.mean / transform_.std;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const uint8_t p = pixels[y * w + (flip ? w - 1 - x : x)];
      out[y * w + x] = static_cast<float>(p) * scale - shift;
    }
}

void ImageBatchSampler::batch(int64_t step, int dp_rank, int dp_size, std::span<float> images,
                              std::span<int32_t> labels) const {
  const int64_t rows = local_batch(dp_size);
  MOE_CHECK(dp_rank >= 0 && dp_rank < dp_size, "dp rank ", dp_rank, " of ", dp_size);
  MOE_CHECK(static_cast<int64_t>(images.size()) == rows * image_floats() &&
                static_cast<int64_t>(labels.size()) == rows,
            "image batch buffers hold ", images.size(), " floats and ", labels.size(),
            " labels, expected ", rows, " images");
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t b = dp_rank * rows + r;  // row of the global batch
    const int64_t item = sample_index(step, b);
    load(item, sample_flipped(step, b), images.data() + r * image_floats());
    labels[r] = data_.label(item);
  }
}

int64_t ImageBatchSampler::eval_batch(int64_t index, int dp_rank, int dp_size,
                                      std::span<float> images,
                                      std::span<int32_t> labels) const {
  const int64_t rows = local_batch(dp_size);
  MOE_CHECK(static_cast<int64_t>(images.size()) >= rows * image_floats() &&
                static_cast<int64_t>(labels.size()) >= rows,
            "evaluation buffers too small for ", rows, " images");
  const int64_t first = index * global_batch_ + dp_rank * rows;
  const int64_t count = std::clamp<int64_t>(data_.size() - first, 0, rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t item = r < count ? first + r : 0;
    load(item, false, images.data() + r * image_floats());
    labels[r] = data_.label(item);
  }
  return count;
}

int64_t ImageBatchSampler::eval_batches_per_epoch() const {
  return (data_.size() + global_batch_ - 1) / global_batch_;
}

}  // namespace moe
