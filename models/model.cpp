#include "models/model.h"

#include "models/dit_moe/dit_moe.h"
#include "models/moe_gpt/moe_gpt.h"
#include "models/vit_moe/vit_moe.h"

namespace moe {

std::unique_ptr<Model> make_model(const Config& config, ParamStore& store,
                                  const MoeRuntime& runtime) {
  const std::string& family = config.model.family;
  if (family == "moe_gpt") return make_moe_gpt_model(config, store, runtime);
  if (family == "vit_moe") return make_vit_moe_model(config, store, runtime);
  if (family == "dit_moe") return make_dit_moe_model(config, store, runtime);
  MOE_USER_FAIL("model.family: '", family, "' is not a model family");
}

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
