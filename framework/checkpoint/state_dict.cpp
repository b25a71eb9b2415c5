#include "framework/checkpoint/state_dict.h"

namespace moe {

namespace {
std::string dataset_name(const std::string& group, const std::string& name) {
  if (group.empty() || group == "/") return "/" + name;
  return group.back() == '/' ? group + name : group + "/" + name;
}

void require_whole(const Param& p) {
  MOE_CHECK(p.local_shape == p.spec.shape,
            "parameter ", p.spec.name, " is sharded (local ", p.local_shape.str(),
            " of logical ", p.spec.shape.str(),
            "); sharded stores are written by write_checkpoint (checkpoint.h)");
}
}  // namespace

void save_params(H5File& file, const std::string& group, const ParamStore& store,
                 bool grads) {
  for (const Param& p : store.params()) {
    require_whole(p);
    const float* data = grads ? p.grad.data() : p.value.data();
    file.write(dataset_name(group, p.spec.name), data, p.spec.shape);
  }
}

void load_params(const H5File& file, const std::string& group, ParamStore& store) {
  for (Param& p : store.params()) {
    const std::string name = dataset_name(group, p.spec.name);
    if (!file.exists(name))
      MOE_USER_FAIL(file.path(), ": parameter ", p.spec.name, " is missing (no dataset ",
                    name, ")");
    const Shape stored = file.dataset_shape(name);
    if (!(stored == p.spec.shape))
      MOE_USER_FAIL(file.path(), ": parameter ", p.spec.name, " has shape ", stored.str(),
                    " in the file, the model expects ", p.spec.shape.str());
    file.read_block(name, p.value.data(), p.local_shape, p.offset);
  }
}

void load_weights(const H5File& file, ParamStore& store) {
  load_params(file, "/model", store);
  for (StateBuffer& b : store.buffers()) {
    const std::string name = "/buffers/" + b.name;
    if (file.exists(name)) file.read(name, b.value.data(), b.shape);
  }
}

}  // namespace moe
