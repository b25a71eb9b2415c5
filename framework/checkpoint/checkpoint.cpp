#include "framework/checkpoint/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <set>

#include "framework/checkpoint/checksum.h"
#include "framework/kernels/ops.h"

namespace moe {
namespace {

// Checksums of the float datasets a file holds, in the order they were written or read:
// each rank adds the blocks it owns; the sums over ranks are the tensors' checksums.
class ChecksumLedger {
 public:
  void add(std::string dataset, uint64_t partial) {
    datasets_.push_back(std::move(dataset));
    partial_.push_back(partial);
  }
  // Collective over `world`: the whole-tensor checksum of every dataset.
  std::vector<uint64_t> totals(Communicator& world) const {
    const size_t n = partial_.size();
    std::vector<int64_t> mine(n), all(n * static_cast<size_t>(world.size()));
    for (size_t j = 0; j < n; ++j) std::memcpy(&mine[j], &partial_[j], sizeof(uint64_t));
    world.all_gather<int64_t>(mine, all);
    std::vector<uint64_t> total(n, 0);
    for (int r = 0; r < world.size(); ++r)
      for (size_t j = 0; j < n; ++j) {
        uint64_t v;
        std::memcpy(&v, &all[static_cast<size_t>(r) * n + j], sizeof(v));
        total[j] += v;  // mod 2^64
      }
    return total;
  }
  const std::vector<std::string>& datasets() const { return datasets_; }

 private:
  std::vector<std::string> datasets_;
  std::vector<uint64_t> partial_;
};

Shape vector_shape(size_t n) { return Shape{static_cast<int64_t>(n)}; }

// The first failed data transfer of this rank. A rank whose write failed goes on making
// the same collective calls as the others (with nothing to write: `write(false)`), so
// that they can all agree at the end.
class WriteFailures {
 public:
  template <class Write>
  void attempt(Write&& write) {
    try {
      write(first_.empty());
    } catch (const Error& e) {
      if (!e.user_error()) throw;
      if (first_.empty()) first_ = e.what();
    }
  }
  // Collective over `world`: the first failure of the lowest failing rank, or "".
  std::string agree(Communicator& world) const {
    int32_t failing = first_.empty() ? world.size() : world.rank();
    world.all_reduce<int32_t>({&failing, 1}, ReduceOp::kMin);
    if (failing == world.size()) return "";
    std::vector<char> text(1024, '\0');
    if (world.rank() == failing) first_.copy(text.data(), text.size() - 1);
    world.broadcast<char>(text, failing);
    return text.data();
  }

 private:
  std::string first_;
};

}  // namespace

void write_origin(H5File& file, const CheckpointOrigin& origin, const std::string& format) {
  file.set_string_attr("/", "format", format);
  file.set_int_attr("/", "format_version", kCheckpointFormatVersion);
  file.set_string_attr("/", "framework_version", MOE_VERSION);
  file.set_string_attr("/", "model_family", origin.family);
  file.set_int_attr("/", "world_size", origin.world_size);
  file.set_int_attr("/", "parallel_dp", origin.layout.dp);
  file.set_int_attr("/", "parallel_tp", origin.layout.tp);
  file.set_int_attr("/", "parallel_ep", origin.layout.ep);
  file.set_int_attr("/", "parallel_etp", origin.layout.etp);
  file.set_string_attr("/config", "ini", origin.config_ini);
}

CheckpointOrigin read_origin(const H5File& file) {
  CheckpointOrigin origin;
  origin.family = file.string_attr("/", "model_family");
  origin.world_size = static_cast<int>(file.int_attr("/", "world_size"));
  origin.layout.dp = static_cast<int>(file.int_attr("/", "parallel_dp"));
  origin.layout.tp = static_cast<int>(file.int_attr("/", "parallel_tp"));
  origin.layout.ep = static_cast<int>(file.int_attr("/", "parallel_ep"));
  origin.layout.etp = static_cast<int>(file.int_attr("/", "parallel_etp"));
  origin.config_ini = file.string_attr("/config", "ini");
  return origin;
}

namespace {

// The /trainer attributes, each bound to its TrainerState field, in file order.
constexpr std::pair<const char*, int64_t TrainerState::*> kTrainerInts[] = {
    {"step", &TrainerState::step},
    {"tokens_seen", &TrainerState::tokens_seen},
    {"rng_counter", &TrainerState::rng_counter},
    {"data_position", &TrainerState::data_position},
    {"lr_total_steps", &TrainerState::lr_total_steps},
    {"lr_warmup_steps", &TrainerState::lr_warmup_steps}};
constexpr std::pair<const char*, double TrainerState::*> kTrainerFloats[] = {
    {"lr_peak", &TrainerState::lr_peak},
    {"lr_min", &TrainerState::lr_min},
    {"lr_decay_fraction", &TrainerState::lr_decay_fraction},
    {"lr_last", &TrainerState::lr_last}};

void write_trainer(H5File& file, const TrainerState& t) {
  const std::string g = "/trainer";
  for (const auto& [name, field] : kTrainerInts) file.set_int_attr(g, name, t.*field);
  file.set_uint_attr(g, "rng_seed", t.rng_seed);
  file.set_string_attr(g, "lr_schedule", t.lr_schedule);
  for (const auto& [name, field] : kTrainerFloats) file.set_float_attr(g, name, t.*field);
}

}  // namespace

TrainerState read_trainer_state(const H5File& file) {
  const std::string g = "/trainer";
  TrainerState t;
  for (const auto& [name, field] : kTrainerInts) t.*field = file.int_attr(g, name);
  t.rng_seed = file.uint_attr(g, "rng_seed");
  t.lr_schedule = file.string_attr(g, "lr_schedule");
  for (const auto& [name, field] : kTrainerFloats) t.*field = file.float_attr(g, name);
  MOE_USER_CHECK(t.step >= 0 && t.data_position == t.step && t.rng_counter == t.step,
                 file.path(), ": /trainer is inconsistent (step ", t.step, ", data_position ",
                 t.data_position, ", rng_counter ", t.rng_counter, ")");
  return t;
}

namespace {

// The local block of copy `copy` of parameter i, on the parameter's device.
Tensor copy_tensor(const CheckpointContent& c, size_t i, int copy) {
  Param& p = c.store->params()[i];
  if (copy == 0) return p.data();
  return copy == 1 ? c.optimizer->exp_avg(i) : c.optimizer->exp_avg_sq(i);
}

// Device -> host for the write: the block itself when it is in host memory, else its
// copy in `staging`.
const float* host_block(Tensor block, Buffer& staging) {
  if (block.device == Device::kCpu) return block.data;
  Tensor host = staging.view(block.shape);
  ops::copy(block, host);
  return host.data;
}

// A tensor several ranks write goes in one collective transfer (when `collective`); a
// tensor one rank writes whole goes independently, so the other ranks do not wait for
// it: a collective transfer would synchronise all ranks for no aggregation to gain.
void write_tensors(H5File& file, const CheckpointContent& content, const BlockPlan& plan,
                   int copy, bool collective, ChecksumLedger& ledger,
                   WriteFailures& failures) {
  const std::deque<Param>& params = content.store->params();
  Buffer staging;  // a device block's host copy
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    const std::string name = tensor_path(p.spec.name, copy);
    const float* data = host_block(copy_tensor(content, i, copy), staging);
    const bool mine = plan.writes(i, copy);
    file.create_float_dataset(name, p.spec.shape);
    file.set_collective_transfers(collective && plan.sharded(i));
    failures.attempt(
        [&](bool ok) { file.write_block(name, data, p.local_shape, p.offset, mine && ok); });
    if (copy == 0) file.set_string_attr(name, "shard", shard_name(p.spec.shard));
    ledger.add(name, mine ? block_checksum(data, p.spec.shape, p.local_shape, p.offset) : 0);
  }
}

void read_tensors(const H5File& file, const CheckpointContent& content, const BlockPlan& plan,
                  int copy, ChecksumLedger& ledger) {
  const std::deque<Param>& params = content.store->params();
  Buffer staging;  // a device block's host copy: read there, then host -> device
  for (size_t i = 0; i < params.size(); ++i) {
    const Param& p = params[i];
    const std::string name = tensor_path(p.spec.name, copy);
    const Tensor block = copy_tensor(content, i, copy);
    const Tensor host = block.device == Device::kCpu ? block : staging.view(block.shape);
    file.read_block(name, host.data, p.local_shape, p.offset);
    if (host.data != block.data) ops::copy(host, block);
    const bool mine = plan.writes(i, copy);
    ledger.add(name,
               mine ? block_checksum(host.data, p.spec.shape, p.local_shape, p.offset) : 0);
  }
}

// Buffers are equal on every rank: rank 0 writes and counts them.
void write_buffers(H5File& file, const CheckpointContent& content, int rank,
                   ChecksumLedger& ledger, WriteFailures& failures) {
  for (const NamedBuffer& b : content.buffers) {
    const std::string name = "/buffers/" + b.name;
    const Shape shape = vector_shape(b.data.size());
    failures.attempt([&](bool) { file.write(name, b.data.data(), shape); });
    ledger.add(name, rank == 0 ? block_checksum(b.data.data(), shape, shape, {}) : 0);
  }
}

void read_buffers(const H5File& file, const CheckpointContent& content, int rank,
                  ChecksumLedger& ledger) {
  for (const NamedBuffer& b : content.buffers) {
    const std::string name = "/buffers/" + b.name;
    const Shape shape = vector_shape(b.data.size());
    if (b.optional && !file.exists(name)) {
      std::fill(b.data.begin(), b.data.end(), 0.0f);
      continue;
    }
    MOE_USER_CHECK(file.exists(name), file.path(), ": buffer ", b.name,
                   " is missing (no dataset ", name, ")");
    const Shape stored = file.dataset_shape(name);
    MOE_USER_CHECK(stored == shape, file.path(), ": buffer ", b.name, " has shape ",
                   stored.str(), " in the file, the model expects ", shape.str());
    file.read(name, b.data.data(), shape);
    ledger.add(name, rank == 0 ? block_checksum(b.data.data(), shape, shape, {}) : 0);
  }
}

void check_optim_shapes(const H5File& file, const ParamStore& store) {
  for (const Param& p : store.params())
    for (int copy = 1; copy < BlockPlan::kCopies; ++copy) {
      const std::string name = tensor_path(p.spec.name, copy);
      MOE_USER_CHECK(file.exists(name), file.path(), ": optimizer state of parameter ",
                     p.spec.name, " is missing (no dataset ", name, ")");
      const Shape stored = file.dataset_shape(name);
      MOE_USER_CHECK(stored == p.spec.shape, file.path(), ": ", name, " has shape ",
                     stored.str(), ", the model expects ", p.spec.shape.str());
    }
}

CheckpointOrigin read_contents(const H5File& file, const CheckpointContent& content,
                               ReadWhat what, const std::string& family, const BlockPlan& plan,
                               Communicator& world) {
  const std::string& path = file.path();
  const bool everything = what == ReadWhat::kEverything;
  const std::string format = check_format(file);
  MOE_USER_CHECK(!everything || format == kCheckpointFormat, path,
                 ": a weights file (format ", format,
                 ") has no optimizer or trainer state to resume from; run.init_from reads it");
  CheckpointOrigin origin = read_origin(file);
  MOE_USER_CHECK(origin.family == family, path, ": holds a ", origin.family,
                 " model, but model.family is ", family);
  check_model_params(file, *content.store);
  if (everything) check_optim_shapes(file, *content.store);

  ChecksumLedger ledger;
  read_tensors(file, content, plan, 0, ledger);
  if (everything) {
    read_tensors(file, content, plan, 1, ledger);
    read_tensors(file, content, plan, 2, ledger);
  }
  read_buffers(file, content, world.rank(), ledger);
  std::vector<uint64_t> expected;
  for (const std::string& name : ledger.datasets())
    expected.push_back(file.uint_attr(name, "checksum"));
  const std::vector<uint64_t> sums = ledger.totals(world);
  for (size_t j = 0; j < sums.size(); ++j)
    MOE_USER_CHECK(sums[j] == expected[j], path, ": dataset ", ledger.datasets()[j],
                   " fails its checksum: the file is corrupted");
  if (everything) {
    *content.trainer = read_trainer_state(file);
    const int64_t optim_step = file.int_attr("/optim", "step");
    MOE_USER_CHECK(optim_step >= 0, path, ": /optim step ", optim_step, " is negative");
    content.optimizer->set_step_count(optim_step);
  }
  return origin;
}

}  // namespace

std::string tensor_path(const std::string& name, int copy) {
  if (copy == 0) return "/model/" + name;
  return "/optim/" + name + (copy == 1 ? "/exp_avg" : "/exp_avg_sq");
}

TrainerState make_trainer_state(const Config& config, int64_t step, int64_t tokens_per_step,
                                double last_lr) {
  TrainerState t;
  t.step = step;
  t.tokens_seen = step * tokens_per_step;
  t.rng_seed = config.train.seed;
  t.rng_counter = step;
  t.data_position = step;
  t.lr_schedule = enum_name(config.optim.schedule);
  t.lr_total_steps = config.train.steps;
  t.lr_warmup_steps = config.optim.warmup_steps;
  t.lr_peak = config.optim.lr;
  t.lr_min = config.optim.min_lr;
  t.lr_decay_fraction = config.optim.decay_fraction;
  t.lr_last = last_lr;
  return t;
}

void write_checkpoint(const std::string& path, const CheckpointContent& content,
                      const CheckpointOrigin& origin, const BlockPlan& plan,
                      Communicator& world, const WriteOptions& options) {
  const bool full = content.optimizer != nullptr && content.trainer != nullptr;
  H5File file = H5File::create(path, world.mpi_comm());
  write_origin(file, origin, full ? kCheckpointFormat : kWeightsFormat);
  ChecksumLedger ledger;
  WriteFailures failures;
  write_tensors(file, content, plan, 0, options.collective, ledger, failures);
  if (options.mid_write) options.mid_write();
  if (full) {
    write_tensors(file, content, plan, 1, options.collective, ledger, failures);
    write_tensors(file, content, plan, 2, options.collective, ledger, failures);
  }
  file.set_collective_transfers(false);  // buffers: rank 0 writes them whole
  write_buffers(file, content, world.rank(), ledger, failures);
  if (const std::string failure = failures.agree(world); !failure.empty()) {
    file.discard();
    throw WriteError(failure);
  }
  const std::vector<uint64_t> sums = ledger.totals(world);
  for (size_t j = 0; j < sums.size(); ++j)
    file.set_uint_attr(ledger.datasets()[j], "checksum", sums[j]);
  if (full) {
    file.set_string_attr("/optim", "algorithm", "adamw");
    file.set_int_attr("/optim", "step", content.optimizer->step_count());
    write_trainer(file, *content.trainer);
  }
  try {
    file.close();  // its failures are agreed over the ranks
  } catch (const Error& e) {
    if (!e.user_error()) throw;
    throw WriteError(e.what());
  }
}

std::string check_format(const H5File& file) {
  const std::string& path = file.path();
  MOE_USER_CHECK(file.has_attr("/", "format"), path,
                 ": not a moe checkpoint (the file has no 'format' attribute)");
  const std::string format = file.string_attr("/", "format");
  MOE_USER_CHECK(format == kCheckpointFormat || format == kWeightsFormat, path,
                 ": not a moe checkpoint (format '", format, "')");
  MOE_USER_CHECK(file.has_attr("/", "format_version"), path, ": no format_version attribute");
  const int64_t version = file.int_attr("/", "format_version");
  MOE_USER_CHECK(version == kCheckpointFormatVersion, path, ": format version ", version,
                 " is not supported (this build reads version ", kCheckpointFormatVersion, ")");
  // Before any other attribute is believed: the config text, the shard annotations,
  // the trainer state and the datasets' checksums.
  file.check_attributes();
  return format;
}

void check_model_params(const H5File& file, const ParamStore& store) {
  const std::string& path = file.path();
  MOE_USER_CHECK(file.exists("/model"), path, ": no group /model");
  std::set<std::string> known;
  for (const Param& p : store.params()) {
    known.insert(p.spec.name);
    const std::string name = tensor_path(p.spec.name, 0);
    MOE_USER_CHECK(file.exists(name), path, ": parameter ", p.spec.name,
                   " is missing (no dataset ", name, "): a checkpoint of another model?");
    const Shape stored = file.dataset_shape(name);
    MOE_USER_CHECK(stored == p.spec.shape, path, ": parameter ", p.spec.name, " has shape ",
                   stored.str(), " in the checkpoint, the model expects ", p.spec.shape.str());
  }
  for (const std::string& name : file.list("/model"))
    MOE_USER_CHECK(known.count(name), path, ": parameter ", name,
                   " is not in the model: a checkpoint of another model?");
}

CheckpointOrigin read_checkpoint(const std::string& path, const CheckpointContent& content,
                                 ReadWhat what, const std::string& family,
                                 const BlockPlan& plan, Communicator& world) {
  const bool everything = what == ReadWhat::kEverything;
  MOE_CHECK(!everything || (content.optimizer && content.trainer),
            "read_checkpoint: everything needs an optimizer and a trainer state");
  H5File file = H5File::open(path, world.mpi_comm());
  file.set_collective_transfers(false);
  // A bad file fails the same check on every rank (they read the same file; checksums
  // are compared after summing over ranks), so the ranks close it together. Any other
  // error may be one rank's: it leaves the file open for the abort (h5_file.h).
  try {
    CheckpointOrigin origin = read_contents(file, content, what, family, plan, world);
    file.close();
    return origin;
  } catch (const Error& e) {
    if (e.user_error()) file.close();
    throw;
  }
}

Config config_for_use(const std::string& ini, const std::vector<std::string>& overrides) {
  std::vector<std::string> all = {"data.train_path=", "data.val_path=", "data.train_labels=",
                                  "data.val_labels=", "run.resume=", "run.init_from="};
  all.insert(all.end(), overrides.begin(), overrides.end());
  return load_config_text(ini, all);
}

}  // namespace moe
