#include "framework/train/preflight.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <limits>
#include <sstream>

#include "framework/checkpoint/checkpoint_dir.h"
#include "framework/core/error.h"

namespace moe {
namespace fs = std::filesystem;

namespace {

constexpr double kUnlimited = std::numeric_limits<double>::infinity();

// A "<key>: <n> kB" line of /proc/meminfo or /proc/self/status, in bytes (-1: absent).
double proc_kib_field(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (line.starts_with(key + ":")) return std::stod(line.substr(key.size() + 1)) * 1024.0;
  return -1.0;
}

// A number in a cgroup file ("max" or absent: unlimited).
double cgroup_value(const fs::path& file) {
  std::ifstream in(file);
  std::string text;
  if (!(in >> text) || text == "max") return kUnlimited;
  return std::stod(text);
}

// What the cgroup (v2) of this process still allows, for all its processes together.
double cgroup_remaining() {
  std::ifstream in("/proc/self/cgroup");
  std::string line, path;
  while (std::getline(in, line))
    if (line.starts_with("0::")) path = line.substr(3);
  double remaining = kUnlimited;
  // The limit may sit on any ancestor; inside a container the namespace root is "/".
  for (fs::path dir = fs::path("/sys/fs/cgroup") / fs::path(path).relative_path();;
       dir = dir.parent_path()) {
    const double limit = cgroup_value(dir / "memory.max");
    if (limit != kUnlimited) {
      const double used = cgroup_value(dir / "memory.current");
      remaining = std::min(remaining, limit - (used == kUnlimited ? 0.0 : used));
    }
    if (dir == "/sys/fs/cgroup" || !dir.has_relative_path()) break;
  }
  return remaining;
}

double rlimit_remaining() {
  struct rlimit limit = {};
  if (::getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return kUnlimited;
  const double mapped = std::max(0.0, proc_kib_field("/proc/self/status", "VmSize"));
  return static_cast<double>(limit.rlim_cur) - mapped;
}

// One file created and removed in `dir`, as this rank.
void check_writable(const std::string& dir, const char* key, int rank) {
  char host[256] = {};
  ::gethostname(host, sizeof(host) - 1);
  const std::string probe = (fs::path(dir) / (".probe-" + std::to_string(::getpid()))).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  const bool wrote = fd >= 0 && ::write(fd, "x", 1) == 1;
  const int error = errno;
  if (fd >= 0) ::close(fd);
  ::unlink(probe.c_str());
  MOE_USER_CHECK(wrote, key, ": '", dir, "' is not writable on rank ", rank, " (host ", host,
                 "): ", std::strerror(error));
}

}  // namespace

std::string gibibytes(double bytes) {
  std::ostringstream os;
  if (bytes < (1 << 30)) os << std::fixed << std::setprecision(1) << bytes / (1 << 20) << " MiB";
  else os << std::fixed << std::setprecision(1) << bytes / (1 << 30) << " GiB";
  return os.str();
}

double checkpoint_bytes(int64_t total_params) {
  // measured: 12.8 bytes per parameter for the tiny model (64 tensors), less for larger
  return 12.0 * static_cast<double>(total_params) * 1.02 + (256 << 10);
}

double free_bytes(const std::string& dir) {
  struct statvfs st = {};
  if (::statvfs(dir.c_str(), &st) != 0) return kUnlimited;  // unknown: not refused here
  return static_cast<double>(st.f_bavail) * static_cast<double>(st.f_frsize);
}

int usable_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN));
  return std::max(1, CPU_COUNT(&set));
}

MemoryEstimate estimate_memory(const Config& c, int64_t local_params, int64_t tokens_per_sample,
                               int threads) {
  const ModelConfig& m = c.model;
  const MoeConfig& e = c.moe;
  const double C = m.d_model, T = static_cast<double>(tokens_per_sample);
  // floats per token and layer: attention (inputs, q, k, v, outputs, norms; scores and
  // probabilities over T), then the wider FFN (inputs, hidden, gate, products)
  const double attention = 12.0 * C + 2.0 * m.num_heads * T;
  const double dense = 4.0 * m.dense_ffn + 2.0 * C;
  const double moe = e.top_k * (4.0 * e.expert_ffn + 3.0 * C) +
                     4.0 * e.num_shared * e.shared_ffn + 3.0 * e.num_experts;
  const double per_token = m.num_layers * (attention + std::max(dense, moe)) +
                           3.0 * std::max(m.vocab_size, m.num_classes) + 4.0 * C;
  const double rows = static_cast<double>(c.data.batch_size) / c.parallel.dp * T;
  MemoryEstimate est;
  est.state_bytes = 16.0 * static_cast<double>(local_params);
  est.activation_bytes = 4.0 * rows * per_token;
  est.reserve_bytes = (256.0 + 64.0 * threads) * (1 << 20);
  return est;
}

double available_memory(int ranks_on_node) {
  const double ranks = std::max(1, ranks_on_node);
  double available = kUnlimited;
  const double meminfo = proc_kib_field("/proc/meminfo", "MemAvailable");
  if (meminfo >= 0) available = meminfo / ranks;
  available = std::min(available, cgroup_remaining() / ranks);
  return std::min(available, rlimit_remaining());
}

void check_threads(int threads) {
  const int cores = usable_cores();
  MOE_USER_CHECK(threads <= cores, "train.threads: ", threads, " is more than the ", cores,
                 " cores this rank may run on; use at most ", cores,
                 " (0 = the cores of the rank)");
}

void check_memory(const MemoryEstimate& est, int ranks_on_node) {
  // The parameters and their gradients are allocated already: what is left to allocate
  // must fit in what is left.
  const double still_needed = est.total() - est.state_bytes / 2;
  const double available = available_memory(ranks_on_node);
  MOE_USER_CHECK(still_needed <= available, "memory: this run needs about ",
                 gibibytes(est.total()), " per rank (parameters, gradients and AdamW state ",
                 gibibytes(est.state_bytes), ", activations ", gibibytes(est.activation_bytes),
                 ", runtime ", gibibytes(est.reserve_bytes), "; ", ranks_on_node,
                 " rank(s) on this node), but only ", gibibytes(available + est.state_bytes / 2),
                 " are available to it; reduce data.batch_size, model.seq_len or the model, "
                 "or use more ranks");
}

void check_device_memory(const MemoryEstimate& est, double free_bytes) {
  const double still_needed = est.total() - est.state_bytes / 2;  // as check_memory
  MOE_USER_CHECK(still_needed <= free_bytes, "memory: this run needs about ",
                 gibibytes(est.total()), " of GPU memory per rank (parameters, gradients and "
                 "AdamW state ", gibibytes(est.state_bytes), ", activations ",
                 gibibytes(est.activation_bytes), ", runtime ", gibibytes(est.reserve_bytes),
                 "), but the GPU has ", gibibytes(free_bytes + est.state_bytes / 2),
                 " for it; reduce data.batch_size, model.seq_len or the model, or use more "
                 "ranks");
}

void check_directories(const Config& config, Communicator& world, int64_t total_params) {
  const std::string checkpoints = checkpoint_dir_of(config);
  check_writable(config.run.dir, "run.dir", world.rank());
  check_writable(checkpoints, config.checkpoint.dir.empty() ? "run.dir" : "checkpoint.dir",
                 world.rank());
  const double need = checkpoint_bytes(total_params), have = free_bytes(checkpoints);
  MOE_USER_CHECK(have >= need, config.checkpoint.dir.empty() ? "run.dir" : "checkpoint.dir",
                 ": '", checkpoints, "' has ", gibibytes(have), " free on rank ", world.rank(),
                 ", a checkpoint of ", total_params, " parameters needs about ",
                 gibibytes(need));
  world.barrier();  // every rank passed before any writes
}

}  // namespace moe
