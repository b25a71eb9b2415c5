#include "framework/train/trainer.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "framework/checkpoint/checkpointer.h"
#include "framework/core/exit_status.h"
#include "framework/core/timer.h"
#include "framework/kernels/device.h"
#include "framework/kernels/ops.h"
#include "framework/optim/adamw.h"
#include "framework/optim/clip.h"
#include "framework/optim/lr_schedule.h"
#include "framework/tensor/device_memory.h"
#include "framework/train/device_layout.h"
#include "framework/train/expert_ownership.h"
#include "framework/train/memory_record.h"
#include "framework/train/metrics.h"
#include "framework/moe/moe_factory.h"
#include "framework/parallel/device_group.h"
#include "framework/parallel/grad_sync.h"
#include "framework/parallel/process_groups.h"
#include "framework/parallel/watchdog.h"
#include "framework/train/peak_flops.h"
#include "framework/train/preflight.h"
#include "framework/train/run_lock.h"
#include "framework/train/step_guard.h"
#include "framework/train/stop_signal.h"
#include "framework/train/tensorboard.h"
#include "models/registry.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace moe {
namespace fs = std::filesystem;

struct Trainer::State {
  std::unique_ptr<ComputeDevice> device;  // run.device; outlives everything computed on it
  std::unique_ptr<Watchdog> watchdog;  // parallel.timeout_s; outlives every communicator
  ProcessGroups groups;
  // run.device = cuda: NCCL over the dp and edp ranks, for the gradient buckets
  std::unique_ptr<Communicator> device_dp, device_edp;
  int dp_rank = 0, dp_size = 1;
  ParamStore store;
  // Start-up notes (topology, dispatcher choice), printed by run(): a bad input found
  // after them must still be one line.
  std::vector<std::string> notes;
  std::unique_ptr<MoeStack> moe;  // dispatchers and the runtime the MoE layers share
  std::unique_ptr<Model> model;  // the family of model.family, with its data
  std::unique_ptr<ExpertOwnership> ownership;  // fssdp with parallel.reshard_interval
  int64_t tokens_per_sample = 0;  // sequence positions of one sample (the family's)
  std::unique_ptr<GradSync> grad_sync;
  std::unique_ptr<AdamW> optimizer;
  std::unique_ptr<Checkpointer> checkpointer;
  std::unique_ptr<RunLock> run_lock;  // rank 0: run.dir and checkpoint.dir are this run's
  std::unique_ptr<StepGuard> guard;   // non-finite steps and stop signals, agreed per step
  StopSignals stop_signals;           // SIGTERM / SIGINT finish the step, then stop
  int64_t total_params = 0;           // the model's, logical (every rank's share summed)
  int64_t replica_peak = 0;  // fssdp: most bytes of materialised replicas after a forward
  int64_t start_step = 0;  // steps already taken: > 0 when resumed
  LrSchedule schedule;
  MetricsWriter metrics;
  std::unique_ptr<TensorBoardWriter> tensorboard;  // rank 0 with run.tensorboard
  std::optional<PreviewImage> preview;             // of the last evaluation, for TensorBoard
  double peak_flops = 0.0;               // FLOP/s of the cores in use
  int threads = 1;

  explicit State(const Config& c) : schedule(c.optim, c.train.steps) {}
};

namespace {

// Threads of this rank: the node's cores shared among its ranks unless configured.
int rank_threads(const Config& config, const MpiEnv& mpi) {
  if (config.train.threads > 0) return config.train.threads;
  const int cores = omp_get_num_procs();
  return std::max(1, cores / std::max(1, mpi.local_size()));
}

// Forward + backward milliseconds per step of each model component.
nlohmann::json component_record(const ComponentTimes& t, int64_t steps) {
  const double k = 1e3 / static_cast<double>(steps);
  return {{"embed", t.embed * k},   {"attention", t.attention * k},
          {"dense_ffn", t.dense_ffn * k}, {"moe", t.moe * k},
          {"head", t.head * k}};
}

std::string format_duration(double seconds);

// "step 120/600 | loss 2.1034 | lr 1.93e-03 | 2480 tok/s | MFU 43.9% | val bpb ... | ETA 9m41s"
std::string progress_line(const nlohmann::json& r, const nlohmann::json& eval,
                          int64_t total_steps, double eta_s) {
  std::ostringstream line;
  line << "step " << r["step"].get<int64_t>() << "/" << total_steps << " | loss " << std::fixed
       << std::setprecision(4) << r["loss"].get<double>() << " | lr " << std::scientific
       << std::setprecision(2) << r["lr"].get<double>() << " | " << std::fixed
       << std::setprecision(0) << r["tokens_per_s"].get<double>() << " tok/s | MFU "
       << std::setprecision(1) << r["mfu"].get<double>() * 100 << "%";
  for (const auto& [key, value] : eval.items())
    line << " | " << key << " " << std::setprecision(4) << value.get<double>();
  line << " | ETA " << format_duration(eta_s);
  return line.str();
}

std::string format_duration(double seconds) {
  const int64_t s = static_cast<int64_t>(seconds);
  std::ostringstream os;
  if (s >= 3600) os << s / 3600 << "h";
  if (s >= 60) os << (s / 60) % 60 << "m";
  os << s % 60 << "s";
  return os.str();
}

}  // namespace

Trainer::Trainer(const Config& config, const MpiEnv& mpi)
    : config_(config), mpi_(mpi), log_(mpi.rank()) {
  check_world_size(config.parallel, mpi.size());
  // Everything that can reject the input happens before the first file is written:
  // make_model opens and validates the family's data. Rank 0 writes only after the
  // collectives below, which a rank that failed never reaches (its error ends the job).
  s_ = std::make_unique<State>(config);
  check_device_layout(config);  // run.device = cuda: the layouts not wired yet
  s_->device = std::make_unique<ComputeDevice>(config.run.device, mpi.local_rank(),
                                               mpi.local_size(), config.run.share_gpus);
  s_->watchdog = std::make_unique<Watchdog>(config.parallel.timeout_s, mpi.rank());
  // parallel.expert_sharding = fssdp shards the experts over the dp ranks: their group
  ParallelConfig layout = config.parallel;
  if (layout.expert_sharding == ExpertSharding::kFssdp) layout.ep = layout.dp;
  s_->groups = make_process_groups(mpi, layout);
  const ProcessGroups& g = s_->groups;
  for (const auto& [comm, name] : {std::pair{g.world.get(), "world"}, {g.dp.get(), "dp"},
                                   {g.tp.get(), "tp"}, {g.ep.get(), "ep"},
                                   {g.edp.get(), "edp"}, {g.etp.get(), "etp"}})
    s_->watchdog->watch(*comm, name);
  s_->device_dp = make_device_group(config.run.device, *s_->groups.dp);
  s_->device_edp = make_device_group(config.run.device, *s_->groups.edp);
  s_->dp_rank = s_->groups.dp->rank();
  s_->dp_size = s_->groups.dp->size();
  build_model();
  const std::vector<Communicator*> exchange = s_->moe->exchange_groups();
  if (exchange.size() == 3) {  // a two-level split of ep: its node and cross-node groups
    s_->watchdog->watch(*exchange[1], "ep.intra");
    s_->watchdog->watch(*exchange[2], "ep.inter");
  }
  if (Communicator* sparse = s_->moe->sparse_group()) s_->watchdog->watch(*sparse, "sparse");
  for (const Param& p : s_->store.params()) s_->total_params += p.spec.shape.numel();

  // Pre-flight (preflight.h): before the optimizer state and the activations exist.
  s_->threads = rank_threads(config, mpi);
  check_threads(s_->threads);
  const MemoryEstimate memory =
      estimate_memory(config, s_->store.numel(), s_->tokens_per_sample, s_->threads);
  if (config.run.device == Device::kCpu)
    check_memory(memory, mpi.local_size());
  else  // the model lives on the GPU
    check_device_memory(memory, device_free_bytes(config.run.device));
  omp_set_num_threads(s_->threads);
  openblas_set_num_threads(s_->threads);

  s_->store.initialize(config.train.seed);
  s_->optimizer = std::make_unique<AdamW>(s_->store, config.optim);
  s_->guard = std::make_unique<StepGuard>(config.train, *s_->groups.world);
  s_->grad_sync = std::make_unique<GradSync>(
      s_->store, s_->device_dp ? *s_->device_dp : *s_->groups.dp,
      s_->device_edp ? *s_->device_edp : *s_->groups.edp, s_->dp_size,
      static_cast<int64_t>(static_cast<double>(config.parallel.grad_bucket_mb) * (1 << 20)),
      s_->groups.world.get(), config.parallel.shard_optimizer);
  check_same_on_all_ranks(*s_->groups.world, config.resolved_ini, "the resolved config");
  // The directories become this run's (run_lock.h); then every rank checks it can write.
  if (mpi.rank() == 0) s_->run_lock = RunLock::acquire(config);
  s_->groups.world->barrier();
  check_directories(config, *s_->groups.world, s_->total_params);
  restore_checkpoint();

  // The job's peak: every rank measures at once (ranks sharing cores see their share).
  s_->groups.world->barrier();
  const bool bf16 = config.train.precision == Precision::kBf16;
  const Device device = config.run.device;
  // train.peak_gflops is per core on the CPU and per GPU with run.device = cuda
  const double units = device == Device::kCpu ? s_->threads : 1;
  double peak = config.train.peak_gflops > 0 ? config.train.peak_gflops * 1e9 * units
                : device != Device::kCpu
                    ? measure_device_gemm_gflops(device, bf16 ? DType::kBF16 : DType::kF32) * 1e9
                : bf16                        ? measure_bf16_gemm_gflops() * 1e9
                                              : measure_sgemm_gflops() * 1e9;
  s_->groups.world->all_reduce<double>({&peak, 1});
  s_->peak_flops = peak;
  if (mpi.rank() == 0) prepare_run_dir();
}

void Trainer::build_model() {
  const Config& c = config_;
  // One exchange of a dispatch: this rank's share of the batch's tokens, K rows each.
  const ModelFamily& family = model_family(c.model.family);
  s_->tokens_per_sample = family.traits.tokens_per_sample(c.model);
  const double rows = static_cast<double>(c.data.batch_size) / c.parallel.dp *
                      static_cast<double>(s_->tokens_per_sample) * c.moe.top_k;
  s_->moe = std::make_unique<MoeStack>(c, s_->groups, rows);
  s_->notes = s_->moe->notes();
  // Mixed precision: every layer built from here on multiplies by bf16 copies.
  s_->store.set_matmul_dtype(c.train.precision == Precision::kBf16 ? DType::kBF16 : DType::kF32);
  s_->store.set_device(c.run.device);  // parameters, gradients, moments and activations
  // The model opens and validates the data: a bad file is reported alone, before any
  // progress output.
  s_->model = family.make_model(c, s_->store, s_->moe->runtime());
  if (c.parallel.reshard_interval > 0)  // its state buffers join the checkpoints
    s_->ownership = std::make_unique<ExpertOwnership>(
        s_->store, s_->model->network().moe_layers(), *s_->moe->sparse_group(),
        c.parallel.reshard_interval);
}

Trainer::~Trainer() = default;

std::vector<NamedBuffer> Trainer::model_buffers() {
  // the layers' state buffers (router biases; fssdp's plan loads and load windows), equal
  // on every rank: global loads
  std::vector<NamedBuffer> buffers;
  for (StateBuffer& b : s_->store.buffers())
    buffers.push_back({b.name, b.values(), b.optional});
  return buffers;
}

void Trainer::restore_checkpoint() {
  s_->checkpointer = std::make_unique<Checkpointer>(config_, *s_->groups.world, s_->store,
                                                    *s_->optimizer, model_buffers(), log_);
  if (const std::optional<TrainerState> state = s_->checkpointer->restore())
    s_->start_step = state->step;
  // fssdp re-sharding: the blocks were read as the even ones; the checkpoint's owners
  if (s_->ownership) s_->ownership->restore(*s_->optimizer, *s_->grad_sync, *s_->checkpointer);
  if (s_->ownership && s_->start_step > 0)
    log_.info("expert owners of the checkpoint (experts per rank) ", s_->ownership->describe());
  // parallel.shard_optimizer: the state was read whole (checkpoints are logical); this
  // rank keeps its slices
  s_->grad_sync->slice_state(*s_->optimizer);
}

bool Trainer::save_checkpoint(int64_t completed, float last_lr, IntervalTimes& times) {
  ScopedTimer timer(times.checkpoint);
  if (!s_->guard->weights_finite(s_->store))
    throw RunStop(kExitNonFinite, "step " + std::to_string(completed) +
                                      ": the weights are not finite; no checkpoint written; " +
                                      last_checkpoint_note());
  const int64_t tokens_per_step = config_.data.batch_size * s_->tokens_per_sample;
  try {
    // parallel.shard_optimizer: the logical file needs whole moments, for this write only
    s_->grad_sync->gather_state(*s_->optimizer);
    s_->checkpointer->save(make_trainer_state(config_, completed, tokens_per_step, last_lr));
    s_->grad_sync->slice_state(*s_->optimizer);
    return true;
  } catch (const WriteError& e) {
    // Every rank is here together (write_checkpoint agreed on the failure).
    s_->grad_sync->slice_state(*s_->optimizer);
    if (config_.checkpoint.on_error == SaveErrorAction::kWarn && completed < config_.train.steps) {
      log_.info("warning: checkpoint of step ", completed, " not written: ", e.what(),
                "; training on, the next checkpoint tries again (checkpoint.on_error = warn)");
      return false;
    }
    throw RunStop(kExitUser, std::string(e.what()) + "; " + last_checkpoint_note());
  }
}

std::vector<std::pair<std::string, std::vector<Communicator*>>> Trainer::telemetry_groups() {
  // ep: the token all-to-all, with the two-level exchange's node and cross-node parts;
  // sparse: fssdp's replica weights and gradients (no communicator otherwise)
  std::vector<Communicator*> sparse;
  if (Communicator* group = s_->moe->sparse_group()) sparse.push_back(group);
  // run.device = cuda: the gradient buckets go over the NCCL groups
  std::vector<Communicator*> dp{s_->groups.dp.get()}, edp{s_->groups.edp.get()};
  if (s_->device_dp) dp.push_back(s_->device_dp.get());
  if (s_->device_edp) edp.push_back(s_->device_edp.get());
  return {{"ep", s_->moe->exchange_groups()},
          {"dp", dp},
          {"edp", edp},
          {"tp", {s_->groups.tp.get()}},
          {"etp", {s_->groups.etp.get()}},
          {"sparse", sparse}};
}

void Trainer::prepare_run_dir() {
  const fs::path dir(config_.run.dir);
  s_->run_lock->commit();
  if (config_.run.overwrite && s_->start_step == 0) discard_previous_run(config_);
  std::ofstream ini(dir / "config.ini", std::ios::trunc);
  ini << config_.resolved_ini;
  MOE_USER_CHECK(ini.flush().good(), "run.dir: cannot write ", (dir / "config.ini").string());
  // A resumed run keeps the records up to its checkpoint and drops any logged after it
  // by the interrupted run, so that metrics.jsonl reads as one uninterrupted run.
  const std::string metrics = (dir / "metrics.jsonl").string();
  s_->metrics = s_->start_step > 0 ? MetricsWriter::resume(metrics, s_->start_step)
                                   : MetricsWriter(metrics);
  if (config_.run.tensorboard)
    s_->tensorboard = std::make_unique<TensorBoardWriter>((dir / "tb").string(), s_->start_step);
}

nlohmann::json Trainer::evaluate() {
  // Evaluation traffic is not the training step's: the stats are put back after.
  std::vector<std::pair<Communicator*, CommStats>> saved;
  for (const auto& [name, comms] : telemetry_groups())
    for (Communicator* comm : comms) saved.emplace_back(comm, comm->stats());
  std::vector<double> sums = s_->model->evaluate(s_->dp_rank, s_->dp_size);
  s_->groups.dp->all_reduce<double>(sums);  // additive over the ranks' shares
  if (config_.run.tensorboard) s_->preview = s_->model->preview_image();
  for (auto& [comm, stats] : saved) comm->stats() = stats;
  return s_->model->eval_metrics(sums);
}

void Trainer::publish(const nlohmann::json& record) {
  std::optional<PreviewImage> preview;
  preview.swap(s_->preview);  // an evaluation's image goes out once, with its record
  if (s_->metrics.is_open()) s_->metrics.write(record);
  if (!s_->tensorboard) return;
  s_->tensorboard->write(record);
  if (preview)
    s_->tensorboard->write_image(record["step"].get<int64_t>(), preview->tag, preview->width,
                                 preview->height, preview->pixels);
}

void Trainer::save_model() {
  // The weights, router biases and resolved config, for moe-sample and evaluation
  // tools (format moe-weights, docs/checkpoint-format.md): every rank writes its blocks.
  if (!s_->guard->weights_finite(s_->store))
    throw RunStop(kExitNonFinite, "the final weights are not finite; model.h5 not written; " +
                                      last_checkpoint_note());
  try {
    s_->checkpointer->save_weights((fs::path(config_.run.dir) / "model.h5").string());
  } catch (const WriteError& e) {  // on every rank together
    throw RunStop(kExitUser, std::string(e.what()) + "; " + last_checkpoint_note());
  }
}

nlohmann::json Trainer::expert_load_record() {
  nlohmann::json layers = nlohmann::json::array();
  const std::vector<int> blocks = s_->model->network().moe_layer_blocks();
  const std::vector<MoELayer*> moe_layers = s_->model->network().moe_layers();
  const std::vector<RankBalance> balance = rank_balance(moe_layers, *s_->groups.world);
  int index = 0;
  for (MoELayer* layer : moe_layers) {
    const ExpertLoadStats& st = layer->load_stats();
    const RankBalance& b = balance[index];
    layers.push_back({{"layer", blocks[index++]},
                      {"tokens", st.assigned},
                      {"max_over_mean", st.max_over_mean},
                      {"dropped", st.dropped_fraction},
                      {"node_local", st.node_local_fraction},
                      {"nodes_per_token", st.nodes_per_token},
                      {"remote_nodes_per_token", st.remote_nodes_per_token},
                      {"locality_loss", st.locality_loss},
                      {"rank_rows_max", b.max},
                      {"rank_rows_mean", b.mean},
                      {"rank_rows_max_over_mean", b.max_over_mean()}});
  }
  return layers;
}

Trainer::StepResult Trainer::train_step(int64_t step, IntervalTimes& times) {
  const Config& c = config_;
  Model& model = *s_->model;
  s_->watchdog->set_step(step + 1);
  model.load_train_batch(step, s_->dp_rank, s_->dp_size);
  s_->store.zero_grad();
  StepResult result;
  {
    ScopedTimer timer(times.forward);
    result.loss = model.forward();
  }
  // fssdp: every layer's replicas are held now, until its backward (with
  // parallel.rematerialize none: then the most one layer held during its forward)
  if (s_->moe->sparse_group())
    s_->replica_peak = std::max({s_->replica_peak, replica_bytes(model.network().moe_layers()),
                                 layer_replica_peak(model.network().moe_layers())});
  {
    ScopedTimer timer(times.backward);
    model.backward();
  }
  {
    ScopedTimer timer(times.grad_sync);
    if (s_->grad_sync->shards_state()) s_->grad_sync->reduce_scatter();
    else s_->grad_sync->all_reduce();
  }
  // The reported loss is the global batch's: the mean of the ranks' equal slices
  // (aux and z are global already).
  const double local_loss = result.loss.ce + result.loss.aux + result.loss.z;
  s_->groups.dp->all_reduce<double>({&result.loss.ce, 1});
  result.loss.ce /= s_->dp_size;
  result.loss.total = result.loss.ce + result.loss.aux + result.loss.z;
  result.lr = s_->schedule.lr(step);
  ScopedTimer timer(times.optimizer);
  result.grad_norm =
      s_->grad_sync->global_grad_norm(*s_->groups.tp, *s_->groups.ep, *s_->groups.etp);
  result.verdict = s_->guard->judge(step + 1, local_loss, result.grad_norm);
  if (result.verdict.action == StepVerdict::kStop)
    throw RunStop(kExitNonFinite, result.verdict.reason + "; stopped (train.on_nonfinite = " +
                                      enum_name(c.train.on_nonfinite) + ") without writing anything; " +
                                      last_checkpoint_note());
  ++times.steps;
  if (result.verdict.action == StepVerdict::kSkip) {
    log_.info(result.verdict.reason, ": update skipped (train.on_nonfinite = skip)");
    return result;
  }
  // the clip and the update of every parameter in one multi-tensor op
  s_->optimizer->step(result.lr, clip_coefficient(result.grad_norm, c.optim.grad_clip));
  s_->grad_sync->all_gather_params();  // sharded optimizer: every rank's updated slices
  if (c.moe.bias_balance)
    for (MoELayer* layer : model.network().moe_layers())
      layer->update_bias(layer->load_stats().assigned.data());
  for (MoELayer* layer : model.network().moe_layers())  // fssdp: the layers' load windows
    if (LoadWindow* window = layer->load_window()) window->push(*layer->last_plan());
  // every reshard_interval steps: the owners from the window's loads
  if (s_->ownership &&
      s_->ownership->after_step(step + 1, *s_->optimizer, *s_->grad_sync, *s_->checkpointer))
    log_.info("step ", step + 1, ": expert owners moved (experts per rank) ",
              s_->ownership->describe());
  return result;
}

nlohmann::json Trainer::comm_record(double steps, double step_ms) {
  // Per step: what each group moved and the time inside its calls, on this rank. ep
  // carries the token all-to-all, dp the dense gradient buckets, routing statistics
  // and losses, edp the expert gradient buckets, tp the tensor-parallel layers'
  // activation all-reduces (and the vocabulary-parallel loss). Waiting for a slower rank counts as
  // communication time.
  // Bytes and messages are split by link class (intra- vs inter-node, the topology's
  // nodes); job_*_bytes sum every rank's (one small all-reduce over the world, which no
  // telemetry group counts).
  nlohmann::json record;
  double comm_ms = 0.0;
  const auto groups = telemetry_groups();
  std::vector<int64_t> job(2 * groups.size(), 0);  // [group][intra, inter]
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& [name, comms] = groups[i];
    CommStats st;
    for (Communicator* comm : comms) {
      st += comm->stats();
      comm->stats() = CommStats{};
    }
    record[name] = {{"bytes", static_cast<double>(st.bytes_sent) / steps},
                    {"intra_node_bytes", static_cast<double>(st.intra_node_bytes) / steps},
                    {"inter_node_bytes", static_cast<double>(st.inter_node_bytes) / steps},
                    {"intra_node_messages", static_cast<double>(st.intra_node_messages) / steps},
                    {"inter_node_messages", static_cast<double>(st.inter_node_messages) / steps},
                    {"ms", st.seconds * 1e3 / steps}};
    job[2 * i] = st.intra_node_bytes;
    job[2 * i + 1] = st.inter_node_bytes;
    comm_ms += st.seconds * 1e3 / steps;
  }
  s_->groups.world->all_reduce<int64_t>(job);
  for (size_t i = 0; i < groups.size(); ++i) {
    record[groups[i].first]["job_intra_node_bytes"] = static_cast<double>(job[2 * i]) / steps;
    record[groups[i].first]["job_inter_node_bytes"] = static_cast<double>(job[2 * i + 1]) / steps;
  }
  record["total_ms"] = comm_ms;
  record["compute_ms"] = std::max(0.0, step_ms - comm_ms);
  return record;
}

nlohmann::json Trainer::interval_record(int64_t step, const StepResult& r,
                                        const IntervalTimes& times) {
  const double tokens_per_step =
      static_cast<double>(config_.data.batch_size) * s_->tokens_per_sample;
  const double k = 1.0 / static_cast<double>(times.steps);
  const double step_s = times.training_seconds() * k;
  return {{"step", step + 1},
          {"loss", r.loss.ce},
          {"aux_loss", r.loss.aux},
          {"z_loss", r.loss.z},
          {"lr", r.lr},
          {"grad_norm", r.grad_norm},
          {"tokens_per_s", tokens_per_step / step_s},
          {"mfu", s_->model->network().train_flops_per_token() * tokens_per_step / step_s /
                      s_->peak_flops},
          {"step_ms", step_s * 1e3},
          {"skipped_steps", s_->guard->skipped()},
          {"time_ms", {{"forward", times.forward * k * 1e3},
                       {"backward", times.backward * k * 1e3},
                       {"grad_sync", times.grad_sync * k * 1e3},
                       {"optimizer", times.optimizer * k * 1e3}}},
          {"comm", comm_record(static_cast<double>(times.steps), step_s * 1e3)},
          {"component_ms", component_record(s_->model->network().times(), times.steps)},
          {"experts", expert_load_record()}};
}

std::string Trainer::last_checkpoint_note() const {
  const std::vector<int64_t> steps = s_->checkpointer->dir().steps();
  if (steps.empty()) return "no checkpoint had been written";
  return "the last checkpoint, " + s_->checkpointer->dir().path_for(steps.back()) +
         ", is untouched (continue with --run.resume=auto)";
}

void Trainer::stop_on_signal(int signal, int64_t completed, bool saved) {
  std::string message = std::string("stopped by ") + StopSignals::name(signal) +
                        " after step " + std::to_string(completed) + " of " +
                        std::to_string(config_.train.steps) + "; ";
  if (saved) {
    message += "wrote " + s_->checkpointer->dir().path_for(completed) +
               "; continue with --run.resume=auto";
  } else {
    message += "no checkpoint written; " + last_checkpoint_note();
  }
  throw RunStop(128 + signal, message);
}

nlohmann::json Trainer::run() {
  const Config& c = config_;
  for (const std::string& note : s_->notes) log_.info(note);
  const bool bf16 = c.train.precision == Precision::kBf16;
  if (bf16 && c.run.device == Device::kCpu && !ops::cpu_bf16_gemm_native())
    log_.info("warning: no bf16 instructions on this CPU: train.precision = bf16 runs its "
              "products as fp32 GEMMs on bf16 values (same results, slower)");
  log_.info("moe-train: ", s_->total_params, " parameters (", s_->store.numel(),
            " on this rank), ", c.train.steps, " steps of ",
            c.data.batch_size * s_->tokens_per_sample, " tokens, ", s_->threads,
            " threads, ",
            c.run.device != Device::kCpu ? "device " + s_->device->description()
            : bf16                       ? "bf16 GEMM " + ops::cpu_bf16_gemm_name()
                                         : "GEMM " + ops::cpu_gemm_name(),
            ", peak ", std::fixed,
            std::setprecision(1), s_->peak_flops * 1e-9, " GFLOP/s");
  Stopwatch run_clock;
  double train_s = 0.0;  // run time less evaluations
  IntervalTimes times;
  nlohmann::json last_eval = nlohmann::json::object();
  if (s_->start_step > 0)
    log_.info("continuing at step ", s_->start_step + 1, " of ", c.train.steps);
  if (c.train.eval_interval > 0 && s_->start_step == 0) {
    // The untrained model's score: the start of the validation curve.
    last_eval = evaluate();
    nlohmann::json record = {{"step", 0}};
    record.update(last_eval);
    publish(record);
    std::ostringstream line;
    line << "step 0/" << c.train.steps;
    for (const auto& [key, value] : last_eval.items())
      line << " | " << key << " " << std::fixed << std::setprecision(4) << value.get<double>();
    log_.info(line.str());
  }
  for (int64_t step = s_->start_step; step < c.train.steps; ++step) {
    const StepResult result = train_step(step, times);
    const bool last = step + 1 == c.train.steps;
    const bool eval_now =
        last || (c.train.eval_interval > 0 && (step + 1) % c.train.eval_interval == 0);
    // A stop signal ends the run after this step, with a checkpoint (checkpoint.on_signal).
    const int stop_signal = last ? 0 : result.verdict.stop_signal;
    // After the step's record, so that metrics.jsonl holds every step of a checkpoint.
    const bool checkpoint_now = s_->checkpointer->due(step + 1, c.train.steps) ||
                                (stop_signal != 0 && c.checkpoint.on_signal);
    if ((step + 1) % c.train.log_interval != 0 && !eval_now) {
      const bool saved = checkpoint_now && save_checkpoint(step + 1, result.lr, times);
      if (stop_signal != 0) stop_on_signal(stop_signal, step + 1, saved);
      continue;
    }

    nlohmann::json record = interval_record(step, result, times);
    train_s += times.training_seconds();
    nlohmann::json eval = nlohmann::json::object();
    if (eval_now) {
      eval = last_eval = evaluate();
      record.update(eval);
    }
    publish(record);
    const double eta = run_clock.seconds() / static_cast<double>(step + 1 - s_->start_step) *
                       static_cast<double>(c.train.steps - step - 1);
    log_.info(progress_line(record, eval, c.train.steps, eta));
    s_->model->network().times().clear();
    times = IntervalTimes{};
    const bool saved = checkpoint_now && save_checkpoint(step + 1, result.lr, times);
    if (stop_signal != 0) stop_on_signal(stop_signal, step + 1, saved);
  }
  // A run resumed from its last step trained nothing here: still report its metrics.
  if (s_->start_step >= c.train.steps) last_eval = evaluate();
  if (c.run.save_model) save_model();
  // Throughput of the steps this process ran (all of them unless resumed).
  const int64_t steps_run = std::max<int64_t>(0, c.train.steps - s_->start_step);
  const double tokens = static_cast<double>(c.data.batch_size) *
                        s_->tokens_per_sample * static_cast<double>(steps_run);
  train_s = std::max(train_s, 1e-9);
  nlohmann::json final_record = {{"final", true}, {"steps", c.train.steps}};
  final_record.update(last_eval);
  final_record.update({{"tokens_per_s", tokens / train_s},
                       {"mfu", s_->model->network().train_flops_per_token() * tokens / train_s /
                                   s_->peak_flops},
                       {"samples_per_s",
                        static_cast<double>(c.data.batch_size * steps_run) / train_s},
                       {"peak_gflops", s_->peak_flops * 1e-9},
                       {"dispatcher", enum_name(s_->moe->dispatcher_kind())},
                       {"precision", enum_name(c.train.precision)},
                       {"skipped_steps", s_->guard->skipped()},
                       {"memory", memory_record(s_->store, *s_->optimizer, s_->replica_peak,
                                                   *s_->groups.world)},
                       {"seconds", run_clock.seconds()}});
  if (s_->ownership)
    final_record["ownership"] = {{"replans", s_->ownership->replans()},
                                 {"moves", s_->ownership->moves()}};
  if (const std::optional<DispatcherChoice>& a = s_->moe->auto_choice())
    final_record["dispatcher_choice"] = {{"dispatcher", enum_name(a->chosen)},
                                         {"predicted_flat_ms", a->flat_seconds * 1e3},
                                         {"predicted_two_level_ms", a->two_level_seconds * 1e3},
                                         {"block_bytes", a->block_bytes},
                                         {"cost_model", a->cost_model}};
  if (mpi_.rank() == 0) std::cout << final_record.dump() << std::endl;
  return final_record;
}

}  // namespace moe
