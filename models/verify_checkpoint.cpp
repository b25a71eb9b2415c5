#include "models/verify_checkpoint.h"

#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/moe/dispatcher.h"
#include "models/registry.h"

namespace moe {
namespace {

// The parameters and router biases of the model the file's config describes, built
// without its data (paths in the config may not exist here).
void check_against_model(const H5File& file, const CheckpointSummary& s) {
  const Config c = load_config_text(
      s.origin.config_ini, {"data.train_path=", "data.val_path=", "data.train_labels=",
                            "data.val_labels=", "run.resume=", "run.init_from="});
  MOE_USER_CHECK(c.model.family == s.origin.family, file.path(), ": model_family ",
                 s.origin.family, " but the config says ", c.model.family);
  ParamStore store;
  LocalDispatcher dispatcher;
  const MoeRuntime runtime = MoeRuntime::local(dispatcher, c.moe.num_experts);
  const std::vector<int> blocks =
      model_family(c.model.family).make_network(c, store, runtime)->moe_layer_blocks();
  check_model_params(file, store);
  std::vector<std::string> expected;
  for (int b : blocks) expected.push_back("layers." + std::to_string(b) + ".moe.router.bias");
  std::vector<std::string> held;
  for (const TensorEntry& e : s.buffers) {
    held.push_back(e.name);
    MOE_USER_CHECK(e.shape == Shape{c.moe.num_experts}, file.path(), ": buffer ", e.name,
                   " has shape ", e.shape.str(), ", the model expects (", c.moe.num_experts, ")");
  }
  MOE_USER_CHECK(held == expected, file.path(), ": /buffers holds ", held.size(),
                 " router biases, the model has ", expected.size(), " MoE layers");
}

}  // namespace

VerifiedCheckpoint verify_against_model(const H5File& file) {
  VerifiedCheckpoint v;
  v.tensors = verify_checkpoint(file);
  v.summary = summarize_checkpoint(file);
  check_against_model(file, v.summary);
  return v;
}

}  // namespace moe
