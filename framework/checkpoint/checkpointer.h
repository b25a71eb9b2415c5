#pragma once
// Checkpointer: the checkpoints of one training run, as the trainer uses them.
//
//   Checkpointer ckpt(config, world, store, optimizer, buffers, log);  // collective
//   std::optional<TrainerState> from = ckpt.restore();  // run.resume / run.init_from
//   ... after step s:  if (ckpt.due(s)) ckpt.save(state);
//   ckpt.save_weights(run_dir / "model.h5");
//
// restore(): run.resume (auto: what `latest` of checkpoint.dir names; none: a fresh
// start; or a path) loads the whole state (weights, AdamW state and step count, router
// biases, trainer state) into whatever layout this run has; otherwise run.init_from
// loads weights and router biases only (a checkpoint or a weights file), with a fresh
// optimizer and schedule. A resume that finds a checkpoint wins over init_from, so one
// command line both starts a fine-tuning job and continues it after a preemption.
//
// save(): every rank writes its blocks of step_N.h5 (checkpoint_dir.h), then rank 0
// points `latest` at it and applies checkpoint.keep. Test hook: with the environment
// variable MOE_TEST_CHECKPOINT_PAUSE=STEP[:SECONDS] the save of step STEP prints
// "test hook: pausing ..." and sleeps SECONDS (default 60) with the model written and
// the optimizer state not yet, so a test can kill the job in mid-write.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "framework/checkpoint/block_plan.h"
#include "framework/checkpoint/checkpoint.h"
#include "framework/checkpoint/checkpoint_dir.h"
#include "framework/config/config.h"
#include "framework/core/log.h"
#include "framework/optim/adamw.h"
#include "framework/parallel/communicator.h"

namespace moe {

class Checkpointer {
 public:
  // Collective over `world` (an MPI communicator): plans who writes which block.
  Checkpointer(const Config& config, Communicator& world, ParamStore& store, AdamW& optimizer,
               std::vector<NamedBuffer> buffers, const Logger& log);

  // The state to continue from (nullopt: step 0, with or without init_from weights).
  // Bad or missing checkpoints are user errors; nothing is written.
  std::optional<TrainerState> restore();
  // A checkpoint is due after `completed` of `total` steps: every checkpoint.interval
  // steps and after the last.
  bool due(int64_t completed, int64_t total) const;
  // Collective: writes the checkpoint of `state`, publishes it, applies retention.
  void save(const TrainerState& state);
  // Collective: the weights file `path` (format moe-weights).
  void save_weights(const std::string& path);

  const CheckpointDir& dir() const { return dir_; }
  // Collective: who writes which block again, after blocks moved (fssdp re-sharding).
  void refresh_blocks() { plan_ = BlockPlan(store_, world_); }

 private:
  std::optional<std::string> resume_path() const;
  CheckpointOrigin origin() const;
  void pause_for_test(int64_t step) const;

  const Config& config_;
  Communicator& world_;
  ParamStore& store_;
  AdamW& optimizer_;
  std::vector<NamedBuffer> buffers_;
  const Logger& log_;
  BlockPlan plan_;
  CheckpointDir dir_;
  int64_t pause_step_ = -1;  // test hook
  int pause_seconds_ = 60;
};

// "train.steps: 20 -> 40" for every key whose value differs between two resolved INI
// texts, leaving out the run.* and parallel.* keys (where a resumed run may differ).
std::vector<std::string> config_differences(const std::string& before, const std::string& after);

}  // namespace moe
