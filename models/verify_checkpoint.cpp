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
  const Config c = config_for_use(s.origin.config_ini);
  MOE_USER_CHECK(c.model.family == s.origin.family, file.path(), ": model_family ",
                 s.origin.family, " but the config says ", c.model.family);
  ParamStore store;
  LocalDispatcher dispatcher;
  const MoeRuntime runtime = MoeRuntime::local(dispatcher, c.moe.num_experts);
  // the network registers its parameters and state buffers in `store`, which owns them
  model_family(c.model.family).make_network(c, store, runtime);
  check_model_params(file, store);
  std::vector<std::string> expected;
  for (const StateBuffer& b : store.buffers()) expected.push_back(b.name);
  std::vector<std::string> held;
  for (const TensorEntry& e : s.buffers) {
    held.push_back(e.name);
    for (const StateBuffer& b : store.buffers())
      MOE_USER_CHECK(b.name != e.name || e.shape == b.shape, file.path(), ": buffer ", e.name,
                     " has shape ", e.shape.str(), ", the model expects ", b.shape.str());
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
