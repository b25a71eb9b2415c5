#pragma once
// Pre-flight: what must hold before step 0, so that a run does not fail hours later
// (docs/failure-behaviour.md). Each failure is a user error (exit 2) naming what is
// short and by how much:
//
//   threads    train.threads is at most the cores this rank may run on (more threads
//              than cores only spin, and OpenBLAS reserves a buffer per thread)
//   memory     parameters, gradients and AdamW state (16 bytes per local parameter)
//              plus an activation estimate plus a fixed runtime reserve, times the
//              ranks of the node, fit in what the node offers: MemAvailable, the cgroup
//              limit and RLIMIT_AS, whichever is smallest
//   writable   run.dir and the checkpoint directory accept a new file on every rank
//   space      the checkpoint directory has room for one checkpoint (12 bytes per
//              parameter: weights and two AdamW moments, plus metadata)
//
// The activation estimate is deliberately generous (an upper bound for the three
// families): per token of a rank's batch, each layer's attention inputs, outputs and
// scores, the wider of its dense and MoE FFN activations, and the logits.

#include <cstdint>
#include <string>

#include "framework/config/config.h"
#include "framework/parallel/communicator.h"

namespace moe {

struct MemoryEstimate {
  double state_bytes = 0;       // parameters, gradients, AdamW moments
  double activation_bytes = 0;  // forward caches and backward scratch, one step
  double reserve_bytes = 0;     // runtime, BLAS buffers, data
  double total() const { return state_bytes + activation_bytes + reserve_bytes; }
};

// Bytes one rank needs: `local_params` parameters, rows of `tokens_per_sample` tokens.
MemoryEstimate estimate_memory(const Config& config, int64_t local_params,
                               int64_t tokens_per_sample, int threads);
// Bytes this process may still use: MemAvailable / `ranks_on_node`, the cgroup's
// remaining limit / `ranks_on_node`, and RLIMIT_AS less what is mapped already.
double available_memory(int ranks_on_node);
// The cores this process may run on (its CPU affinity mask).
int usable_cores();

// Refuses a train.threads above usable_cores().
void check_threads(int threads);
// Refuses an estimate above available_memory().
void check_memory(const MemoryEstimate& estimate, int ranks_on_node);
// run.device = cuda, where the model lives on the GPU: refuses an estimate above
// `free_bytes`, what is still free on the rank's GPU (its parameters and gradients are
// allocated already).
void check_device_memory(const MemoryEstimate& estimate, double free_bytes);
// Collective over `world`: every rank creates and removes a file in run.dir and in the
// checkpoint directory; each checks the free space of the checkpoint directory for a
// checkpoint of `total_params` parameters. The directories must exist.
void check_directories(const Config& config, Communicator& world, int64_t total_params);

// Bytes of a checkpoint of `total_params` parameters, with metadata.
double checkpoint_bytes(int64_t total_params);
// Free bytes of the file system holding `dir` (for an unprivileged user).
double free_bytes(const std::string& dir);
// "12.3 GiB", or "512.0 MiB" below one GiB
std::string gibibytes(double bytes);

}  // namespace moe
