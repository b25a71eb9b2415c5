#pragma once
// The typed, validated configuration. Options are declared once (config.cpp, with
// Boost.Program_options), read with precedence defaults < INI file < --section.key=value,
// validated once, and then only these const structs are read. docs/configuration.md
// documents every key.

#include <cstdint>
#include <string>
#include <vector>

namespace moe {

struct ModelConfig {
  std::string family = "moe_gpt";  // moe_gpt | vit_moe | dit_moe
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
  std::string pool = "cls";        // vit_moe head input: cls | gap
  std::string pos_embed = "auto";  // auto | learned | sincos (auto: vit learned, dit sincos)
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
  std::string expert_act = "swiglu";  // routed and shared experts: swiglu | gelu
  float aux_loss = 0.01f;          // Switch/GShard balance coefficient alpha
  float z_loss = 0.001f;           // router z-loss coefficient
  bool bias_balance = false;       // DeepSeek-V3 aux-loss-free bias balancing
  float bias_update_rate = 1e-3f;  // gamma of the bias update
  std::string dispatcher = "auto";   // auto, local, flat, two_level, node_dedup
  std::string routing = "topk";      // topk | bilevel (SMILE)
  int node_groups = 0;               // bilevel: groups of the node-level router
  int max_nodes_per_token = 0;       // node-limited top-K: M; 0 = unlimited
  float own_node_bonus = 0.0f;       // node-limited: added to the token's own node's score
  float locality_loss = 0.0f;        // LocMoE locality loss coefficient mu
};

struct OptimConfig {
  float lr = 1e-3f;                // peak learning rate
  float min_lr = 1e-4f;            // floor of the decay
  int warmup_steps = 10;           // linear warmup from 0
  std::string schedule = "cosine";  // cosine | wsd | constant
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
  std::string objective = "ddpm";  // ddpm (epsilon prediction) | rectified_flow
  int timesteps = 1000;            // DDPM steps, beta linear from beta_start to beta_end
  float beta_start = 1e-4f;
  float beta_end = 0.02f;
  std::string sampler = "auto";    // auto | ddim | euler (auto: ddpm ddim, flow euler)
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
  std::string on_nonfinite = "stop";  // a NaN/Inf loss or gradient norm: stop | skip
  int max_skipped_steps = 10;      // skip: stop after this many skipped steps in a row
};

struct RunConfig {
  std::string dir = "runs/default";
  std::string resume;              // "", "auto" or a checkpoint path
  std::string init_from;           // checkpoint whose weights initialise the model
  bool overwrite = false;          // allow a run.dir that already holds a run
  bool save_model = true;          // final weights to <run.dir>/model.h5
};

struct CheckpointConfig {
  std::string dir;                 // where checkpoints go; empty = <run.dir>/checkpoints
  int interval = 0;                // steps between checkpoints; 0 = only at the end
  int keep = 3;                    // keep the newest N
  bool collective_io = true;       // collective MPI-IO writes; false: independent
  std::string on_error = "stop";   // a save that fails: stop (exit 2) | warn (retry later)
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
