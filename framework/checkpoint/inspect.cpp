#include "framework/checkpoint/inspect.h"

#include <filesystem>
#include <set>

#include "framework/checkpoint/checksum.h"
#include "framework/tensor/tensor.h"

namespace moe {
namespace {

std::vector<TensorEntry> entries(const H5File& file, const std::string& group) {
  std::vector<TensorEntry> out;
  if (!file.exists(group)) return out;
  for (const std::string& name : file.list(group)) {
    const std::string path = group + "/" + name;
    TensorEntry e{name, file.dataset_shape(path), ""};
    if (file.has_attr(path, "shard")) e.shard = file.string_attr(path, "shard");
    out.push_back(e);
  }
  return out;
}

// Reads a whole float dataset and compares its checksum attribute.
void check_tensor(const H5File& file, const std::string& path, const Shape& shape,
                  Buffer& scratch) {
  MOE_USER_CHECK(file.has_attr(path, "checksum"), file.path(), ": dataset ", path,
                 " has no checksum attribute");
  const uint64_t expected = file.uint_attr(path, "checksum");
  float* data = scratch.view(shape.numel() > 0 ? shape : Shape{1}).data;
  file.read_block(path, data, shape, {});
  MOE_USER_CHECK(block_checksum(data, shape, shape, {}) == expected, file.path(), ": dataset ",
                 path, " fails its checksum: the file is corrupted");
}

std::vector<int64_t> dims(const Shape& s) {
  return std::vector<int64_t>(s.dims.begin(), s.dims.begin() + s.rank);
}

}  // namespace

CheckpointSummary summarize_checkpoint(const H5File& file) {
  CheckpointSummary s;
  s.path = file.path();
  s.format = check_format(file);
  s.format_version = file.int_attr("/", "format_version");
  s.framework_version = file.string_attr("/", "framework_version");
  s.origin = read_origin(file);
  if (s.format == kCheckpointFormat) {
    s.trainer = read_trainer_state(file);
    s.optim_step = file.int_attr("/optim", "step");
  }
  s.params = entries(file, "/model");
  s.buffers = entries(file, "/buffers");
  std::error_code ec;
  s.file_bytes = std::filesystem::file_size(file.path(), ec);
  return s;
}

nlohmann::json summary_json(const CheckpointSummary& s) {
  nlohmann::ordered_json params = nlohmann::ordered_json::object();
  int64_t numel = 0;
  for (const TensorEntry& e : s.params) {
    params[e.name] = {{"shape", dims(e.shape)}, {"shard", e.shard}};
    numel += e.shape.numel();
  }
  nlohmann::ordered_json buffers = nlohmann::ordered_json::object();
  for (const TensorEntry& e : s.buffers) buffers[e.name] = {{"shape", dims(e.shape)}};
  nlohmann::ordered_json out = {
      {"path", s.path},
      {"format", s.format},
      {"format_version", s.format_version},
      {"framework_version", s.framework_version},
      {"model_family", s.origin.family},
      {"layout", {{"world_size", s.origin.world_size}, {"dp", s.origin.layout.dp},
                  {"tp", s.origin.layout.tp}, {"ep", s.origin.layout.ep},
                  {"etp", s.origin.layout.etp}}},
      {"file_bytes", s.file_bytes},
      {"parameters", numel}};
  if (s.trainer) {
    const TrainerState& t = *s.trainer;
    out["step"] = t.step;
    out["trainer"] = {{"step", t.step}, {"tokens_seen", t.tokens_seen},
                      {"rng_seed", t.rng_seed}, {"rng_counter", t.rng_counter},
                      {"data_position", t.data_position}, {"lr_schedule", t.lr_schedule},
                      {"lr_total_steps", t.lr_total_steps}, {"lr_warmup_steps", t.lr_warmup_steps},
                      {"lr_peak", t.lr_peak}, {"lr_min", t.lr_min},
                      {"lr_decay_fraction", t.lr_decay_fraction}, {"lr_last", t.lr_last}};
    out["optim_step"] = s.optim_step;
  }
  out["tensors"] = params;
  out["buffers"] = buffers;
  out["config"] = s.origin.config_ini;
  return out;
}

int64_t verify_checkpoint(const H5File& file) {
  const CheckpointSummary s = summarize_checkpoint(file);  // header fields, /trainer
  const std::string& path = file.path();
  MOE_USER_CHECK(!s.params.empty(), path, ": /model holds no parameters");
  Buffer scratch;
  int64_t checked = 0;
  for (const TensorEntry& e : s.params) {
    check_tensor(file, "/model/" + e.name, e.shape, scratch);
    ++checked;
  }
  for (const TensorEntry& e : s.buffers) {
    check_tensor(file, "/buffers/" + e.name, e.shape, scratch);
    ++checked;
  }
  if (s.format != kCheckpointFormat) return checked;
  std::set<std::string> names;
  for (const TensorEntry& e : s.params) {
    names.insert(e.name);
    for (int copy = 1; copy < BlockPlan::kCopies; ++copy) {
      const std::string state = tensor_path(e.name, copy);
      MOE_USER_CHECK(file.exists(state), path, ": optimizer state ", state, " is missing");
      const Shape shape = file.dataset_shape(state);
      MOE_USER_CHECK(shape == e.shape, path, ": ", state, " has shape ", shape.str(),
                     ", its parameter ", e.shape.str());
      check_tensor(file, state, shape, scratch);
      ++checked;
    }
  }
  for (const std::string& name : file.list("/optim"))
    MOE_USER_CHECK(names.count(name), path, ": /optim/", name, " belongs to no parameter");
  MOE_USER_CHECK(s.optim_step >= 0, path, ": /optim step ", s.optim_step, " is negative");
  return checked;
}

}  // namespace moe
