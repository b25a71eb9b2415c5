#include "framework/parallel/watchdog.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "framework/core/exit_status.h"
#include "framework/parallel/mpi_env.h"

namespace moe {
namespace {

constexpr const char* kWatchGroups[] = {"world", "dp",       "tp",       "ep",   "edp",
                                        "etp",   "ep.intra", "ep.inter", "group"};
constexpr const char* kWatchKinds[] = {"all_reduce", "all_gather", "reduce_scatter",
                                       "all_to_all_v", "all_to_all", "broadcast",
                                       "send",       "recv",       "barrier"};
constexpr int64_t kStaleMs = 3000;  // a heartbeat this old: the process does not run
constexpr int64_t kTickMs = 500;

template <size_t N>
int64_t index_of(const char* const (&table)[N], const std::string& name) {
  for (size_t i = 0; i < N; ++i)
    if (name == table[i]) return static_cast<int64_t>(i);
  return static_cast<int64_t>(N) - 1;
}

template <size_t N>
const char* name_of(const char* const (&table)[N], int64_t index) {
  return index >= 0 && index < static_cast<int64_t>(N) ? table[index] : "?";
}

// Slots are shared with other processes: every access is atomic.
void put(int64_t& field, int64_t value) {
  std::atomic_ref<int64_t>(field).store(value, std::memory_order_release);
}
int64_t get(const int64_t& field) {
  return std::atomic_ref<int64_t>(const_cast<int64_t&>(field)).load(std::memory_order_acquire);
}

WatchSlot snapshot(const WatchSlot& s) {
  WatchSlot copy;
  copy.world_rank = get(s.world_rank);
  copy.heartbeat_ms = get(s.heartbeat_ms);
  copy.in_call = get(s.in_call);
  copy.group = get(s.group);
  copy.call = get(s.call);
  copy.kind = get(s.kind);
  copy.since_ms = get(s.since_ms);
  copy.step = get(s.step);
  copy.layer = get(s.layer);
  return copy;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string seconds(int64_t ms) {
  std::ostringstream os;
  os << std::fixed << std::setprecision(1) << static_cast<double>(ms) / 1000.0 << " s";
  return os.str();
}

std::string where(const WatchSlot& s) {
  std::ostringstream out;
  if (s.step >= 0) out << ", step " << s.step;
  if (s.layer >= 0) out << ", MoE layer " << s.layer;
  return out.str();
}

// "4-7, 9" from ascending ranks.
std::string rank_ranges(const std::vector<int>& ranks) {
  std::ostringstream out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    out << (i > 0 ? ", " : "") << ranks[i];
    if (j > i) out << "-" << ranks[j];
    i = j + 1;
  }
  return out.str();
}

}  // namespace

std::string describe_peer(const WatchSlot& mine, const WatchSlot* peer, int64_t now,
                          int peer_world_rank) {
  if (peer == nullptr) return "";
  const bool same_call = peer->in_call && peer->group == mine.group && peer->call == mine.call;
  const bool stale = now - peer->heartbeat_ms > kStaleMs;
  if (same_call && !stale) return "";
  std::ostringstream out;
  out << "rank " << peer_world_rank;
  if (stale)
    out << " (not responding for " << seconds(now - peer->heartbeat_ms) << ": stopped or gone";
  else if (peer->in_call)
    out << " (waiting in " << name_of(kWatchKinds, peer->kind) << " over "
        << name_of(kWatchGroups, peer->group) << " for " << seconds(now - peer->since_ms);
  else
    out << " (computing for " << seconds(now - peer->since_ms);
  out << where(*peer) << ")";
  return out.str();
}

Watchdog::Watchdog(int timeout_s, int world_rank)
    : timeout_ms_(timeout_s * 1000), world_rank_(world_rank) {
  if (timeout_s <= 0) return;
  MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL,
                                &node_));
  int local = 0, locals = 1;
  MPI_CHECK(MPI_Comm_rank(node_, &local));
  MPI_CHECK(MPI_Comm_size(node_, &locals));
  void* base = nullptr;
  MPI_CHECK(MPI_Win_allocate_shared(sizeof(WatchSlot), sizeof(WatchSlot), MPI_INFO_NULL, node_,
                                    &base, &window_));
  mine_ = new (base) WatchSlot;
  put(mine_->world_rank, world_rank);
  put(mine_->heartbeat_ms, now_ms());
  put(mine_->since_ms, now_ms());
  std::vector<int> world_ranks(static_cast<size_t>(locals));
  MPI_CHECK(MPI_Allgather(&world_rank_, 1, MPI_INT, world_ranks.data(), 1, MPI_INT, node_));
  for (int r = 0; r < locals; ++r) {
    MPI_Aint size = 0;
    int unit = 0;
    void* slot = nullptr;
    MPI_CHECK(MPI_Win_shared_query(window_, r, &size, &unit, &slot));
    by_world_rank_[world_ranks[r]] = static_cast<WatchSlot*>(slot);
    if (r == 0) leader_ = static_cast<WatchSlot*>(slot);  // key = world rank: the lowest
  }
  MPI_CHECK(MPI_Barrier(node_));  // every slot initialised before anyone reads it
  thread_ = std::thread([this] { run_thread(); });
}

Watchdog::~Watchdog() {
  if (thread_.joinable()) {
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  // Freeing the window is collective: not while an exception unwinds (the other ranks
  // may be anywhere; the job is about to be aborted and the memory goes with it).
  if (std::uncaught_exceptions() > 0) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (window_ != MPI_WIN_NULL) MPI_Win_free(&window_);
  if (node_ != MPI_COMM_NULL) MPI_Comm_free(&node_);
}

void Watchdog::watch(Communicator& comm, const std::string& group) {
  if (timeout_ms_ <= 0) return;
  comm.set_observer(this);
  Group& g = groups_[&comm];
  g.label = index_of(kWatchGroups, group);
}

void Watchdog::set_step(int64_t step) {
  if (mine_ != nullptr) put(mine_->step, step);
}

void Watchdog::set_layer(int64_t layer) {
  if (mine_ != nullptr) put(mine_->layer, layer);
}

void Watchdog::enter(const Communicator& comm, const char* kind) {
  if (mine_ == nullptr) return;
  Group& g = groups_[&comm];
  if (g.label < 0) g.label = index_of(kWatchGroups, "group");  // split from a watched one
  if (g.world_ranks.empty()) {
    // The members' world ranks, once per communicator (MPI can translate them locally).
    g.world_ranks.resize(static_cast<size_t>(comm.size()));
    {
      MPI_Group mine_group, world_group;
      MPI_Comm_group(comm.mpi_comm(), &mine_group);
      MPI_Comm_group(MPI_COMM_WORLD, &world_group);
      std::vector<int> ranks(g.world_ranks.size());
      for (size_t r = 0; r < ranks.size(); ++r) ranks[r] = static_cast<int>(r);
      MPI_Group_translate_ranks(mine_group, comm.size(), ranks.data(), world_group,
                                g.world_ranks.data());
      MPI_Group_free(&mine_group);
      MPI_Group_free(&world_group);
    }
  }
  ++g.calls;
  current_.store(&g, std::memory_order_release);
  put(mine_->group, g.label);
  put(mine_->call, g.calls);
  put(mine_->kind, index_of(kWatchKinds, kind));
  put(mine_->since_ms, now_ms());
  put(mine_->in_call, 1);
}

void Watchdog::leave() {
  if (mine_ == nullptr) return;
  put(mine_->in_call, 0);
  put(mine_->since_ms, now_ms());
}

void Watchdog::run_thread() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!wake_.wait_for(lock, std::chrono::milliseconds(kTickMs), [&] { return stopping_; })) {
    const int64_t now = now_ms();
    put(mine_->heartbeat_ms, now);
    if (get(mine_->in_call) && now - get(mine_->since_ms) > timeout_ms_) report_and_abort(now);
  }
}

void Watchdog::report_and_abort(int64_t now) {
  int64_t nobody = -1;
  if (!std::atomic_ref<int64_t>(leader_->reporter).compare_exchange_strong(nobody, world_rank_))
    MPI_Abort(MPI_COMM_WORLD, kExitTimeout);  // another rank of this node reports
  const WatchSlot me = snapshot(*mine_);
  const Group* group = current_.load(std::memory_order_acquire);
  std::vector<std::string> waits_for;
  std::vector<int> remote;
  for (int rank : group != nullptr ? group->world_ranks : std::vector<int>{}) {
    if (rank == world_rank_) continue;
    const auto it = by_world_rank_.find(rank);
    if (it == by_world_rank_.end()) {
      remote.push_back(rank);
      continue;
    }
    const WatchSlot peer = snapshot(*it->second);
    if (std::string d = describe_peer(me, &peer, now, rank); !d.empty()) waits_for.push_back(d);
  }
  std::ostringstream line;
  line << "[rank " << world_rank_ << "] watchdog: waited " << seconds(now - me.since_ms)
       << " in " << name_of(kWatchKinds, me.kind) << " over "
       << name_of(kWatchGroups, me.group) << " (call " << me.call << where(me)
       << "; parallel.timeout_s = " << timeout_ms_ / 1000 << "); ";
  if (!waits_for.empty()) {
    line << "waiting for ";
    for (size_t i = 0; i < waits_for.size(); ++i) line << (i ? ", " : "") << waits_for[i];
  } else if (remote.empty()) {
    line << "every rank of the group on this node is in the same call";
  }
  if (!remote.empty())
    line << (waits_for.empty() ? "" : "; ") << "ranks " << rank_ranges(remote)
         << " of the group are on other nodes (not visible from here)";
  line << "; ending the job (exit " << kExitTimeout << ")";
  std::cerr << line.str() << std::endl;
  MPI_Abort(MPI_COMM_WORLD, kExitTimeout);
}

WatchedLayer::WatchedLayer(const Communicator* comm, int64_t layer) {
  if (comm != nullptr) watchdog_ = dynamic_cast<Watchdog*>(comm->observer());
  if (watchdog_ != nullptr) watchdog_->set_layer(layer);
}

WatchedLayer::~WatchedLayer() {
  if (watchdog_ != nullptr) watchdog_->set_layer(-1);
}

}  // namespace moe
