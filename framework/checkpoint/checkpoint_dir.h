#pragma once
// CheckpointDir: the checkpoints of a run (checkpoint.dir, default <run.dir>/checkpoints).
//
//   step_00000040.h5   one file per checkpoint (8-digit step: names sort by step)
//   latest             text: the file name of the newest complete checkpoint
//
// The order of a save makes every moment of a crash safe: the file is written as
// step_N.h5.tmp and renamed when complete (H5File); then `latest` is written as
// latest.tmp and renamed over the old pointer; only then are old checkpoints removed.
// A kill at any moment leaves `latest` naming a complete file. Rank 0 alone touches
// the directory.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "framework/config/config.h"

namespace moe {

// The checkpoint directory of a run: checkpoint.dir, or <run.dir>/checkpoints.
std::string checkpoint_dir_of(const Config& config);

class CheckpointDir {
 public:
  explicit CheckpointDir(std::string dir) : dir_(std::move(dir)) {}

  const std::string& dir() const { return dir_; }
  // "<dir>/step_00000040.h5"
  std::string path_for(int64_t step) const;
  static std::string file_name(int64_t step);
  // The step of a checkpoint file name ("step_00000040.h5" -> 40); nullopt otherwise.
  static std::optional<int64_t> step_of(const std::string& file_name);

  // The checkpoint `latest` names; nullopt when there is no pointer. A pointer to a
  // missing file, or one that is not a checkpoint name, is a user error.
  std::optional<std::string> latest() const;
  // Steps of the checkpoint files present, ascending.
  std::vector<int64_t> steps() const;

  void create() const;  // mkdir -p; a user error when impossible
  // Points `latest` at step_N.h5 (atomic: latest.tmp, fsync, rename).
  void publish(int64_t step) const;
  // Keeps the `keep` newest checkpoints up to `step` (the one just published among
  // them), removes older ones, checkpoints after `step` (left by the abandoned future
  // of an earlier run resumed from an older checkpoint) and stale *.tmp files.
  void retain(int keep, int64_t step) const;

 private:
  std::string dir_;
};

}  // namespace moe
