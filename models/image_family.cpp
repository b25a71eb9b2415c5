#include "models/image_family.h"

#include "framework/core/error.h"

namespace moe {

namespace {

// > 0, and at most a bound far above any real model (framework/config/validate.cpp).
void require_size(const char* key, int value, int limit) {
  MOE_USER_CHECK(value > 0, key, ": ", value, " must be > 0");
  MOE_USER_CHECK(value <= limit, key, ": ", value, " exceeds the limit of ", limit);
}

}  // namespace

void validate_image_options(const ModelConfig& m, bool sincos) {
  require_size("model.image_size", m.image_size, 4096);
  require_size("model.image_channels", m.image_channels, 64);
  MOE_USER_CHECK(m.patch_size > 0, "model.patch_size: ", m.patch_size, " must be > 0");
  MOE_USER_CHECK(m.image_size % m.patch_size == 0, "model.image_size: ", m.image_size,
                 " must be divisible by model.patch_size (", m.patch_size, ")");
  require_size("model.num_classes", m.num_classes, 1 << 20);
  // 2-D sin-cos splits the width into four equal (sin, cos) x (row, column) parts.
  MOE_USER_CHECK(!sincos || m.d_model % 4 == 0, "model.d_model: ", m.d_model,
                 " must be divisible by 4 for sin-cos position embeddings");
  MOE_USER_CHECK(m.class_dropout >= 0.0f && m.class_dropout < 1.0f, "model.class_dropout: ",
                 m.class_dropout, " must be in [0, 1)");
}

ImageSplits::ImageSplits(const Config& c)
    : train_data(open_image_split(c, /*train=*/true)),
      val_data(open_image_split(c, /*train=*/false)),
      train(train_data, c.data.batch_size, c.train.seed,
            {c.data.hflip, c.data.image_mean, c.data.image_std}),
      val(val_data, c.data.batch_size, c.train.seed, {false, c.data.image_mean, c.data.image_std}) {}

ImageDataset open_image_split(const Config& c, bool train) {
  const std::string& images = train ? c.data.train_path : c.data.val_path;
  const std::string& labels = train ? c.data.train_labels : c.data.val_labels;
  const char* images_key = train ? "data.train_path" : "data.val_path";
  const char* labels_key = train ? "data.train_labels" : "data.val_labels";
  MOE_USER_CHECK(!images.empty(), images_key, ": no IDX images given");
  MOE_USER_CHECK(!labels.empty(), labels_key, ": no IDX labels given");
  ImageDataset data(images, labels, c.model.num_classes);
  data.require_shape(c.model.image_channels, c.model.image_size, images_key);
  return data;
}

}  // namespace moe
