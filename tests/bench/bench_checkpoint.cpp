// bench_checkpoint --dir DIR [--repeats N] --config FILE [--section.key=value ...]
//
// Checkpoint write and read throughput of a config's model in its parallel layout,
// against the raw file-system speed of the same bytes measured in the same run. Run it
// under mpirun for more than one rank (tests/bench/checkpoint_io.sh does both and
// docs/benchmarks.md quotes it). Per repeat, all timed regions start after a barrier
// and end when the last rank is done (the maximum over ranks):
//
//   write     write_checkpoint of weights, exp_avg, exp_avg_sq and router biases: every
//             rank its blocks, collective MPI-IO transfers (independent with
//             --checkpoint.collective_io=false), fsync, rename (what moe-train does)
//   read      read_checkpoint of all of it into the same layout, checksums included,
//             after the file's pages were dropped from the page cache (fadvise)
//   raw_write rank 0 writes the checkpoint's byte count with plain write() calls of
//             8 MiB and fsyncs: the speed of one stream to the same file system (dd)
//   raw_read  rank 0 reads that file back after dropping its pages
//
// MB/s = file bytes / seconds (1 MB = 10^6 bytes); the medians over repeats are
// printed as one JSON line by rank 0.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "framework/checkpoint/checkpoint.h"
#include "framework/config/config.h"
#include "framework/core/timer.h"
#include "framework/moe/dispatcher.h"
#include "framework/parallel/mpi_communicator.h"
#include "framework/parallel/mpi_env.h"
#include "framework/parallel/process_groups.h"
#include "models/registry.h"

namespace moe {
namespace {

namespace fs = std::filesystem;

void drop_cache(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  MOE_CHECK(fd >= 0, "cannot open ", path);
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

double raw_write(const std::string& path, uint64_t bytes) {
  std::vector<char> chunk(8 << 20, 1);
  Stopwatch clock;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  MOE_CHECK(fd >= 0, "cannot create ", path);
  for (uint64_t done = 0; done < bytes;) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), bytes - done));
    const ssize_t w = ::write(fd, chunk.data(), n);
    MOE_CHECK(w > 0, "write to ", path, " failed");
    done += static_cast<uint64_t>(w);
  }
  MOE_CHECK(::fsync(fd) == 0, "fsync of ", path);
  ::close(fd);
  return clock.seconds();
}

double raw_read(const std::string& path) {
  std::vector<char> chunk(8 << 20);
  drop_cache(path);
  Stopwatch clock;
  const int fd = ::open(path.c_str(), O_RDONLY);
  MOE_CHECK(fd >= 0, "cannot open ", path);
  while (::read(fd, chunk.data(), chunk.size()) > 0) {
  }
  ::close(fd);
  return clock.seconds();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The maximum over ranks of this rank's seconds.
double slowest(Communicator& world, double seconds) {
  world.all_reduce<double>({&seconds, 1}, ReduceOp::kMax);
  return seconds;
}

int run(int argc, char** argv, const MpiEnv& mpi) {
  std::string dir;
  int repeats = 3;
  std::vector<const char*> config_args = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.starts_with("--dir=")) dir = arg.substr(6);
    else if (arg.starts_with("--repeats=")) repeats = std::atoi(arg.c_str() + 10);
    else config_args.push_back(argv[i]);
  }
  MOE_USER_CHECK(!dir.empty() && repeats > 0, "usage: bench_checkpoint --dir=DIR [--repeats=N] --config FILE [overrides]");
  const Config c = load_config(static_cast<int>(config_args.size()), config_args.data());
  check_world_size(c.parallel, mpi.size());
  ProcessGroups groups = make_process_groups(mpi, c.parallel);
  auto& world = dynamic_cast<MpiCommunicator&>(*groups.world);
  LocalDispatcher unused;  // the model only registers its parameters here
  const MoeRuntime runtime(MoeRuntimeSpec{
      .dispatcher = &unused,
      .placement = ExpertPlacement{c.moe.num_experts, groups.ep->size(), groups.ep->rank()}});
  ParamStore store;
  std::unique_ptr<Model> model = model_family(c.model.family).make_model(c, store, runtime);
  store.initialize(c.train.seed);
  AdamW optimizer(store, c.optim);
  for (size_t i = 0; i < store.params().size(); ++i) {  // state that is not all zeros
    Tensor m = optimizer.exp_avg(i), v = optimizer.exp_avg_sq(i);
    for (int64_t j = 0; j < m.numel(); ++j) {
      m.data[j] = 1e-3f * store.params()[i].value.data()[j];
      v.data[j] = m.data[j] * m.data[j];
    }
  }
  std::vector<NamedBuffer> buffers;
  const std::vector<int> blocks = model->network().moe_layer_blocks();
  const std::vector<MoELayer*> layers = model->network().moe_layers();
  for (size_t i = 0; i < layers.size(); ++i)
    buffers.push_back({"layers." + std::to_string(blocks[i]) + ".moe.router.bias", layers[i]->bias()});
  TrainerState state = make_trainer_state(c, 1, 1, c.optim.lr);
  const BlockPlan plan(store, world);
  const CheckpointOrigin origin{c.resolved_ini, c.model.family, c.parallel, world.size()};
  if (world.rank() == 0) fs::create_directories(dir);
  world.barrier();
  const std::string path = (fs::path(dir) / "bench.h5").string();
  const std::string raw = (fs::path(dir) / "bench.raw").string();

  std::vector<double> writes, reads, raw_writes, raw_reads;
  uint64_t bytes = 0;
  for (int r = 0; r < repeats; ++r) {
    CheckpointContent content{&store, &optimizer, buffers, &state};
    world.barrier();
    Stopwatch clock;
    WriteOptions options;
    options.collective = c.checkpoint.collective_io;
    write_checkpoint(path, content, origin, plan, world, options);
    writes.push_back(slowest(world, clock.seconds()));
    if (world.rank() == 0) {
      bytes = fs::file_size(path);
      drop_cache(path);
    }
    world.barrier();
    TrainerState back;
    content.trainer = &back;
    clock.reset();
    read_checkpoint(path, content, ReadWhat::kEverything, c.model.family, plan, world);
    reads.push_back(slowest(world, clock.seconds()));
    if (world.rank() == 0) {
      raw_writes.push_back(raw_write(raw, bytes));
      raw_reads.push_back(raw_read(raw));
    }
    world.barrier();
  }
  if (world.rank() == 0) {
    fs::remove(path);
    fs::remove(raw);
    const double mb = static_cast<double>(bytes) / 1e6;
    const double w = median(writes), rd = median(reads), rw = median(raw_writes),
                 rr = median(raw_reads);
    std::cout << nlohmann::json{{"ranks", world.size()},
                                {"dp", c.parallel.dp},
                                {"ep", c.parallel.ep},
                                {"collective_io", c.checkpoint.collective_io},
                                {"bytes", bytes},
                                {"repeats", repeats},
                                {"write_s", w},
                                {"read_s", rd},
                                {"raw_write_s", rw},
                                {"raw_read_s", rr},
                                {"write_MBps", mb / w},
                                {"read_MBps", mb / rd},
                                {"raw_write_MBps", mb / rw},
                                {"raw_read_MBps", mb / rr},
                                {"write_vs_raw", rw / w},
                                {"read_vs_raw", rr / rd},
                                {"write_s_all", writes},
                                {"raw_write_s_all", raw_writes}}
                     .dump()
              << std::endl;
  }
  return 0;
}

}  // namespace
}  // namespace moe

int main(int argc, char** argv) {
  moe::MpiEnv mpi(&argc, &argv);
  try {
    return moe::run(argc, argv, mpi);
  } catch (const moe::Error& e) {
    std::cerr << "bench_checkpoint: " << e.what() << "\n";
    mpi.abort(e.user_error() ? 2 : 1);
  }
}
