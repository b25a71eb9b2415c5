#pragma once
// Watchdog: a rank that waits longer than parallel.timeout_s in one collective ends the
// job with exit status 4 and one line naming the collective (kind, group, step, MoE
// layer) and the ranks it waits for, instead of hanging silently.
//
// It observes every call of the communicators it watches (communicator.h,
// CollectiveObserver): what this rank is doing - the call's kind, its group, the
// group's call count, the step and MoE layer announced - sits in this rank's slot of a
// shared-memory window that every rank of the node maps (MPI_Win_allocate_shared). A
// thread wakes every half second, refreshes the slot's heartbeat and, once the current
// call has lasted longer than the timeout, reads the slots of the group's ranks on
// this node and names those not in the same call (same group, same call count: the
// ranks of a group make the same calls in the same order):
//
//   not responding   heartbeat older than 3 s: the process is stopped or gone
//   computing        outside every collective (since how long)
//   waiting in ...   inside another call (a mismatch, or a chain of waits)
//
// Ranks on other nodes are out of sight of the shared memory and listed as such: MPI
// cannot tell what they do without their help. The thread then prints the line and
// calls MPI_Abort(4), which ends every rank. Of the ranks of a node that time out, the
// first one reports; the others (which wait for the same stuck rank, or are the stuck
// rank woken by the abort) end quietly.
//
// The observer is the backend-independent part: an NCCL communicator, whose calls
// return before the device finishes, enters the watch when it launches a call and
// leaves it once the call has completed on the device.

#include <mpi.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "framework/parallel/communicator.h"

namespace moe {

// What one rank is doing, as its watchdog publishes it (all fields int64 so that they
// can be read and written as atomics in shared memory).
struct WatchSlot {
  int64_t world_rank = -1;
  int64_t heartbeat_ms = 0;  // steady clock (shared by the processes of a node)
  int64_t in_call = 0;       // 1 inside a collective
  int64_t group = -1;        // index into kWatchGroups
  int64_t call = 0;          // the group's call count at this call
  int64_t kind = -1;         // index into kWatchKinds
  int64_t since_ms = 0;      // entered the call, or left the last one
  int64_t step = -1;         // 1-based step of the trainer, -1 before the first
  int64_t layer = -1;        // MoE layer (block index) inside a layer, else -1
  int64_t reporter = -1;     // node leader's slot: the first rank of the node to report
};

// How a peer of a waiting rank relates to the waiting rank's call: the pure part of the
// report (unit-tested without MPI).
std::string describe_peer(const WatchSlot& mine, const WatchSlot* peer, int64_t now_ms,
                          int peer_world_rank);

class Watchdog final : public CollectiveObserver {
 public:
  // Collective over MPI_COMM_WORLD. timeout_s = 0: observes nothing, starts no thread.
  Watchdog(int timeout_s, int world_rank);
  ~Watchdog() override;  // collective (frees the shared window)
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Observes `comm` (an MPI communicator), named `group` in messages: "dp", "ep", ...
  void watch(Communicator& comm, const std::string& group);
  void set_step(int64_t step);
  // Announces the MoE layer of block `layer` (-1: none) for the messages.
  void set_layer(int64_t layer);

  void enter(const Communicator& comm, const char* kind) override;
  void leave() override;

 private:
  struct Group {
    int64_t label = -1;            // index into kWatchGroups
    std::vector<int> world_ranks;  // of the members, by group rank
    int64_t calls = 0;
  };
  void run_thread();
  void report_and_abort(int64_t now_ms);

  int timeout_ms_;
  int world_rank_;
  MPI_Comm node_ = MPI_COMM_NULL;
  MPI_Win window_ = MPI_WIN_NULL;
  std::unordered_map<int, WatchSlot*> by_world_rank_;  // the slots of this node's ranks
  WatchSlot* leader_ = nullptr;  // the slot of the node's lowest world rank
  WatchSlot* mine_ = nullptr;
  std::unordered_map<const Communicator*, Group> groups_;
  std::atomic<const Group*> current_{nullptr};  // the group of the latest call
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread thread_;
};

// RAII: the MoE layer of block `layer` runs its collectives (for the watchdog's
// messages); nothing when `comm` has no watchdog.
class WatchedLayer {
 public:
  WatchedLayer(const Communicator* comm, int64_t layer);
  ~WatchedLayer();
  WatchedLayer(const WatchedLayer&) = delete;
  WatchedLayer& operator=(const WatchedLayer&) = delete;

 private:
  Watchdog* watchdog_ = nullptr;
};

}  // namespace moe
