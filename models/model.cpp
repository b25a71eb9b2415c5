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

}  // namespace moe
