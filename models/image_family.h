#pragma once
// What the image families (vit_moe, dit_moe) share: the checks of the image options and
// the IDX splits they train and evaluate on (docs/image-models.md).

#include "framework/config/config.h"
#include "framework/data/idx.h"
#include "framework/data/image_sampler.h"

namespace moe {

// model.image_size, image_channels, patch_size, num_classes, class_dropout; with
// sin-cos positions (sincos: whether this family's setting uses them) a width that
// splits in four. User errors naming the key.
void validate_image_options(const ModelConfig& m, bool sincos);

// The IDX images and labels of the training split (data.train_path, data.train_labels)
// or the evaluation split (data.val_path, data.val_labels), checked against
// model.image_channels and model.image_size; a missing or bad file is a user error
// naming its key.
ImageDataset open_image_split(const Config& config, bool train);

// The training and evaluation splits of an image family with their samplers (training:
// data.hflip; both: data.image_mean, data.image_std; data.batch_size, train.seed).
struct ImageSplits {
  explicit ImageSplits(const Config& config);
  ImageSplits(const ImageSplits&) = delete;  // the samplers point at the datasets
  ImageSplits& operator=(const ImageSplits&) = delete;

  ImageDataset train_data, val_data;
  ImageBatchSampler train, val;
};

}  // namespace moe
