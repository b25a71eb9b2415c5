#pragma once
// The (seed, step) batch sampler of the image families, the twin of sampler.h's
// BatchSampler: the global batch of a step is a pure function of (seed, step), and
// data-parallel rank r takes images [r * B_local, (r + 1) * B_local) of it.
//
// Image b of the global batch of step s is item
//   i = random_u64(philox_key(seed, hash_name("data.train")), s, b) % N
// (uniform with replacement), flipped horizontally when data.hflip and bit 0 of
// random_u64(philox_key(seed, hash_name("data.hflip")), s, b) is set. A pixel p in
// [0, 255] is fed as (p / 255 - mean) / std. Evaluation takes the set in order, without
// augmentation: evaluation batch k is items [k*B, k*B + B); in the last one, rows past
// the end of the set repeat item 0 and do not count (every rank always runs B_local
// rows, so that the collectives of the MoE layers match).

#include <cstdint>
#include <span>

#include "framework/core/rng.h"
#include "framework/data/idx.h"

namespace moe {

struct ImageTransform {
  bool hflip = false;  // random horizontal flips (training only)
  float mean = 0.5f;   // x = (p / 255 - mean) / std
  float std = 0.5f;
};

class ImageBatchSampler {
 public:
  // `data` must outlive the sampler. global_batch = B, the images of one step on all ranks.
  ImageBatchSampler(const ImageDataset& data, int64_t global_batch, uint64_t seed,
                    ImageTransform transform);

  int64_t global_batch() const { return global_batch_; }
  int64_t local_batch(int dp_size) const;  // B / dp_size (dp_size must divide B)
  int64_t image_floats() const { return data_.channels() * data_.height() * data_.width(); }

  // Training batch of `step` for dp rank `dp_rank` of `dp_size`: images (B_local, 1, H, W)
  // and labels (B_local).
  void batch(int64_t step, int dp_rank, int dp_size, std::span<float> images,
             std::span<int32_t> labels) const;
  // Evaluation batch `index`: this rank's share of items [index*B, index*B + B) of the
  // set, B_local rows, padded past the set with item 0; returns how many rows hold
  // items of the batch (maybe 0).
  int64_t eval_batch(int64_t index, int dp_rank, int dp_size, std::span<float> images,
                     std::span<int32_t> labels) const;
  // Evaluation batches that cover the whole set.
  int64_t eval_batches_per_epoch() const;

  // Dataset item and flip of image b of the global training batch of `step`.
  int64_t sample_index(int64_t step, int64_t b) const;
  bool sample_flipped(int64_t step, int64_t b) const;

 private:
  void load(int64_t item, bool flip, float* out) const;

  const ImageDataset& data_;
  int64_t global_batch_;
  ImageTransform transform_;
  PhiloxKey train_key_, flip_key_;
};

}  // namespace moe
