#include "framework/checkpoint/state_dict.h"

#include <algorithm>
#include <optional>

#include "framework/moe/placement.h"

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
            "); sharded state dicts need the parallel HDF5 writer");
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
    require_whole(p);
    const std::string name = dataset_name(group, p.spec.name);
    if (!file.exists(name))
      MOE_USER_FAIL(file.path(), ": parameter ", p.spec.name, " is missing (no dataset ",
                    name, ")");
    const Shape stored = file.dataset_shape(name);
    if (!(stored == p.spec.shape))
      MOE_USER_FAIL(file.path(), ": parameter ", p.spec.name, " has shape ", stored.str(),
                    " in the file, the model expects ", p.spec.shape.str());
    file.read(name, p.value.data(), p.spec.shape);
  }
}

void save_params_gathered(H5File* file, const std::string& group, const ParamStore& store,
                          Communicator& ep) {
  const bool writer = ep.rank() == 0;
  MOE_CHECK(writer == (file != nullptr), "save_params_gathered: the file belongs to ep rank 0");
  Buffer whole;
  for (const Param& p : store.params()) {
    const bool expert = p.spec.shard == Shard::kExpert;
    if (!expert || ep.size() == 1) {
      require_whole(p);
      if (writer) file->write(dataset_name(group, p.spec.name), p.value.data(), p.spec.shape);
      continue;
    }
    // (E, ...) from per-rank blocks of E_r experts; rows of `per_expert` floats
    const int64_t per_expert = p.spec.shape.numel() / p.spec.shape[0];
    if (!writer) {
      ep.send<float>({p.value.data(), static_cast<size_t>(p.numel())}, 0);
      continue;
    }
    float* out = whole.view(p.spec.shape).data;
    std::copy_n(p.value.data(), p.numel(), out + p.offset[0] * per_expert);
    int64_t at = p.offset[0] + p.local_shape[0];
    for (int r = 1; r < ep.size(); ++r) {
      // rank r's block follows rank r-1's; its size is the placement's count
      const int64_t experts = ExpertPlacement{p.spec.shape[0], ep.size(), r}.num_local();
      ep.recv<float>({out + at * per_expert, static_cast<size_t>(experts * per_expert)}, r);
      at += experts;
    }
    MOE_CHECK(at == p.spec.shape[0], "gathering ", p.spec.name, ": ", at, " of ",
              p.spec.shape[0], " experts");
    file->write(dataset_name(group, p.spec.name), out, p.spec.shape);
  }
}

}  // namespace moe
