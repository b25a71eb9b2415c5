#pragma once
// Checkpoint files: one HDF5 file per checkpoint, every tensor logical (unsharded), so
// that any layout and any HDF5 reader can use it. docs/checkpoint-format.md documents
// every field; this is its writer and reader.
//
//   /                       attributes format, format_version, framework_version,
//                           model_family, world_size, parallel_{dp,tp,ep,etp}
//   /config                 attribute ini: the resolved config
//   /model/<name>           float32, the logical tensor of every parameter
//   /optim                  attributes: step (AdamW steps taken), hyperparameters
//   /optim/<name>/exp_avg, /optim/<name>/exp_avg_sq     float32, logical shapes
//   /buffers/<name>         float32 layer state that is not a parameter (router biases)
//   /trainer                attributes: step, tokens_seen, RNG, data position, schedule
//
// Every float dataset carries a `checksum` attribute (checksum.h), and the root
// attribute `attrs_checksum` covers every attribute (attr_checksum.h). A weights file
// (format "moe-weights": <run.dir>/model.h5, moe-ckpt export --format h5) has only
// the root attributes, /config, /model and /buffers.
//
// Writing and reading are collective over a communicator: each rank writes or reads
// its own blocks as hyperslabs of the one file with MPI-IO (BlockPlan says which
// replica writes a block); nothing is gathered on one rank. Bad files (missing,
// truncated, foreign, another format version or model, a parameter of another shape,
// a failed checksum) are user errors naming the file and what is wrong.

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "framework/checkpoint/block_plan.h"
#include "framework/checkpoint/h5_file.h"
#include "framework/config/config.h"
#include "framework/optim/adamw.h"
#include "framework/parallel/communicator.h"
#include "framework/tensor/param_store.h"

namespace moe {

inline constexpr const char* kCheckpointFormat = "moe-checkpoint";
inline constexpr const char* kWeightsFormat = "moe-weights";
inline constexpr int64_t kCheckpointFormatVersion = 3;

// Layer state that is not a parameter, saved under /buffers/<name>; equal on every rank
// (the aux-loss-free router bias "layers.1.moe.router.bias", [E]).
struct NamedBuffer {
  std::string name;
  std::span<float> data;
  bool optional = false;  // StateBuffer::optional: absent from a file reads as zeros
};

// /trainer: where a run stands after `step` optimizer steps.
struct TrainerState {
  int64_t step = 0;           // completed optimizer steps
  int64_t tokens_seen = 0;    // step * tokens per step
  // Every random stream is counter-based (Philox keyed by the seed and a stream name,
  // counted by step and sample), so the seed and the step are the whole RNG state.
  uint64_t rng_seed = 0;
  int64_t rng_counter = 0;    // = step
  int64_t data_position = 0;  // the next global batch: its index is the step
  // The LR schedule is a pure function of the step (lr_schedule.h); its parameters:
  std::string lr_schedule;
  int64_t lr_total_steps = 0, lr_warmup_steps = 0;
  double lr_peak = 0, lr_min = 0, lr_decay_fraction = 0;
  double lr_last = 0;         // the learning rate of the last step taken
};

// The trainer state after `step` steps of the run `config` describes.
TrainerState make_trainer_state(const Config& config, int64_t step, int64_t tokens_per_step,
                                double last_lr);

// What a file holds, as references to the live state of this rank.
struct CheckpointContent {
  ParamStore* store = nullptr;
  AdamW* optimizer = nullptr;       // null: a weights file
  std::vector<NamedBuffer> buffers;
  TrainerState* trainer = nullptr;  // null: a weights file
};

// Who the file is from: the root attributes and /config.
struct CheckpointOrigin {
  std::string config_ini;
  std::string family;
  ParallelConfig layout;
  int world_size = 1;
};

// A file that could not be written (a full disk, an I/O error), thrown by
// write_checkpoint on every rank together once the ranks have agreed on it: the
// temporary file is removed and nothing else changed, so the caller may go on
// (checkpoint.on_error = warn) or stop (exit 2). The message is the first failure, from
// the lowest rank that had one.
class WriteError : public Error {
 public:
  explicit WriteError(const std::string& what) : Error(what, /*user_error=*/true) {}
};

struct WriteOptions {
  // Collective MPI-IO transfers of the tensor data (checkpoint.collective_io), or
  // independent ones (each rank writes its blocks on its own).
  bool collective = true;
  // Called between the model and the optimizer state: the test hook
  // (MOE_TEST_CHECKPOINT_PAUSE, docs/checkpoint-format.md). May be empty.
  std::function<void()> mid_write;
};

// Writes `content` to `path` (through "<path>.tmp", renamed by close): a checkpoint
// when content.optimizer and content.trainer are set, else a weights file. Collective
// over `world` (the file is written through its MPI communicator). The directory must
// exist. A failed
// data transfer does not stop a rank: every rank makes all the (collective) calls, then
// they agree, and a failure anywhere throws WriteError everywhere.
void write_checkpoint(const std::string& path, const CheckpointContent& content,
                      const CheckpointOrigin& origin, const BlockPlan& plan,
                      Communicator& world, const WriteOptions& options = {});

enum class ReadWhat { kWeights, kEverything };

// Reads a checkpoint (kEverything: weights, optimizer state, buffers, trainer state) or
// the weights and buffers of a checkpoint or weights file (kWeights) into `content`,
// each rank its own blocks. `family` is the model family the caller builds; the file
// must hold it. Checks every checksum it reads. Returns the file's origin. Collective;
// the data transfers are independent: no rank waits for another to read, and the
// replicated tensors every rank reads need no redistribution (docs/benchmarks.md).
CheckpointOrigin read_checkpoint(const std::string& path, const CheckpointContent& content,
                                 ReadWhat what, const std::string& family,
                                 const BlockPlan& plan, Communicator& world);

// The checks shared by every reader of a file: its format attributes and the
// attributes checksum. Returns kCheckpointFormat or kWeightsFormat; anything else is a
// user error.
std::string check_format(const H5File& file);

// The config a model was trained with (the text a file stores), for using the model
// elsewhere: the files the run read, resumed or started from need not exist here, so
// data.*_path, data.*_labels, run.resume and run.init_from are cleared; `overrides`
// ("section.key=value") come last.
Config config_for_use(const std::string& ini, const std::vector<std::string>& overrides = {});

// Checks that every parameter of `store` is in group /model with its logical shape and
// that /model holds nothing else; user errors name the parameter.
void check_model_params(const H5File& file, const ParamStore& store);

// "/model/<name>", "/optim/<name>/exp_avg", ... for copy 0, 1, 2 of a parameter.
std::string tensor_path(const std::string& name, int copy);

// The root attributes and /config (collective in a parallel file); `format` is
// kCheckpointFormat or kWeightsFormat.
void write_origin(H5File& file, const CheckpointOrigin& origin, const std::string& format);
CheckpointOrigin read_origin(const H5File& file);
// The attributes of /trainer; a user error when one is missing or they disagree.
TrainerState read_trainer_state(const H5File& file);

}  // namespace moe
