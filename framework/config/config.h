#pragma once
// The typed, validated configuration. Options are declared once (config.cpp, with
// Boost.Program_options), read with precedence defaults < INI file < --section.key=value,
// validated once, and then only these const structs are read. docs/configuration.md
// documents every key.

#include <array>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "framework/core/dtype.h"

namespace moe {

// ---- the values of the string-valued options ----
// Each parses from its spelling in the option table (framework/config/options.cpp) and
// is compared as an enum everywhere else; enum_name() gives the spelling back.

enum class PoolKind : uint8_t { kCls, kGap };                    // model.pool
enum class PosEmbedKind : uint8_t { kAuto, kLearned, kSincos };  // model.pos_embed
enum class ExpertActivation : uint8_t { kSwiGLU, kGelu };        // moe.expert_act
enum class DispatcherKind : uint8_t { kAuto, kLocal, kFlat, kTwoLevel, kNodeDedup, kShm };
enum class RoutingKind : uint8_t { kTopK, kBilevel };            // moe.routing
enum class ScheduleKind : uint8_t { kCosine, kWsd, kConstant };  // optim.schedule
enum class DiffusionObjective : uint8_t { kDdpm, kRectifiedFlow };
enum class SamplerKind : uint8_t { kAuto, kDdim, kEuler };       // diffusion.sampler
enum class NonfiniteAction : uint8_t { kStop, kSkip };           // train.on_nonfinite
enum class SaveErrorAction : uint8_t { kStop, kWarn };           // checkpoint.on_error
enum class ExpertSharding : uint8_t { kNone, kFssdp };           // parallel.expert_sharding
enum class Precision : uint8_t { kFp32, kBf16 };  // train.precision, moe.a2a_dtype

// The spellings of an enum's values and the noun its errors use ("dispatcher").
template <class E>
struct EnumSpelling;
template <>
struct EnumSpelling<PoolKind> {
  static constexpr const char* kNoun = "pooling";
  static constexpr std::array<std::pair<PoolKind, const char*>, 2> kValues{
      {{PoolKind::kCls, "cls"}, {PoolKind::kGap, "gap"}}};
};
template <>
struct EnumSpelling<PosEmbedKind> {
  static constexpr const char* kNoun = "position embedding";
  static constexpr std::array<std::pair<PosEmbedKind, const char*>, 3> kValues{
      {{PosEmbedKind::kAuto, "auto"}, {PosEmbedKind::kLearned, "learned"},
       {PosEmbedKind::kSincos, "sincos"}}};
};
template <>
struct EnumSpelling<ExpertActivation> {
  static constexpr const char* kNoun = "expert activation";
  static constexpr std::array<std::pair<ExpertActivation, const char*>, 2> kValues{
      {{ExpertActivation::kSwiGLU, "swiglu"}, {ExpertActivation::kGelu, "gelu"}}};
};
template <>
struct EnumSpelling<DispatcherKind> {
  static constexpr const char* kNoun = "dispatcher";
  static constexpr std::array<std::pair<DispatcherKind, const char*>, 6> kValues{
      {{DispatcherKind::kAuto, "auto"}, {DispatcherKind::kLocal, "local"},
       {DispatcherKind::kFlat, "flat"}, {DispatcherKind::kTwoLevel, "two_level"},
       {DispatcherKind::kNodeDedup, "node_dedup"}, {DispatcherKind::kShm, "shm"}}};
};
template <>
struct EnumSpelling<RoutingKind> {
  static constexpr const char* kNoun = "routing";
  static constexpr std::array<std::pair<RoutingKind, const char*>, 2> kValues{
      {{RoutingKind::kTopK, "topk"}, {RoutingKind::kBilevel, "bilevel"}}};
};
template <>
struct EnumSpelling<ScheduleKind> {
  static constexpr const char* kNoun = "schedule";
  static constexpr std::array<std::pair<ScheduleKind, const char*>, 3> kValues{
      {{ScheduleKind::kCosine, "cosine"}, {ScheduleKind::kWsd, "wsd"},
       {ScheduleKind::kConstant, "constant"}}};
};
template <>
struct EnumSpelling<DiffusionObjective> {
  static constexpr const char* kNoun = "diffusion objective";
  static constexpr std::array<std::pair<DiffusionObjective, const char*>, 2> kValues{
      {{DiffusionObjective::kDdpm, "ddpm"}, {DiffusionObjective::kRectifiedFlow, "rectified_flow"}}};
};
template <>
struct EnumSpelling<SamplerKind> {
  static constexpr const char* kNoun = "sampler";
  static constexpr std::array<std::pair<SamplerKind, const char*>, 3> kValues{
      {{SamplerKind::kAuto, "auto"}, {SamplerKind::kDdim, "ddim"}, {SamplerKind::kEuler, "euler"}}};
};

template <>
struct EnumSpelling<Precision> {
  static constexpr const char* kNoun = "precision";
  static constexpr std::array<std::pair<Precision, const char*>, 2> kValues{
      {{Precision::kFp32, "fp32"}, {Precision::kBf16, "bf16"}}};
};

// The value spelled `name`, if there is one.
template <class E>
std::optional<E> enum_from_name(std::string_view name) {
  for (const auto& [value, spelling] : EnumSpelling<E>::kValues)
    if (name == spelling) return value;
  return std::nullopt;
}

template <>
struct EnumSpelling<NonfiniteAction> {
  static constexpr const char* kNoun = "non-finite action";
  static constexpr std::array<std::pair<NonfiniteAction, const char*>, 2> kValues{
      {{NonfiniteAction::kStop, "stop"}, {NonfiniteAction::kSkip, "skip"}}};
};
template <>
struct EnumSpelling<Device> {  // run.device
  static constexpr const char* kNoun = "device";
  static constexpr std::array<std::pair<Device, const char*>, 2> kValues{
      {{Device::kCpu, "cpu"}, {Device::kCuda, "cuda"}}};
};
template <>
struct EnumSpelling<SaveErrorAction> {
  static constexpr const char* kNoun = "save-error action";
  static constexpr std::array<std::pair<SaveErrorAction, const char*>, 2> kValues{
      {{SaveErrorAction::kStop, "stop"}, {SaveErrorAction::kWarn, "warn"}}};
};

template <>
struct EnumSpelling<ExpertSharding> {
  static constexpr const char* kNoun = "sharding scheme";
  static constexpr std::array<std::pair<ExpertSharding, const char*>, 2> kValues{
      {{ExpertSharding::kNone, "none"}, {ExpertSharding::kFssdp, "fssdp"}}};
};

template <class E>
const char* enum_name(E value) {
  for (const auto& [v, name] : EnumSpelling<E>::kValues)
    if (v == value) return name;
  return "?";
}
// Streams an option enum as its spelling, so messages read like the config.
template <class E, class = decltype(EnumSpelling<E>::kNoun)>
std::ostream& operator<<(std::ostream& os, E value) {
  return os << enum_name(value);
}

// run.resume: empty (a fresh run), "auto" (the newest checkpoint of the run) or a path.
struct ResumeFrom {
  enum class Kind : uint8_t { kFresh, kAuto, kPath } kind = Kind::kFresh;
  std::string path;  // the checkpoint when kind is kPath
  bool fresh() const { return kind == Kind::kFresh; }
  bool automatic() const { return kind == Kind::kAuto; }
};

struct ModelConfig {
  std::string family = "moe_gpt";  // a registered model family (models/registry.h)
  int vocab_size = 256;            // V
  int seq_len = 64;                // T
  int num_layers = 2;              // L
  int d_model = 64;                // C
  int num_heads = 4;               // H; head dim D = C / H (even, for rotary)
  int dense_layers = 1;            // the first k layers use a dense FFN
  int moe_every = 1;               // of the later layers, every n-th is MoE (2: V-MoE)
  int dense_ffn = 128;             // width of the dense FFN (SwiGLU; GELU in vit_moe)
  float rope_theta = 10000.0f;
  float norm_eps = 1e-6f;
  float init_std = 0.02f;          // output projections use init_std / sqrt(2 L)
  // Image families (vit_moe, dit_moe); docs/image-models.md.
  int image_size = 28;             // H = W of the (square) images
  int image_channels = 1;          // channels of the images
  int patch_size = 4;              // p: patches of p x p pixels, (H/p)^2 tokens
  int num_classes = 10;            // labels are in [0, num_classes)
  PoolKind pool = PoolKind::kCls;  // vit_moe head input: cls | gap
  // auto | learned | sincos (auto: the family's default, docs/image-models.md)
  PosEmbedKind pos_embed = PosEmbedKind::kAuto;
  float class_dropout = 0.1f;      // dit_moe: label -> null class with this probability
};

struct MoeConfig {
  int num_experts = 4;             // E routed experts
  int top_k = 2;                   // K
  int expert_ffn = 64;             // F, width of each routed SwiGLU expert
  int num_shared = 1;              // always-on shared experts (0 = none)
  int shared_ffn = 64;             // width of each shared expert
  float capacity_factor = 0.0f;    // <= 0: dropless; else C_e = ceil(cf * N * K / E)
  bool renormalize = false;        // combine weights renormalised over the K chosen
  bool batch_priority = false;     // V-MoE Batch Priority Routing under capacity
  ExpertActivation expert_act = ExpertActivation::kSwiGLU;  // routed and shared experts
  float aux_loss = 0.01f;          // Switch/GShard balance coefficient alpha
  float z_loss = 0.001f;           // router z-loss coefficient
  bool bias_balance = false;       // DeepSeek-V3 aux-loss-free bias balancing
  float bias_update_rate = 1e-3f;  // gamma of the bias update
  DispatcherKind dispatcher = DispatcherKind::kAuto;  // auto, local, flat, two_level, node_dedup, shm
  RoutingKind routing = RoutingKind::kTopK;           // topk | bilevel (SMILE)
  int node_groups = 0;               // bilevel: groups of the node-level router
  int max_nodes_per_token = 0;       // node-limited top-K: M; 0 = unlimited
  float own_node_bonus = 0.0f;       // node-limited: added to the token's own node's score
  // Benchmark knob: Zipf exponent s of a fixed popularity bias -s ln(e + 1) added to the
  // router logits of expert e (0 = none)
  float router_skew = 0.0f;
  float locality_loss = 0.0f;        // LocMoE locality loss coefficient mu
  // The rows the dispatchers exchange: fp32 | bf16 (half the bytes; needs
  // train.precision = bf16, docs/precision.md)
  Precision a2a_dtype = Precision::kFp32;
};

struct OptimConfig {
  float lr = 1e-3f;                // peak learning rate
  float min_lr = 1e-4f;            // floor of the decay
  int warmup_steps = 10;           // linear warmup from 0
  ScheduleKind schedule = ScheduleKind::kCosine;  // cosine | wsd | constant
  float decay_fraction = 0.2f;     // wsd: share of steps spent decaying at the end
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;       // on matrices only
  float grad_clip = 1.0f;          // global-norm clip; <= 0 disables
};

struct DataConfig {
  std::string train_path;          // token shard (docs/data-format.md) or IDX images
  std::string val_path;            // token shard or IDX images for validation
  std::string train_labels;        // image families: IDX labels of train_path
  std::string val_labels;          // image families: IDX labels of val_path
  int batch_size = 8;              // global batch, in sequences (or images)
  bool hflip = false;              // image families: random horizontal flips
  float image_mean = 0.5f;         // pixel p in [0, 1] is fed as (p - mean) / std
  float image_std = 0.5f;
};

// Diffusion (dit_moe): training objective and sampling (docs/image-models.md).
struct DiffusionConfig {
  DiffusionObjective objective = DiffusionObjective::kDdpm;  // ddpm (epsilon) | rectified_flow
  int timesteps = 1000;            // DDPM steps, beta linear from beta_start to beta_end
  float beta_start = 1e-4f;
  float beta_end = 0.02f;
  SamplerKind sampler = SamplerKind::kAuto;  // auto | ddim | euler (auto: ddpm ddim, flow euler)
  int sample_steps = 50;           // denoising steps when sampling
  float guidance = 4.0f;           // classifier-free guidance scale s (1 = none)
};

struct TrainConfig {
  int64_t steps = 20;
  uint64_t seed = 1234;
  int log_interval = 1;
  int eval_interval = 0;           // 0: only at the end
  int eval_batches = 0;            // image families: test batches; 0 = the whole split
  int64_t eval_tokens = 1 << 20;   // moe_gpt: the first N validation tokens; 0 = none
  int threads = 0;                 // compute threads per rank; 0 = all cores of the rank
  double peak_gflops = 0.0;        // per-core peak for MFU; 0 = measure at start-up
  // a NaN/Inf loss or gradient norm: stop | skip
  NonfiniteAction on_nonfinite = NonfiniteAction::kStop;
  int max_skipped_steps = 10;      // skip: stop after this many skipped steps in a row
  // Matrix products: fp32 | bf16 (mixed precision: bf16 operands, fp32 sums, fp32 master
  // weights and optimizer state; docs/precision.md)
  Precision precision = Precision::kFp32;
};

struct RunConfig {
  std::string dir = "runs/default";
  ResumeFrom resume;               // "", "auto" or a checkpoint path
  std::string init_from;           // checkpoint whose weights initialise the model
  bool overwrite = false;          // allow a run.dir that already holds a run
  bool save_model = true;          // final weights to <run.dir>/model.h5
  bool tensorboard = true;         // live TensorBoard events in <run.dir>/tb
  // cpu | cuda: with cuda each rank computes on one GPU (framework/kernels/device.h)
  Device device = Device::kCpu;
  bool share_gpus = false;         // cuda: allow more ranks on a node than visible GPUs
};

struct CheckpointConfig {
  std::string dir;                 // where checkpoints go; empty = <run.dir>/checkpoints
  int interval = 0;                // steps between checkpoints; 0 = only at the end
  int keep = 3;                    // keep the newest N
  bool collective_io = true;       // collective MPI-IO writes; false: independent
  // a save that fails: stop (exit 2) | warn (retry later)
  SaveErrorAction on_error = SaveErrorAction::kStop;
  bool on_signal = true;           // SIGTERM/SIGINT: checkpoint after the current step
};

struct ParallelConfig {
  int dp = 1, tp = 1, ep = 1, etp = 1;
  // Megatron-LM sequence parallelism over the tp group (docs/parallelism.md); a no-op
  // at tp = 1
  bool sequence_parallel = false;
  int ranks_per_node = 0;          // 0 = discovered from MPI
  // All-to-all cost model of moe.dispatcher = auto; 0 = measured at start-up where the
  // job has such a link, else a published figure
  float intra_latency_us = 0.0f, intra_bandwidth_gbs = 0.0f;
  float inter_latency_us = 0.0f, inter_bandwidth_gbs = 0.0f;
  float grad_bucket_mb = 25.0f;    // gradient all-reduce bucket, MiB
  int timeout_s = 600;             // a collective waiting longer aborts the job; 0 = never
  // ZeRO-1/2 for the replicated parameters: gradients reduce-scattered, each rank keeps
  // the AdamW state of and updates a 1/n slice, updated weights all-gathered
  bool shard_optimizer = false;
  // Sharded sparse experts (Hecate's FSSDP): every expert owned by one rank of the dp
  // group, replicas of the busy ones materialised each step, at most materialize_slots
  // per rank and MoE layer
  ExpertSharding expert_sharding = ExpertSharding::kNone;
  int materialize_slots = 2;
  // fssdp: every reshard_interval steps the owners of each MoE layer's experts are
  // re-planned from the loads of those steps (0 = never: the even blocks stay)
  int reshard_interval = 0;
  // fssdp: steps of row counts the replica plan reads, this step's included (1: this
  // step's only)
  int load_window = 1;
  // fssdp: materialised replicas are released after each MoE layer's forward and
  // fetched again before its backward (fewer bytes held, twice the all-gather)
  bool rematerialize = false;
};

struct Config {
  ModelConfig model;
  MoeConfig moe;
  OptimConfig optim;
  DataConfig data;
  DiffusionConfig diffusion;
  TrainConfig train;
  RunConfig run;
  CheckpointConfig checkpoint;
  ParallelConfig parallel;
  std::string resolved_ini;        // every key with its final value, INI text
};

// Parses `--config FILE` and `--section.key=value` arguments (argv[0] skipped),
// validates, and returns the typed config. Bad input throws a user moe::Error whose
// message names the key or file. `--help` is handled by the caller.
Config load_config(int argc, const char* const* argv);
// Same, from an INI text and override strings ("section.key=value"), for tests.
Config load_config_text(const std::string& ini_text, const std::vector<std::string>& overrides);

// Every option with its type, default and meaning, for `moe-train --help`.
std::string config_help();
// True when argv holds --help or -h (checked before load_config, which rejects -h).
bool help_requested(int argc, const char* const* argv);
// Every key ("section.key") in the order config.ini lists them.
std::vector<std::string> config_keys();
// `config` as INI text, grouped by [section]; what Config::resolved_ini holds.
std::string resolved_ini_text(const Config& config);
// The world-size half of the parallel validation, once MPI knows the job's size:
// dp * tp must equal world_size and ranks_per_node (when set) must divide it.
void check_world_size(const ParallelConfig& parallel, int world_size);

}  // namespace moe
