#pragma once
// The training loop of every model family (models/model.h): load the global batch of
// step s (a function of (seed, s)), forward, backward, clip, AdamW, aux-loss-free bias
// update; log progress, metrics and periodic evaluation; write checkpoints (resume from
// one, or initialise the weights from one: framework/checkpoint/checkpointer.h); save
// the weights to <run.dir>/model.h5; print a final JSON line with the family's
// evaluation metrics.

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "framework/checkpoint/checkpoint.h"
#include "framework/config/config.h"
#include "framework/core/log.h"
#include "framework/core/timer.h"
#include "framework/parallel/mpi_env.h"
#include "framework/parallel/topology.h"
#include "framework/train/step_guard.h"
#include "models/model.h"

namespace moe {

class Trainer {
 public:
  // Validates everything that can be validated (data files, run directory) before
  // writing anything; bad input throws a user moe::Error.
  Trainer(const Config& config, const MpiEnv& mpi);
  ~Trainer();
  // Trains config.train.steps steps; returns the final record (also printed). A run that
  // ends early on purpose throws RunStop on every rank (core/exit_status.h): a
  // non-finite step (exit 3, nothing written) or a stop signal (128 + signal, after a
  // checkpoint).
  nlohmann::json run();

 private:
  struct State;
  struct StepResult {
    LossParts loss;
    double grad_norm = 0.0;  // before clipping
    float lr = 0.0f;
    StepVerdict verdict;     // updated, skipped; a stop signal to honour after the step
  };
  // Seconds spent since the last log line, per phase.
  struct IntervalTimes {
    Stopwatch clock;
    double forward = 0, backward = 0, grad_sync = 0, optimizer = 0;
    double checkpoint = 0;  // writing checkpoints: not training time
    int64_t steps = 0;
    double training_seconds() const { return clock.seconds() - checkpoint; }
  };
  StepResult train_step(int64_t step, IntervalTimes& times);
  nlohmann::json interval_record(int64_t step, const StepResult& result,
                                 const IntervalTimes& times);
  void build_model();         // the MoE runtime (framework/moe/moe_factory.h), the model
  // Communicators whose statistics each telemetry group ("ep", "dp", "edp") sums.
  std::vector<std::pair<std::string, std::vector<Communicator*>>> telemetry_groups();
  nlohmann::json evaluate();  // the family's metrics, e.g. val_loss and val_bpb
  // <run.dir>/model.h5: weights, router biases, config (never from non-finite weights)
  void save_model();
  // Rank 0: the record to metrics.jsonl and TensorBoard, with the last evaluation's preview.
  void publish(const nlohmann::json& record);
  std::vector<NamedBuffer> model_buffers();  // layer state checkpoints hold (router biases)
  void restore_checkpoint();  // run.resume / run.init_from; sets the start step
  // False when the file could not be written and checkpoint.on_error = warn lets the
  // run go on; a failure otherwise ends the run (RunStop, exit 2).
  bool save_checkpoint(int64_t completed, float last_lr, IntervalTimes& times);
  nlohmann::json comm_record(double steps, double step_ms);
  nlohmann::json expert_load_record();
  void prepare_run_dir();
  // "the last checkpoint, <path>, is untouched (...)": for the messages of a stopped run
  std::string last_checkpoint_note() const;
  // Ends the run after step `completed` (checkpoint `saved` or not): throws RunStop with
  // exit status 128 + signal.
  [[noreturn]] void stop_on_signal(int signal, int64_t completed, bool saved);

  const Config& config_;
  const MpiEnv& mpi_;
  Logger log_;
  std::unique_ptr<State> s_;
};

}  // namespace moe
