// Range and consistency checks of the typed config: one place, run once by
// load_config. Each failure is one line: "<key>: <value> <what is wrong>".

#include <filesystem>
#include <string>

#include "framework/config/family.h"
#include "framework/config/options.h"
#include "framework/core/error.h"
#include "framework/kernels/device.h"

namespace moe::config_detail {
namespace {

template <class T>
void require_positive(const char* key, T value) {
  MOE_USER_CHECK(value > 0, key, ": ", value, " must be > 0");
}

template <class T>
void require_non_negative(const char* key, T value) {
  MOE_USER_CHECK(value >= 0, key, ": ", value, " must be >= 0");
}

// Sizes have an upper bound far above any real model, so that no value that passes
// validation makes start-up loop for hours or allocate without limit; what is left
// (their products) the memory pre-flight checks (framework/train/preflight.h).
template <class T>
void require_at_most(const char* key, T value, T limit) {
  MOE_USER_CHECK(value <= limit, key, ": ", value, " exceeds the limit of ", limit);
}

template <class T>
void require_size(const char* key, T value, T limit) {
  require_positive(key, value);
  require_at_most(key, value, limit);
}

void require_unit_interval(const char* key, float value) {
  MOE_USER_CHECK(value >= 0.0f && value < 1.0f, key, ": ", value, " must be in [0, 1)");
}

void require_existing_file(const char* key, const std::string& path) {
  if (path.empty()) return;
  std::error_code ec;
  const auto status = std::filesystem::status(path, ec);
  MOE_USER_CHECK(std::filesystem::exists(status), key, ": file '", path, "' does not exist");
  MOE_USER_CHECK(std::filesystem::is_regular_file(status), key, ": '", path,
                 "' is not a regular file");
}

void validate_model(const ModelConfig& m) {
  family_traits(m.family);  // a registered family, else a user error naming them
  require_size("model.vocab_size", m.vocab_size, 1 << 24);
  require_size("model.seq_len", m.seq_len, 1 << 20);
  require_size("model.num_layers", m.num_layers, 1024);
  require_size("model.d_model", m.d_model, 1 << 16);
  require_size("model.num_heads", m.num_heads, 4096);
  MOE_USER_CHECK(m.d_model % m.num_heads == 0, "model.d_model: ", m.d_model,
                 " must be divisible by model.num_heads (", m.num_heads, ")");
  MOE_USER_CHECK(m.dense_layers >= 0 && m.dense_layers <= m.num_layers, "model.dense_layers: ",
                 m.dense_layers, " must be in [0, model.num_layers = ", m.num_layers, "]");
  require_positive("model.moe_every", m.moe_every);
  require_size("model.dense_ffn", m.dense_ffn, 1 << 20);
  require_positive("model.rope_theta", m.rope_theta);
  require_positive("model.norm_eps", m.norm_eps);
  require_positive("model.init_std", m.init_std);
}

void validate_moe(const MoeConfig& e, const ParallelConfig& p) {
  require_size("moe.num_experts", e.num_experts, 1 << 14);
  MOE_USER_CHECK(e.top_k > 0 && e.top_k <= e.num_experts, "moe.top_k: ", e.top_k,
                 " must be in [1, moe.num_experts = ", e.num_experts, "]");
  require_size("moe.expert_ffn", e.expert_ffn, 1 << 20);
  require_non_negative("moe.num_shared", e.num_shared);
  require_at_most("moe.num_shared", e.num_shared, 64);
  require_size("moe.shared_ffn", e.shared_ffn, 1 << 20);
  require_non_negative("moe.aux_loss", e.aux_loss);
  require_non_negative("moe.z_loss", e.z_loss);
  require_non_negative("moe.bias_update_rate", e.bias_update_rate);
  require_non_negative("moe.max_nodes_per_token", e.max_nodes_per_token);
  require_non_negative("moe.own_node_bonus", e.own_node_bonus);
  MOE_USER_CHECK(e.own_node_bonus == 0.0f || e.max_nodes_per_token > 0,
                 "moe.own_node_bonus: ", e.own_node_bonus, " changes nothing without "
                 "node-limited routing (moe.max_nodes_per_token > 0)");
  require_non_negative("moe.locality_loss", e.locality_loss);
  require_non_negative("moe.router_skew", e.router_skew);
  require_at_most("moe.router_skew", e.router_skew, 16.0f);
  MOE_USER_CHECK(e.router_skew == 0.0f || e.routing != RoutingKind::kBilevel,
                 "moe.router_skew: ", e.router_skew, " is a knob of top-K routing, not of "
                 "moe.routing = bilevel");
  MOE_USER_CHECK(e.dispatcher != DispatcherKind::kLocal || p.ep == 1, "moe.dispatcher: local "
                 "keeps every expert on its rank and needs parallel.ep = 1, not ", p.ep);
  require_non_negative("moe.node_groups", e.node_groups);
  if (e.routing == RoutingKind::kBilevel) {
    MOE_USER_CHECK(e.node_groups > 0 && e.num_experts % e.node_groups == 0,
                   "moe.node_groups: bilevel routing needs a number of expert groups that "
                   "divides moe.num_experts = ", e.num_experts, ", not ", e.node_groups);
    MOE_USER_CHECK(e.top_k <= e.num_experts / e.node_groups, "moe.top_k: ", e.top_k,
                   " exceeds the ", e.num_experts / e.node_groups,
                   " experts of a group (bilevel routing chooses within one group)");
    MOE_USER_CHECK(!e.bias_balance, "moe.bias_balance: not available with bilevel routing");
    MOE_USER_CHECK(e.locality_loss == 0.0f && e.max_nodes_per_token == 0,
                   "moe.locality_loss, moe.max_nodes_per_token: bilevel routing already "
                   "sends each token to one node group; use them with moe.routing = topk");
  }
}

void validate_data(const DataConfig& d) {
  require_size("data.batch_size", d.batch_size, 1 << 24);
  require_existing_file("data.train_path", d.train_path);
  require_existing_file("data.val_path", d.val_path);
  require_existing_file("data.train_labels", d.train_labels);
  require_existing_file("data.val_labels", d.val_labels);
  require_positive("data.image_std", d.image_std);
}

void validate_diffusion(const DiffusionConfig& d) {
  MOE_USER_CHECK(d.timesteps > 1, "diffusion.timesteps: ", d.timesteps, " must be > 1");
  require_at_most("diffusion.timesteps", d.timesteps, 1 << 20);
  MOE_USER_CHECK(d.beta_start > 0.0f && d.beta_start <= d.beta_end, "diffusion.beta_start: ",
                 d.beta_start, " must be in (0, diffusion.beta_end = ", d.beta_end, "]");
  MOE_USER_CHECK(d.beta_end < 1.0f, "diffusion.beta_end: ", d.beta_end, " must be < 1");
  MOE_USER_CHECK(d.sampler != SamplerKind::kDdim || d.objective == DiffusionObjective::kDdpm,
                 "diffusion.sampler: ddim needs diffusion.objective = ddpm, not ", d.objective);
  MOE_USER_CHECK(d.sampler != SamplerKind::kEuler ||
                     d.objective == DiffusionObjective::kRectifiedFlow,
                 "diffusion.sampler: euler needs diffusion.objective = rectified_flow, not ",
                 d.objective);
  require_size("diffusion.sample_steps", d.sample_steps, 1 << 20);
  MOE_USER_CHECK(d.objective != DiffusionObjective::kDdpm || d.sample_steps <= d.timesteps,
                 "diffusion.sample_steps: ", d.sample_steps,
                 " must be <= diffusion.timesteps = ", d.timesteps);
  require_non_negative("diffusion.guidance", d.guidance);
}

void validate_optim(const OptimConfig& o) {
  require_positive("optim.lr", o.lr);
  MOE_USER_CHECK(o.min_lr >= 0.0f && o.min_lr <= o.lr, "optim.min_lr: ", o.min_lr,
                 " must be in [0, optim.lr = ", o.lr, "]");
  require_non_negative("optim.warmup_steps", o.warmup_steps);
  MOE_USER_CHECK(o.decay_fraction >= 0.0f && o.decay_fraction <= 1.0f,
                 "optim.decay_fraction: ", o.decay_fraction, " must be in [0, 1]");
  require_unit_interval("optim.beta1", o.beta1);
  require_unit_interval("optim.beta2", o.beta2);
  require_positive("optim.eps", o.eps);
  require_non_negative("optim.weight_decay", o.weight_decay);
}

// Sequence parallelism splits each dp rank's rows evenly over tp: B/dp * T rows (T the
// tokens of a sample); a family that keeps whole samples per rank (the DiT: its adaLN
// conditioning is per image) needs B/dp itself to split.
void validate_sequence_split(const Config& c) {
  const ParallelConfig& p = c.parallel;
  const FamilyTraits& family = family_traits(c.model.family);
  const int64_t samples = c.data.batch_size / p.dp;
  if (family.whole_samples_per_tp_rank) {
    MOE_USER_CHECK(samples % p.tp == 0, "data.batch_size: ", c.data.batch_size, " gives ",
                   samples, " ", family.samples, " per dp rank, not divisible by parallel.tp = ",
                   p.tp, " (parallel.sequence_parallel keeps whole ", family.samples,
                   " per tp rank)");
    return;
  }
  const int64_t tokens = family.tokens_per_sample(c.model);
  MOE_USER_CHECK((samples * tokens) % p.tp == 0, "data.batch_size: ", c.data.batch_size,
                 " gives ", samples * tokens, " rows per dp rank (", samples, " x ", tokens,
                 " tokens), not divisible by parallel.tp = ", p.tp,
                 " (parallel.sequence_parallel)");
}

// Sharded sparse experts (docs/parallelism.md) own the experts over the dp group and
// move rows with their own exchange; what this build combines them with is listed here.
void validate_expert_sharding(const Config& c) {
  const ParallelConfig& p = c.parallel;
  require_non_negative("parallel.materialize_slots", p.materialize_slots);
  require_at_most("parallel.materialize_slots", p.materialize_slots, 1024);
  require_non_negative("parallel.reshard_interval", p.reshard_interval);
  MOE_USER_CHECK(p.reshard_interval == 0 || p.expert_sharding == ExpertSharding::kFssdp,
                 "parallel.reshard_interval: ", p.reshard_interval, " needs "
                 "parallel.expert_sharding = fssdp (it re-plans the owners of sharded experts)");
  require_size("parallel.load_window", p.load_window, 1024);
  MOE_USER_CHECK(p.load_window == 1 || p.expert_sharding == ExpertSharding::kFssdp,
                 "parallel.load_window: ", p.load_window, " needs parallel.expert_sharding = "
                 "fssdp (it is the history of its replica plan)");
  MOE_USER_CHECK(!p.rematerialize || p.expert_sharding == ExpertSharding::kFssdp,
                 "parallel.rematerialize: true needs parallel.expert_sharding = fssdp (it "
                 "releases and fetches again the replicas fssdp materialises)");
  if (p.expert_sharding != ExpertSharding::kFssdp) return;
  const char* with = " with parallel.expert_sharding = fssdp";
  MOE_USER_CHECK(p.ep == 1, "parallel.ep: ", p.ep, with, ", which shards the experts over "
                 "the dp ranks itself; leave parallel.ep at 1");
  MOE_USER_CHECK(p.tp == 1 && p.etp == 1, "parallel.tp, parallel.etp: ", p.tp, ", ", p.etp,
                 with, " (not combined with tensor parallelism yet); use 1");
  const DispatcherKind d = c.moe.dispatcher;
  MOE_USER_CHECK(d == DispatcherKind::kAuto || d == DispatcherKind::kFlat, "moe.dispatcher: ",
                 d, with, ", which sends rows to owners and replicas with its own exchange; "
                 "use auto");
  MOE_USER_CHECK(c.moe.max_nodes_per_token == 0 && c.moe.locality_loss == 0.0f,
                 "moe.max_nodes_per_token, moe.locality_loss: not available", with,
                 " (replicas serve every node)");
  MOE_USER_CHECK(c.train.precision == Precision::kFp32, "train.precision: ", c.train.precision,
                 with, " (the replicas' bf16 copies are not built yet); use fp32");
}

void validate_parallel(const Config& c) {
  const ParallelConfig& p = c.parallel;
  require_size("parallel.dp", p.dp, 1 << 16);
  require_size("parallel.tp", p.tp, 1 << 16);
  require_size("parallel.ep", p.ep, 1 << 16);
  require_size("parallel.etp", p.etp, 1 << 16);
  require_non_negative("parallel.ranks_per_node", p.ranks_per_node);
  require_at_most("parallel.ranks_per_node", p.ranks_per_node, 1 << 16);
  require_non_negative("parallel.intra_latency_us", p.intra_latency_us);
  require_non_negative("parallel.intra_bandwidth_gbs", p.intra_bandwidth_gbs);
  require_non_negative("parallel.inter_latency_us", p.inter_latency_us);
  require_non_negative("parallel.inter_bandwidth_gbs", p.inter_bandwidth_gbs);
  // A bucket holds at least 256 floats: smaller ones would be empty.
  MOE_USER_CHECK(p.grad_bucket_mb >= 1.0f / 1024 && p.grad_bucket_mb <= 65536.0f,
                 "parallel.grad_bucket_mb: ", p.grad_bucket_mb,
                 " must be in [1/1024, 65536] (1 KiB to 64 GiB)");
  require_non_negative("parallel.timeout_s", p.timeout_s);
  // Folding: dense layers use world = dp * tp, MoE layers world = edp * ep * etp.
  const int64_t dense_world = int64_t{p.dp} * p.tp, moe_group = int64_t{p.ep} * p.etp;
  MOE_USER_CHECK(dense_world % moe_group == 0, "parallel.ep * parallel.etp: ", moe_group,
                 " must divide parallel.dp * parallel.tp = ", dense_world);
  MOE_USER_CHECK(p.ep <= c.moe.num_experts, "parallel.ep: ", p.ep,
                 " must be <= moe.num_experts = ", c.moe.num_experts);
  MOE_USER_CHECK(c.model.num_heads % p.tp == 0, "model.num_heads: ", c.model.num_heads,
                 " must be divisible by parallel.tp = ", p.tp);
  MOE_USER_CHECK(c.model.dense_ffn % p.tp == 0, "model.dense_ffn: ", c.model.dense_ffn,
                 " must be divisible by parallel.tp = ", p.tp);
  MOE_USER_CHECK(c.moe.num_shared == 0 || (c.moe.num_shared * c.moe.shared_ffn) % p.tp == 0,
                 "moe.num_shared * moe.shared_ffn: ", c.moe.num_shared * c.moe.shared_ffn,
                 " (the shared experts' width) must be divisible by parallel.tp = ", p.tp);
  MOE_USER_CHECK(c.moe.expert_ffn % p.etp == 0, "moe.expert_ffn: ", c.moe.expert_ffn,
                 " must be divisible by parallel.etp = ", p.etp);
  MOE_USER_CHECK(c.data.batch_size % p.dp == 0, "data.batch_size: ", c.data.batch_size,
                 " must be divisible by parallel.dp = ", p.dp);
  if (p.sequence_parallel && p.tp > 1) validate_sequence_split(c);
  validate_expert_sharding(c);
}

void validate_precision(const Config& c) {
  MOE_USER_CHECK(c.moe.a2a_dtype == Precision::kFp32 || c.train.precision == Precision::kBf16,
                 "moe.a2a_dtype: bf16 needs train.precision = bf16 (mixed precision rounds "
                 "the experts' rows to bf16 anyway), not ", c.train.precision);
  // With etp > 1 the experts' outputs are partial sums over the etp group: rounding them
  // before the sum would round at other points than one process does.
  MOE_USER_CHECK(c.moe.a2a_dtype == Precision::kFp32 || c.parallel.etp == 1,
                 "moe.a2a_dtype: bf16 needs parallel.etp = 1 (the experts' outputs are "
                 "partial sums over etp = ", c.parallel.etp, ")");
  MOE_USER_CHECK(c.moe.a2a_dtype == Precision::kFp32 ||
                     c.moe.dispatcher != DispatcherKind::kShm,
                 "moe.a2a_dtype: bf16 rounds the rows of an exchange, and moe.dispatcher = shm "
                 "exchanges none (its ranks read the rows where they lie); use fp32");
}

void validate_run(const Config& c) {
  require_positive("train.steps", c.train.steps);
  require_positive("train.log_interval", c.train.log_interval);
  require_non_negative("train.eval_interval", c.train.eval_interval);
  require_non_negative("train.eval_batches", c.train.eval_batches);
  require_non_negative("train.eval_tokens", c.train.eval_tokens);
  require_at_most("train.eval_tokens", c.train.eval_tokens, int64_t{1} << 40);
  require_non_negative("train.threads", c.train.threads);
  require_at_most("train.threads", c.train.threads, 1024);
  require_size("train.max_skipped_steps", c.train.max_skipped_steps, 1 << 20);
  require_non_negative("train.peak_gflops", c.train.peak_gflops);
  MOE_USER_CHECK(!c.run.dir.empty(), "run.dir: must not be empty");
  require_existing_file("run.resume", c.run.resume.path);
  require_existing_file("run.init_from", c.run.init_from);
  if (c.run.tensorboard) {
    const std::filesystem::path tb = std::filesystem::path(c.run.dir) / "tb";
    std::error_code ec;
    MOE_USER_CHECK(!std::filesystem::exists(tb, ec) || std::filesystem::is_directory(tb, ec),
                   "run.tensorboard: '", tb.string(),
                   "' exists and is not a directory; remove it or set run.tensorboard=false");
  }
  MOE_USER_CHECK(c.run.device != Device::kCuda || cuda_backend_built(), "run.device: cuda, "
                 "but this build has no CUDA backend (build where nvcc is installed, or "
                 "with -DMOE_WITH_CUDA=ON)");
  MOE_USER_CHECK(!c.run.share_gpus || c.run.device == Device::kCuda,
                 "run.share_gpus: true needs run.device = cuda");
  require_non_negative("checkpoint.interval", c.checkpoint.interval);
  require_positive("checkpoint.keep", c.checkpoint.keep);
}

}  // namespace

void validate_config(const Config& config) {
  validate_model(config.model);
  validate_moe(config.moe, config.parallel);
  validate_optim(config.optim);
  validate_data(config.data);
  validate_diffusion(config.diffusion);
  validate_run(config);
  validate_precision(config);
  validate_parallel(config);
  family_traits(config.model.family).validate(config);  // the family's own options
}

}  // namespace moe::config_detail
