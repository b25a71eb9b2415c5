// The option table: every config key, declared once and bound to its field.
// Values are parsed here (not by Boost's lexical_cast) so that a bad value gets a
// one-line message with the key, and so that "-1" is not silently read as 2^64 - 1.

#include "framework/config/options.h"

#include <charconv>
#include <cmath>
#include <limits>
#include <utility>

#include "framework/core/error.h"

namespace moe::config_detail {
namespace {

// ---- typed parsing: one overload per field type ----

template <class Int>
void parse_integer(const std::string& key, const std::string& text, const std::string& where,
                   const char* what, Int& out) {
  Int value{};
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec == std::errc::result_out_of_range)
    MOE_USER_FAIL(key, ": '", text, "' is out of range for ", what, where);
  MOE_USER_CHECK(ec == std::errc() && ptr == end && !text.empty(), key, ": '", text,
                 "' is not ", what, where);
  out = value;
}

void parse_value(const std::string& key, const std::string& text, const std::string& where,
                 int& out) {
  parse_integer(key, text, where, "an integer", out);
}
void parse_value(const std::string& key, const std::string& text, const std::string& where,
                 int64_t& out) {
  parse_integer(key, text, where, "an integer", out);
}
void parse_value(const std::string& key, const std::string& text, const std::string& where,
                 uint64_t& out) {
  parse_integer(key, text, where, "a non-negative integer", out);
}

template <class Real>
void parse_real(const std::string& key, const std::string& text, const std::string& where,
                Real& out) {
  Real value{};
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec == std::errc::result_out_of_range)
    MOE_USER_FAIL(key, ": '", text, "' is out of range for a ",
                  sizeof(Real) == 4 ? "float" : "double", where);
  MOE_USER_CHECK(ec == std::errc() && ptr == end && !text.empty(), key, ": '", text,
                 "' is not a number", where);
  MOE_USER_CHECK(std::isfinite(value), key, ": '", text, "' is not a finite number", where);
  out = value;
}

void parse_value(const std::string& key, const std::string& text, const std::string& where,
                 float& out) {
  parse_real(key, text, where, out);
}
void parse_value(const std::string& key, const std::string& text, const std::string& where,
                 double& out) {
  parse_real(key, text, where, out);
}

void parse_value(const std::string& key, const std::string& text, const std::string& where,
                 bool& out) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") {
    out = true;
  } else if (text == "false" || text == "0" || text == "no" || text == "off") {
    out = false;
  } else {
    MOE_USER_FAIL(key, ": '", text, "' is not a boolean (true/false, 1/0, yes/no, on/off)",
                  where);
  }
}

void parse_value(const std::string& key, const std::string& text, const std::string& where,
                 std::string& out) {
  // The resolved config must read back unchanged: INI values lose '#...' (a comment)
  // and surrounding blanks, and cannot span lines.
  MOE_USER_CHECK(text.find_first_of("#\n\r") == std::string::npos, key, ": '", text,
                 "' contains '#' or a line break, which an INI file cannot hold", where);
  MOE_USER_CHECK(text.empty() || (text.front() != ' ' && text.back() != ' '), key, ": '",
                 text, "' has leading or trailing blanks", where);
  out = text;
}

// An option enum from its spelling: "<key>: '<text>' is not a <noun> (known: a, b)".
template <class E, class = decltype(EnumSpelling<E>::kNoun)>
void parse_value(const std::string& key, const std::string& text, const std::string& where,
                 E& out) {
  if (const std::optional<E> value = enum_from_name<E>(text)) {
    out = *value;
    return;
  }
  std::string known;
  for (const auto& [value, name] : EnumSpelling<E>::kValues)
    known += known.empty() ? name : std::string(", ") + name;
  MOE_USER_FAIL(key, ": '", text, "' is not a ", EnumSpelling<E>::kNoun, " (known: ", known,
                ")", where);
}

void parse_value(const std::string& key, const std::string& text, const std::string& where,
                 ResumeFrom& out) {
  std::string path;
  parse_value(key, text, where, path);
  if (path.empty()) out = {ResumeFrom::Kind::kFresh, ""};
  else if (path == "auto") out = {ResumeFrom::Kind::kAuto, ""};
  else out = {ResumeFrom::Kind::kPath, path};
}

// ---- formatting: the shortest text that parses back to the same value ----

template <class T>
std::string format_number(T value) {
  char buf[64];
  const auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  MOE_CHECK(ec == std::errc(), "cannot format a config value");
  return std::string(buf, ptr);
}

std::string format_value(int v) { return format_number(v); }
std::string format_value(int64_t v) { return format_number(v); }
std::string format_value(uint64_t v) { return format_number(v); }
std::string format_value(float v) { return format_number(v); }
std::string format_value(double v) { return format_number(v); }
std::string format_value(bool v) { return v ? "true" : "false"; }
std::string format_value(const std::string& v) { return v; }
template <class E, class = decltype(EnumSpelling<E>::kNoun)>
std::string format_value(E v) {
  return enum_name(v);
}
std::string format_value(const ResumeFrom& v) {
  return v.automatic() ? "auto" : v.path;
}

template <class T> const char* type_name() {
  return "string";  // the option enums and run.resume are spelled as words
}
template <> const char* type_name<int>() { return "int"; }
template <> const char* type_name<int64_t>() { return "int64"; }
template <> const char* type_name<uint64_t>() { return "uint64"; }
template <> const char* type_name<float>() { return "float"; }
template <> const char* type_name<double>() { return "double"; }
template <> const char* type_name<bool>() { return "bool"; }
template <> const char* type_name<std::string>() { return "string"; }

// Declares `key`, bound to config.*section.*field.
template <class Section, class Field>
OptionDef option(Section Config::*section, Field Section::*field, const char* key,
                 const char* help) {
  OptionDef def;
  def.key = key;
  def.type = type_name<Field>();
  def.help = help;
  def.parse = [section, field, k = def.key](Config& c, const std::string& text,
                                           const std::string& where) {
    parse_value(k, text, where, c.*section.*field);
  };
  def.format = [section, field](const Config& c) { return format_value(c.*section.*field); };
  return def;
}

std::vector<OptionDef> model_options() {
  using C = Config;
  return {
    option(&C::model, &ModelConfig::family, "model.family",
           "model family: one of the registered families (listed at the end)"),
    option(&C::model, &ModelConfig::vocab_size, "model.vocab_size",
           "vocabulary size V (1 to 2^24; every token of the data must be < V)"),
    option(&C::model, &ModelConfig::seq_len, "model.seq_len",
           "sequence length T in tokens (1 to 2^20)"),
    option(&C::model, &ModelConfig::num_layers, "model.num_layers",
           "transformer layers L (1 to 1024)"),
    option(&C::model, &ModelConfig::d_model, "model.d_model",
           "model width C (1 to 65536, divisible by num_heads)"),
    option(&C::model, &ModelConfig::num_heads, "model.num_heads",
           "attention heads H (1 to 4096; head dim C/H must be even for rotary)"),
    option(&C::model, &ModelConfig::dense_layers, "model.dense_layers",
           "the first k layers use a dense FFN, the rest MoE (0 <= k <= num_layers)"),
    option(&C::model, &ModelConfig::moe_every, "model.moe_every",
           "of the layers after dense_layers, every n-th is MoE, the others dense (> 0)"),
    option(&C::model, &ModelConfig::dense_ffn, "model.dense_ffn",
           "width of the dense FFN (1 to 2^20; SwiGLU, GELU in vit_moe)"),
    option(&C::model, &ModelConfig::rope_theta, "model.rope_theta",
           "rotary embedding base theta (> 0)"),
    option(&C::model, &ModelConfig::norm_eps, "model.norm_eps", "RMSNorm epsilon (> 0)"),
    option(&C::model, &ModelConfig::init_std, "model.init_std",
           "std of the normal init (> 0); output projections use init_std/sqrt(2L)"),
    option(&C::model, &ModelConfig::image_size, "model.image_size",
           "image families: height = width of the images (1 to 4096, divisible by patch_size)"),
    option(&C::model, &ModelConfig::image_channels, "model.image_channels",
           "image families: channels of the images (1 to 64)"),
    option(&C::model, &ModelConfig::patch_size, "model.patch_size",
           "image families: patch size p, tokens are p x p patches (> 0)"),
    option(&C::model, &ModelConfig::num_classes, "model.num_classes",
           "image families: number of classes; labels are < num_classes (1 to 2^20)"),
    option(&C::model, &ModelConfig::pool, "model.pool",
           "vit_moe: classify the CLS token (cls) or the mean of the patch tokens (gap)"),
    option(&C::model, &ModelConfig::pos_embed, "model.pos_embed",
           "image families: auto | learned | sincos (auto: vit_moe learned, dit_moe sincos)"),
    option(&C::model, &ModelConfig::class_dropout, "model.class_dropout",
           "dit_moe: probability of replacing a label by the null class (0 <= p < 1)"),
  };
}

std::vector<OptionDef> moe_options() {
  using C = Config;
  return {
    option(&C::moe, &MoeConfig::num_experts, "moe.num_experts",
           "routed experts E per MoE layer (1 to 16384)"),
    option(&C::moe, &MoeConfig::top_k, "moe.top_k",
           "experts chosen per token K (0 < K <= num_experts)"),
    option(&C::moe, &MoeConfig::expert_ffn, "moe.expert_ffn",
           "width F of each routed SwiGLU expert (1 to 2^20)"),
    option(&C::moe, &MoeConfig::num_shared, "moe.num_shared",
           "always-on shared experts (0 to 64; 0 = none)"),
    option(&C::moe, &MoeConfig::shared_ffn, "moe.shared_ffn",
           "width of each shared expert (1 to 2^20)"),
    option(&C::moe, &MoeConfig::capacity_factor, "moe.capacity_factor",
           "expert capacity factor cf; <= 0: dropless, else C_e = ceil(cf*N*K/E)"),
    option(&C::moe, &MoeConfig::renormalize, "moe.renormalize",
           "renormalise the combine weights over the K chosen experts"),
    option(&C::moe, &MoeConfig::batch_priority, "moe.batch_priority",
           "V-MoE Batch Priority Routing: admit confident tokens first under capacity"),
    option(&C::moe, &MoeConfig::expert_act, "moe.expert_act",
           "routed and shared experts: swiglu | gelu"),
    option(&C::moe, &MoeConfig::aux_loss, "moe.aux_loss",
           "Switch/GShard load-balance coefficient alpha (>= 0)"),
    option(&C::moe, &MoeConfig::z_loss, "moe.z_loss", "router z-loss coefficient (>= 0)"),
    option(&C::moe, &MoeConfig::bias_balance, "moe.bias_balance",
           "DeepSeek-V3 aux-loss-free balancing by a selection bias"),
    option(&C::moe, &MoeConfig::bias_update_rate, "moe.bias_update_rate",
           "step gamma of the bias update (>= 0)"),
    option(&C::moe, &MoeConfig::dispatcher, "moe.dispatcher",
           "token dispatcher: auto (local when parallel.ep = 1, else flat or two_level by "
           "the cost model), local, flat, two_level, node_dedup (each token crosses to a "
           "node once, then fans out inside it)"),
    option(&C::moe, &MoeConfig::routing, "moe.routing",
           "routing: topk | bilevel (SMILE: node-level then rank-level router)"),
    option(&C::moe, &MoeConfig::node_groups, "moe.node_groups",
           "bilevel: expert groups (nodes) of the node-level router (> 0 with bilevel)"),
    option(&C::moe, &MoeConfig::max_nodes_per_token, "moe.max_nodes_per_token",
           "node-limited routing: nodes a token may reach (>= 0; 0 = unlimited)"),
    option(&C::moe, &MoeConfig::own_node_bonus, "moe.own_node_bonus",
           "node-limited routing: added to the score of the token's own node before the "
           "M best nodes are kept (>= 0; 0 = none)"),
    option(&C::moe, &MoeConfig::router_skew, "moe.router_skew",
           "benchmark knob: Zipf exponent s; adds -s ln(e + 1) to expert e's router logit, "
           "a skewed expert popularity (0 to 16; 0 = none; top-K routing only)"),
    option(&C::moe, &MoeConfig::locality_loss, "moe.locality_loss",
           "LocMoE locality loss coefficient mu (>= 0)"),
    option(&C::moe, &MoeConfig::a2a_dtype, "moe.a2a_dtype",
           "rows of the dispatch/combine exchanges: fp32 | bf16 (half the bytes; expert "
           "outputs and input gradients are rounded to bf16 on every layout; needs "
           "train.precision = bf16)"),
  };
}

std::vector<OptionDef> optim_options() {
  using C = Config;
  return {
    option(&C::optim, &OptimConfig::lr, "optim.lr", "peak learning rate (> 0)"),
    option(&C::optim, &OptimConfig::min_lr, "optim.min_lr",
           "learning rate at the end of the decay (0 <= min_lr <= lr)"),
    option(&C::optim, &OptimConfig::warmup_steps, "optim.warmup_steps",
           "steps of linear warmup from 0 to lr (>= 0)"),
    option(&C::optim, &OptimConfig::schedule, "optim.schedule",
           "learning-rate schedule after warmup: cosine | wsd | constant"),
    option(&C::optim, &OptimConfig::decay_fraction, "optim.decay_fraction",
           "wsd: fraction of the steps spent in the final linear decay (0 <= f <= 1)"),
    option(&C::optim, &OptimConfig::beta1, "optim.beta1", "AdamW beta1 (0 <= beta1 < 1)"),
    option(&C::optim, &OptimConfig::beta2, "optim.beta2", "AdamW beta2 (0 <= beta2 < 1)"),
    option(&C::optim, &OptimConfig::eps, "optim.eps", "AdamW epsilon (> 0)"),
    option(&C::optim, &OptimConfig::weight_decay, "optim.weight_decay",
           "decoupled weight decay on matrices, not norms (>= 0)"),
    option(&C::optim, &OptimConfig::grad_clip, "optim.grad_clip",
           "clip the global gradient norm to this value; <= 0 disables"),
  };
}

std::vector<OptionDef> data_options() {
  using C = Config;
  return {
    option(&C::data, &DataConfig::train_path, "data.train_path",
           "training token shard, or IDX images for image families; must exist when set"),
    option(&C::data, &DataConfig::val_path, "data.val_path",
           "validation token shard, or IDX images; must exist when set"),
    option(&C::data, &DataConfig::train_labels, "data.train_labels",
           "image families: IDX labels of data.train_path; must exist when set"),
    option(&C::data, &DataConfig::val_labels, "data.val_labels",
           "image families: IDX labels of data.val_path; must exist when set"),
    option(&C::data, &DataConfig::batch_size, "data.batch_size",
           "global batch in sequences or images (1 to 2^24, divisible by parallel.dp)"),
    option(&C::data, &DataConfig::hflip, "data.hflip",
           "image families: flip training images horizontally with probability 1/2"),
    option(&C::data, &DataConfig::image_mean, "data.image_mean",
           "image families: pixel p in [0, 1] is fed as (p - image_mean) / image_std"),
    option(&C::data, &DataConfig::image_std, "data.image_std",
           "image families: see data.image_mean (> 0)"),
  };
}

std::vector<OptionDef> diffusion_options() {
  using C = Config;
  return {
    option(&C::diffusion, &DiffusionConfig::objective, "diffusion.objective",
           "dit_moe training objective: ddpm (epsilon prediction) | rectified_flow"),
    option(&C::diffusion, &DiffusionConfig::timesteps, "diffusion.timesteps",
           "ddpm: diffusion steps of the linear beta schedule (2 to 2^20)"),
    option(&C::diffusion, &DiffusionConfig::beta_start, "diffusion.beta_start",
           "ddpm: first beta (0 < beta_start <= beta_end)"),
    option(&C::diffusion, &DiffusionConfig::beta_end, "diffusion.beta_end",
           "ddpm: last beta (beta_start <= beta_end < 1)"),
    option(&C::diffusion, &DiffusionConfig::sampler, "diffusion.sampler",
           "sampler: auto | ddim (ddpm) | euler (rectified_flow); auto picks the match"),
    option(&C::diffusion, &DiffusionConfig::sample_steps, "diffusion.sample_steps",
           "denoising steps when sampling (1 to 2^20; <= timesteps for ddpm)"),
    option(&C::diffusion, &DiffusionConfig::guidance, "diffusion.guidance",
           "classifier-free guidance scale s: eps_u + s (eps_c - eps_u) (>= 0; 1 = none)"),
  };
}

std::vector<OptionDef> train_options() {
  using C = Config;
  return {
    option(&C::train, &TrainConfig::steps, "train.steps", "optimizer steps (> 0)"),
    option(&C::train, &TrainConfig::seed, "train.seed",
           "seed of initialisation and data sampling (0 <= seed < 2^64)"),
    option(&C::train, &TrainConfig::log_interval, "train.log_interval",
           "steps between metrics records (> 0)"),
    option(&C::train, &TrainConfig::eval_interval, "train.eval_interval",
           "steps between validations (>= 0; 0 = only at the end)"),
    option(&C::train, &TrainConfig::eval_batches, "train.eval_batches",
           "image families: test batches of data.batch_size images per evaluation, in "
           "order (>= 0; 0 = the whole test split)"),
    option(&C::train, &TrainConfig::eval_tokens, "train.eval_tokens",
           "moe_gpt: evaluate the first N tokens of data.val_path (all of it when shorter) "
           "in non-overlapping windows of model.seq_len (0 = no validation, else >= seq_len)"),
    option(&C::train, &TrainConfig::threads, "train.threads",
           "compute threads per rank (0 to 1024, at most the cores the rank may use; 0 = all cores of the rank)"),
    option(&C::train, &TrainConfig::peak_gflops, "train.peak_gflops",
           "peak GFLOP/s for MFU per core (per GPU with run.device = cuda) (>= 0; 0 = measure "
           "at start-up)"),
    option(&C::train, &TrainConfig::on_nonfinite, "train.on_nonfinite",
           "a non-finite loss or gradient norm: stop (exit 3, no checkpoint written) | skip "
           "(the update is skipped and counted)"),
    option(&C::train, &TrainConfig::max_skipped_steps, "train.max_skipped_steps",
           "skip: stop (exit 3) after this many skipped steps in a row (> 0)"),
    option(&C::train, &TrainConfig::precision, "train.precision",
           "matrix products: fp32 | bf16 (mixed precision: bf16 operands summed in fp32; "
           "master weights, optimizer state, norms, softmax, router and losses stay fp32)"),
  };
}

std::vector<OptionDef> run_options() {
  using C = Config;
  return {
    option(&C::run, &RunConfig::dir, "run.dir",
           "run directory: metrics.jsonl, config.ini, checkpoints/ (non-empty)"),
    option(&C::run, &RunConfig::resume, "run.resume",
           "resume from 'auto' (newest checkpoint of run.dir) or a path; empty = fresh"),
    option(&C::run, &RunConfig::init_from, "run.init_from",
           "checkpoint whose weights initialise the model; empty = random init"),
    option(&C::run, &RunConfig::overwrite, "run.overwrite",
           "allow a run.dir that already holds a run"),
    option(&C::run, &RunConfig::save_model, "run.save_model",
           "write the final weights to <run.dir>/model.h5"),
    option(&C::run, &RunConfig::tensorboard, "run.tensorboard",
           "write TensorBoard events (scalars, histograms, images) to <run.dir>/tb"),
    option(&C::run, &RunConfig::device, "run.device",
           "compute device of every rank: cpu | cuda (one GPU per rank: local rank modulo "
           "the visible GPUs; needs a build with the CUDA backend)"),
    option(&C::run, &RunConfig::share_gpus, "run.share_gpus",
           "cuda: allow more ranks on a node than it has visible GPUs (ranks then share "
           "GPUs); without it such a job is refused"),
  };
}

std::vector<OptionDef> checkpoint_options() {
  using C = Config;
  return {
    option(&C::checkpoint, &CheckpointConfig::dir, "checkpoint.dir",
           "directory of the checkpoints; empty = <run.dir>/checkpoints"),
    option(&C::checkpoint, &CheckpointConfig::interval, "checkpoint.interval",
           "steps between checkpoints (>= 0; 0 = only at the end)"),
    option(&C::checkpoint, &CheckpointConfig::keep, "checkpoint.keep",
           "checkpoints kept, newest first (> 0)"),
    option(&C::checkpoint, &CheckpointConfig::collective_io, "checkpoint.collective_io",
           "write checkpoints with collective MPI-IO transfers (false: independent)"),
    option(&C::checkpoint, &CheckpointConfig::on_error, "checkpoint.on_error",
           "a checkpoint that cannot be written (full disk, I/O error): stop (exit 2) | warn "
           "(train on, retry at the next interval)"),
    option(&C::checkpoint, &CheckpointConfig::on_signal, "checkpoint.on_signal",
           "on SIGTERM/SIGINT finish the step and write a checkpoint before exiting"),
  };
}

std::vector<OptionDef> parallel_options() {
  using C = Config;
  return {
    option(&C::parallel, &ParallelConfig::dp, "parallel.dp",
           "data-parallel size of the dense layers (1 to 65536)"),
    option(&C::parallel, &ParallelConfig::tp, "parallel.tp",
           "tensor-parallel size of the dense layers (1 to 65536)"),
    option(&C::parallel, &ParallelConfig::sequence_parallel, "parallel.sequence_parallel",
           "split norms, residual stream and MoE input along the sequence over tp "
           "(all-gather / reduce-scatter instead of all-reduce; no effect at tp = 1)"),
    option(&C::parallel, &ParallelConfig::ep, "parallel.ep",
           "expert-parallel size (1 to 65536; ep * etp divides dp * tp)"),
    option(&C::parallel, &ParallelConfig::etp, "parallel.etp",
           "tensor-parallel size inside each expert (1 to 65536)"),
    option(&C::parallel, &ParallelConfig::ranks_per_node, "parallel.ranks_per_node",
           "ranks per node (0 to 65536; 0 = discovered from MPI)"),
    option(&C::parallel, &ParallelConfig::intra_latency_us, "parallel.intra_latency_us",
           "cost model: intra-node message latency in us (>= 0; 0 = measure or default)"),
    option(&C::parallel, &ParallelConfig::intra_bandwidth_gbs, "parallel.intra_bandwidth_gbs",
           "cost model: intra-node bandwidth per rank in GB/s (>= 0; 0 = measure or default)"),
    option(&C::parallel, &ParallelConfig::inter_latency_us, "parallel.inter_latency_us",
           "cost model: inter-node message latency in us (>= 0; 0 = measure or default)"),
    option(&C::parallel, &ParallelConfig::inter_bandwidth_gbs, "parallel.inter_bandwidth_gbs",
           "cost model: inter-node bandwidth per rank in GB/s (>= 0; 0 = measure or default)"),
    option(&C::parallel, &ParallelConfig::grad_bucket_mb, "parallel.grad_bucket_mb",
           "gradient all-reduce bucket size in MiB (1/1024 <= size <= 65536)"),
    option(&C::parallel, &ParallelConfig::timeout_s, "parallel.timeout_s",
           "a rank waiting longer than this in one collective aborts the job (exit 4) "
           "naming the collective and the ranks it waits for (>= 0; 0 = never)"),
    option(&C::parallel, &ParallelConfig::shard_optimizer, "parallel.shard_optimizer",
           "ZeRO-1/2: each rank of a group replicating a parameter keeps the AdamW state of, "
           "and updates, a 1/n slice of it (gradients reduce-scattered, weights all-gathered)"),
    option(&C::parallel, &ParallelConfig::expert_sharding, "parallel.expert_sharding",
           "none | fssdp: every expert of a MoE layer owned by one rank (weights and AdamW "
           "state), replicas of busy experts materialised where tokens are (parallel.ep = 1)"),
    option(&C::parallel, &ParallelConfig::materialize_slots, "parallel.materialize_slots",
           "fssdp: expert replicas a rank may materialise per MoE layer and step (0 to 1024)"),
    option(&C::parallel, &ParallelConfig::reshard_interval, "parallel.reshard_interval",
           "fssdp: every this many steps re-plan each MoE layer's expert owners from the "
           "loads of those steps, moving weights and AdamW moments (>= 0; 0 = never)"),
    option(&C::parallel, &ParallelConfig::load_window, "parallel.load_window",
           "fssdp: steps of row counts the replica plan reads, this step's router output "
           "included (1 to 1024; 1 = this step only)"),
    option(&C::parallel, &ParallelConfig::rematerialize, "parallel.rematerialize",
           "fssdp: release each MoE layer's materialised replicas after its forward and "
           "fetch them again before its backward (less memory, twice the all-gather bytes)"),
  };
}

// Sections in the order config.ini lists them.
std::vector<OptionDef> make_table() {
  std::vector<OptionDef> table;
  for (auto section : {&model_options, &moe_options, &optim_options, &data_options,
                       &diffusion_options, &train_options, &run_options, &checkpoint_options, &parallel_options}) {
    for (OptionDef& def : section()) table.push_back(std::move(def));
  }
  return table;
}

}  // namespace

const std::vector<OptionDef>& option_table() {
  static const std::vector<OptionDef> table = make_table();
  return table;
}

}  // namespace moe::config_detail
