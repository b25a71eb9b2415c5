#pragma once
// Communicator: the one interface every collective of the framework goes through
// (DESIGN.md decision 5). A communicator spans one process group (world, dp, tp, ep,
// edp, etp, ...); ranks are numbered 0..size()-1 within the group.
//
// Typed spans in, typed spans out; counts are in elements, not bytes. Buffers are
// host memory for the MPI backend (an NCCL backend for device memory implements the
// same interface). Every call is collective over the group unless it says otherwise,
// and every failure throws moe::Error naming the call.
//
//   all_reduce(data, op)                 data <- op over ranks of data (in place)
//   all_gather(send, recv)               recv = concat over ranks r of send_r
//                                        (recv.size() == size() * send.size())
//   reduce_scatter(send, recv, op)       recv = block rank() of op over ranks of send
//                                        (send.size() == size() * recv.size())
//   all_to_all_v(send, send_counts, recv, recv_counts)
//                                        send holds size() packed blocks, block d of
//                                        send_counts[d] elements goes to rank d; recv
//                                        gets block s of recv_counts[s] from rank s,
//                                        packed in rank order. Both count arrays have
//                                        size() entries >= 0 and the spans hold exactly
//                                        their sums; recv_counts[s] must equal rank s's
//                                        send_counts[rank()] (not checked: it would cost
//                                        a message)
//   all_to_all_blocks(send, send_blocks, recv, recv_blocks)
//                                        all_to_all_v with each peer's data in blocks
//                                        anywhere in the buffers: send_blocks[d] lists
//                                        the blocks (CommBlock: offset, count in
//                                        elements) for rank d, recv_blocks[s] where the
//                                        blocks from rank s go, block j of one side
//                                        filling block j of the other (equal counts:
//                                        not checked across ranks, a message). Both
//                                        lists have size() entries. It lets a receiver
//                                        place rows straight into their final layout
//                                        (the expert-major rows of a dispatch), with no
//                                        staging copy
//   all_to_all(send, recv)               the equal-block case (block = send.size()/size())
//   all_gather_v(send, recv, counts)     recv = concat over ranks r of send_r, where
//                                        send_r holds counts[r] elements (counts has
//                                        size() entries, the same on every rank)
//   reduce_scatter_v(send, counts, recv, op)
//                                        send holds size() packed blocks, block r of
//                                        counts[r] elements; recv (counts[rank()]) = op
//                                        over ranks of their block rank(), combined in
//                                        rank order 0, 1, ... (the same rounding on every
//                                        layout: deterministic)
//   broadcast(data, root)                data <- root's data
//   send(data, peer, tag) / recv(data, peer, tag)   point to point, blocking
//   barrier()
//
// stats() counts what this communicator moved: bytes this rank sent to other ranks
// and the seconds spent inside calls (including waiting for slower ranks). Telemetry
// reads and resets it (`stats() = {}`) per logging interval. Where the algorithm is
// the library's choice, bytes_sent is the per-rank share of a bandwidth-optimal
// algorithm, so it does not depend on the backend; with n = size(), B = bytes of
// `data`/`send`/`recv` as named:
//
//   all_reduce       2 (n-1)/n B     ring: reduce-scatter then all-gather
//   all_gather       (n-1)/n B_recv  = (n-1) B_send: every other rank gets my block
//   reduce_scatter   (n-1)/n B_send  = (n-1) B_recv
//   broadcast        (n-1)/n B       on every rank: the n-1 copies the job must move,
//                                    shared evenly (a pipelined chain sends B per hop)
//   all_to_all(_v)   exact: the blocks for ranks d != rank(); my own block stays
//   all_to_all_blocks   the same; the MPI backend sends one message per non-empty block
//   all_gather_v     exact: my block to each of the n-1 other ranks
//   reduce_scatter_v exact: block d of send to each rank d != rank()
//   send / recv      B on the sender, 0 on the receiver
//   barrier          0
//
// n = 1 moves nothing. Integer division rounds each estimate down.
//
// Observer: every call above passes through the communicator's CollectiveObserver when
// one is set (the watchdog, framework/parallel/watchdog.h): enter() before the backend
// starts the call, leave() when it has returned. Backends guard barrier() themselves.
//
// Link classes: when the communicator knows the node of each of its ranks
// (set_peer_nodes), every byte and message is also counted as intra-node or
// inter-node. all_to_all(_v), all_gather_v, reduce_scatter_v, send and recv count each
// non-empty block to a peer as one message on the link to that peer. The other collectives follow the ring their
// byte estimate assumes: everything this rank sends goes to its successor
// (rank() + 1) % size(), in 2 (n-1) messages for all_reduce, n-1 for all_gather and
// reduce_scatter and 1 for broadcast. Without node information every link is
// intra-node.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include <mpi.h>

#include "framework/core/dtype.h"

namespace moe {

enum class ReduceOp : uint8_t { kSum, kMax, kMin };

// kBFloat16: bf16 rows moved, never reduced (no backend sums bf16).
enum class CommType : uint8_t { kFloat32, kFloat64, kInt32, kInt64, kUint8, kBFloat16 };

template <typename T>
constexpr CommType comm_type_of() {
  if constexpr (std::is_same_v<T, float>) return CommType::kFloat32;
  else if constexpr (std::is_same_v<T, double>) return CommType::kFloat64;
  else if constexpr (std::is_same_v<T, int32_t>) return CommType::kInt32;
  else if constexpr (std::is_same_v<T, int64_t>) return CommType::kInt64;
  else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, char>)
    return CommType::kUint8;
  else if constexpr (std::is_same_v<T, bf16>) return CommType::kBFloat16;
  else static_assert(sizeof(T) == 0, "unsupported element type for a collective");
}

size_t comm_type_size(CommType type);

class Communicator;

// One block of an all_to_all_blocks exchange: `count` elements from element `offset`.
struct CommBlock {
  int64_t offset = 0, count = 0;
};

// Sees every collective of the communicators it is set on (set_observer).
class CollectiveObserver {
 public:
  virtual ~CollectiveObserver() = default;
  // `kind` is a string literal: "all_reduce", "all_to_all_v", "barrier", ...
  virtual void enter(const Communicator& comm, const char* kind) = 0;
  virtual void leave() = 0;
};

struct CommStats {
  int64_t bytes_sent = 0;  // payload this rank sent to other ranks
  double seconds = 0.0;    // wall time inside collective calls
  int64_t calls = 0;
  // bytes_sent split by link class (intra + inter == bytes_sent), and the messages
  // carrying them (the convention above)
  int64_t intra_node_bytes = 0, inter_node_bytes = 0;
  int64_t intra_node_messages = 0, inter_node_messages = 0;

  CommStats& operator+=(const CommStats& other);
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // The MPI communicator of the same ranks, for host-side libraries that take one
  // (parallel HDF5's MPI-IO). Every backend has one: MPI stays the start-up, control
  // and host I/O transport (a device backend is bootstrapped from it).
  virtual MPI_Comm mpi_comm() const = 0;

  template <typename T>
  void all_reduce(std::span<T> data, ReduceOp op = ReduceOp::kSum) {
    static_assert(!std::is_same_v<T, bf16>, "reductions run in fp32");
    const Observed call(*this, "all_reduce");
    all_reduce_raw(data.data(), static_cast<int64_t>(data.size()), comm_type_of<T>(), op);
  }
  template <typename T>
  void all_gather(std::span<const T> send, std::span<T> recv) {
    check_blocks("all_gather", "send", send.size(), "recv", recv.size());
    const Observed call(*this, "all_gather");
    all_gather_raw(send.data(), static_cast<int64_t>(send.size()), recv.data(),
                   comm_type_of<T>());
  }
  template <typename T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv,
                      ReduceOp op = ReduceOp::kSum) {
    check_blocks("reduce_scatter", "recv", recv.size(), "send", send.size());
    const Observed call(*this, "reduce_scatter");
    reduce_scatter_raw(send.data(), recv.data(), static_cast<int64_t>(recv.size()),
                       comm_type_of<T>(), op);
  }
  template <typename T>
  void all_to_all_v(std::span<const T> send, std::span<const int64_t> send_counts,
                    std::span<T> recv, std::span<const int64_t> recv_counts) {
    check_all_to_all_v(send.size(), send_counts, recv.size(), recv_counts);
    const Observed call(*this, "all_to_all_v");
    all_to_all_v_raw(send.data(), send_counts.data(), recv.data(), recv_counts.data(),
                     comm_type_of<T>());
  }
  template <typename T>
  void all_to_all_blocks(std::span<const T> send,
                         std::span<const std::vector<CommBlock>> send_blocks, std::span<T> recv,
                         std::span<const std::vector<CommBlock>> recv_blocks) {
    check_all_to_all_blocks(send.size(), send_blocks, recv.size(), recv_blocks);
    const Observed call(*this, "all_to_all_blocks");
    all_to_all_blocks_raw(send.data(), send_blocks.data(), recv.data(), recv_blocks.data(),
                          comm_type_of<T>());
  }
  template <typename T>
  void all_to_all(std::span<const T> send, std::span<T> recv) {
    check_all_to_all(send.size(), recv.size());
    const Observed call(*this, "all_to_all");
    all_to_all_raw(send.data(), recv.data(), static_cast<int64_t>(send.size()) / size(),
                   comm_type_of<T>());
  }
  template <typename T>
  void all_gather_v(std::span<const T> send, std::span<T> recv,
                    std::span<const int64_t> counts) {
    check_variable_blocks("all_gather_v", counts, send.size(), recv.size());
    const Observed call(*this, "all_gather_v");
    all_gather_v_raw(send.data(), recv.data(), counts.data(), comm_type_of<T>());
  }
  template <typename T>
  void reduce_scatter_v(std::span<const T> send, std::span<const int64_t> counts,
                        std::span<T> recv, ReduceOp op = ReduceOp::kSum) {
    check_variable_blocks("reduce_scatter_v", counts, recv.size(), send.size());
    const Observed call(*this, "reduce_scatter_v");
    reduce_scatter_v_raw(send.data(), counts.data(), recv.data(), comm_type_of<T>(), op);
  }
  template <typename T>
  void broadcast(std::span<T> data, int root) {
    const Observed call(*this, "broadcast");
    broadcast_raw(data.data(), static_cast<int64_t>(data.size()), comm_type_of<T>(), root);
  }
  template <typename T>
  void send(std::span<const T> data, int peer, int tag = 0) {
    const Observed call(*this, "send");
    send_raw(data.data(), static_cast<int64_t>(data.size()), comm_type_of<T>(), peer, tag);
  }
  template <typename T>
  void recv(std::span<T> data, int peer, int tag = 0) {
    const Observed call(*this, "recv");
    recv_raw(data.data(), static_cast<int64_t>(data.size()), comm_type_of<T>(), peer, tag);
  }
  virtual void barrier() = 0;

  // The ranks that pass the same `color` (>= 0), numbered by `key` in ascending order.
  // Collective over this communicator. The new communicator inherits the node of each
  // of its ranks, so its statistics keep the link classes.
  virtual std::unique_ptr<Communicator> split(int color, int key) const = 0;

  CommStats& stats() { return stats_; }
  const CommStats& stats() const { return stats_; }

  // The observer of every call (null: none); split() passes it on to the new group.
  void set_observer(CollectiveObserver* observer) { observer_ = observer; }
  CollectiveObserver* observer() const { return observer_; }

  // node_of_rank [size()]: any integers, equal for ranks on one node. Empty: one node.
  void set_peer_nodes(std::vector<int> node_of_rank);
  std::span<const int> peer_nodes() const { return peer_nodes_; }
  bool same_node(int peer) const {
    return peer_nodes_.empty() || peer_nodes_[peer] == peer_nodes_[rank()];
  }

 protected:
  virtual void all_reduce_raw(void* data, int64_t count, CommType type, ReduceOp op) = 0;
  virtual void all_gather_raw(const void* send, int64_t count, void* recv,
                              CommType type) = 0;
  virtual void reduce_scatter_raw(const void* send, void* recv, int64_t recv_count,
                                  CommType type, ReduceOp op) = 0;
  virtual void all_to_all_v_raw(const void* send, const int64_t* send_counts, void* recv,
                                const int64_t* recv_counts, CommType type) = 0;
  virtual void all_to_all_raw(const void* send, void* recv, int64_t block,
                              CommType type) = 0;
  // Default: the blocks packed into one all_to_all_v_raw and unpacked after (two local
  // copies); a backend that can send from and receive into the blocks overrides it.
  virtual void all_to_all_blocks_raw(const void* send, const std::vector<CommBlock>* send_blocks,
                                     void* recv, const std::vector<CommBlock>* recv_blocks,
                                     CommType type);
  virtual void all_gather_v_raw(const void* send, void* recv, const int64_t* counts,
                                CommType type) = 0;
  virtual void reduce_scatter_v_raw(const void* send, const int64_t* counts, void* recv,
                                    CommType type, ReduceOp op) = 0;
  virtual void broadcast_raw(void* data, int64_t count, CommType type, int root) = 0;
  virtual void send_raw(const void* data, int64_t count, CommType type, int peer,
                        int tag) = 0;
  virtual void recv_raw(void* data, int64_t count, CommType type, int peer, int tag) = 0;

  // Statistics of the backends, by the convention above: `bytes` in `messages`
  // messages to `peer` (never this rank), or to the ring successor.
  void count_sent(int peer, int64_t bytes, int64_t messages = 1);
  void count_ring(int64_t bytes, int64_t messages);

  CommStats stats_;

  // enter() and leave() around one call, when an observer is set.
  class Observed {
   public:
    Observed(const Communicator& comm, const char* kind) : observer_(comm.observer_) {
      if (observer_ != nullptr) observer_->enter(comm, kind);
    }
    ~Observed() {
      if (observer_ != nullptr) observer_->leave();
    }
    Observed(const Observed&) = delete;
    Observed& operator=(const Observed&) = delete;

   private:
    CollectiveObserver* observer_;
  };

 private:
  CollectiveObserver* observer_ = nullptr;
  std::vector<int> peer_nodes_;  // [size()] node of each rank, or empty

  // Size checks shared by every backend; they throw moe::Error naming the call and
  // the sizes before anything is sent. check_blocks: total == size() * block.
  void check_blocks(const char* call, const char* block_name, size_t block,
                    const char* total_name, size_t total) const;
  void check_all_to_all_v(size_t send_size, std::span<const int64_t> send_counts,
                          size_t recv_size, std::span<const int64_t> recv_counts) const;
  void check_all_to_all(size_t send_size, size_t recv_size) const;
  // size() lists on each side, every block inside its buffer, block j sent to this rank
  // by itself the size of the block j it receives from itself.
  void check_all_to_all_blocks(size_t send_size,
                               std::span<const std::vector<CommBlock>> send_blocks,
                               size_t recv_size,
                               std::span<const std::vector<CommBlock>> recv_blocks) const;
  // counts has size() entries >= 0; `mine` holds counts[rank()] and `all` their sum.
  void check_variable_blocks(const char* call, std::span<const int64_t> counts, size_t mine,
                             size_t all) const;
};

}  // namespace moe
