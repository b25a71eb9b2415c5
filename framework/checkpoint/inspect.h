#pragma once
// Reading a checkpoint or weights file without a model (moe-ckpt info and verify):
// what it holds, and whether every documented field is there and intact.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/checkpoint/checkpoint.h"
#include "framework/checkpoint/h5_file.h"

namespace moe {

struct TensorEntry {
  std::string name;   // global name ("layers.1.moe.experts.w_up")
  Shape shape;        // logical
  std::string shard;  // "expert", "replicated", ... (the writer's annotation; buffers: "")
};

struct CheckpointSummary {
  std::string path;
  std::string format;  // kCheckpointFormat or kWeightsFormat
  int64_t format_version = 0;
  std::string framework_version;
  CheckpointOrigin origin;
  std::optional<TrainerState> trainer;  // checkpoints only
  int64_t optim_step = -1;              // checkpoints only
  std::vector<TensorEntry> params;      // /model
  std::vector<TensorEntry> buffers;     // /buffers
  uint64_t file_bytes = 0;
};

// The header fields and the table of tensors (no tensor data is read).
CheckpointSummary summarize_checkpoint(const H5File& file);
nlohmann::json summary_json(const CheckpointSummary& summary);

// Checks everything a reader relies on: the format attributes, /config, every /model
// and /buffers dataset float32 with a checksum that matches its data, for checkpoints
// the optimizer state of every parameter (same shape, checksums) and /trainer. The
// first problem is a user error naming the file and the field. Returns the number of
// tensors checked.
int64_t verify_checkpoint(const H5File& file);

}  // namespace moe
