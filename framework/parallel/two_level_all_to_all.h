#pragma once
// The two-level (hierarchical) all-to-all of Tutel "2DH" and DeepSpeed-MoE: the same
// exchange as a flat all_to_all_v over a group, routed first inside each node, then
// between nodes among the ranks with the same local index (docs/parallelism.md,
// "The two-level all-to-all").
//
// The group must be blocked (topology.h): N nodes of G consecutive ranks, group rank
// r = n*G + l. With S the block this rank sends to each peer:
//
//   flat:       W-1 messages of S                 ((G-1) intra-node, (N-1) G inter-node)
//   two-level:  1. layout  [dst_node][dst_local] -> [dst_local][dst_node]
//               2. intra   all-to-all among the G ranks of the node: G-1 messages of N S
//               3. layout  [src_local][dst_node] -> [dst_node][src_local]
//               4. inter   all-to-all among the N ranks with local index l: N-1
//                          messages of G S; what arrives is [src_node][src_local], the
//                          flat source order, so no layout step follows
//
// The inter-node bytes are the same; there are G times fewer, G times larger inter-node
// messages, paid for with (N-1)/N of the data crossing the node's links twice and two
// local copies. It wins where inter-node latency dominates (small blocks, many nodes)
// and loses where bandwidth does (framework/parallel/cost_model.h decides).
//
// Variable counts (dropless): a rank does not know what the other ranks of its node send
// to its node peers, which it must forward in step 4. all_to_all_counts exchanges the
// counts over the same two steps first, so every rank learns what it forwards, and
// returns a TwoLevelPlan that the data exchanges then reuse (forward and reverse, any
// number of times). Equal blocks (capacity-padded buffers) need no plan: all_to_all.
//
// Only the functions named all_to_all* communicate; the scratch buffers are consumed
// within a call, so one instance serves every layer.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "framework/core/error.h"
#include "framework/parallel/communicator.h"
#include "framework/parallel/topology.h"

namespace moe {

// The counts of one variable exchange, in elements.
struct TwoLevelPlan {
  std::vector<int64_t> send;    // [W] block this rank sends to group rank d = n*G + l
  std::vector<int64_t> recv;    // [W] block this rank receives from group rank s
  std::vector<int64_t> staged;  // [G*N] what arrives in step 2 from local rank l'' for
                                // node n', at l''*N + n' (this rank forwards it in step 4)
};

class TwoLevelAllToAll {
 public:
  // group: the ranks exchanging; nodes: its NodeMap, blocked. Splits the group into the
  // node's ranks (intra) and the ranks of the same local index (inter): collective over
  // the group. The group must outlive this object.
  TwoLevelAllToAll(Communicator& group, const NodeMap& nodes);

  int num_nodes() const { return nodes_; }          // N
  int ranks_per_node() const { return per_node_; }  // G
  Communicator& group() const { return group_; }
  Communicator& intra() const { return *intra_; }  // G ranks of this node, by local index
  Communicator& inter() const { return *inter_; }  // N ranks of this local index, by node
  // Statistics of the two sub-communicators together (each keeps its own).
  CommStats stats() const;
  void reset_stats();

  // Exchanges count vectors over the two-level route and returns the plan of the rows
  // they count. counts holds segment[d] entries for every group rank d, in rank order
  // (segment is the same on every rank); block d has sum(its entries) rows. received
  // gets, in source order, the segment[rank()] entries every source sent. With segment
  // all ones this is the counts exchange of a plain variable all-to-all.
  TwoLevelPlan all_to_all_counts(std::span<const int64_t> counts,
                                 std::span<const int64_t> segment,
                                 std::vector<int64_t>& received);

  // The plan when every rank knows every block: rows(src, dst) elements from group rank
  // src to dst (e.g. from counts all ranks already gathered). No communication.
  TwoLevelPlan plan_known(const std::function<int64_t(int src, int dst)>& rows) const;

  // recv = what group.all_to_all_v(send, plan.send, recv, plan.recv) delivers.
  template <typename T>
  void all_to_all_v(const TwoLevelPlan& plan, std::span<const T> send, std::span<T> recv) {
    exchange(plan, as_bytes(send), as_writable_bytes(recv), sizeof(T), /*reverse=*/false);
  }
  // The way back: recv = what group.all_to_all_v(send, plan.recv, recv, plan.send)
  // delivers (inter-node first, then intra-node, the layout steps undone).
  template <typename T>
  void all_to_all_v_reverse(const TwoLevelPlan& plan, std::span<const T> send,
                            std::span<T> recv) {
    exchange(plan, as_bytes(send), as_writable_bytes(recv), sizeof(T), /*reverse=*/true);
  }
  // A variable exchange with its counts exchange: what group.all_to_all_v delivers.
  template <typename T>
  void all_to_all_v(std::span<const T> send, std::span<const int64_t> send_counts,
                    std::span<T> recv, std::span<const int64_t> recv_counts);
  // Equal blocks (capacity-padded): what group.all_to_all(send, recv) delivers.
  template <typename T>
  void all_to_all(std::span<const T> send, std::span<T> recv) {
    equal_blocks(as_bytes(send), as_writable_bytes(recv), sizeof(T));
  }

 private:
  template <typename T>
  static std::span<const std::byte> as_bytes(std::span<const T> s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size_bytes()};
  }
  template <typename T>
  static std::span<std::byte> as_writable_bytes(std::span<T> s) {
    return {reinterpret_cast<std::byte*>(s.data()), s.size_bytes()};
  }
  void check_plan(const TwoLevelPlan& plan) const;
  // Steps 1-2 and 3-4 of a forward exchange, and the whole reverse.
  void intra_step(const TwoLevelPlan& plan, std::span<const std::byte> send,
                  std::vector<std::byte>& staged, size_t element);
  void inter_step(const TwoLevelPlan& plan, std::span<const std::byte> staged,
                  std::span<std::byte> recv, size_t element);
  void exchange(const TwoLevelPlan& plan, std::span<const std::byte> send,
                std::span<std::byte> recv, size_t element, bool reverse);
  void equal_blocks(std::span<const std::byte> send, std::span<std::byte> recv,
                    size_t element);

  Communicator& group_;
  int nodes_, per_node_, node_, local_;
  std::unique_ptr<Communicator> intra_, inter_;
  std::vector<std::byte> packed_, staged_;  // per-call scratch
};

template <typename T>
void TwoLevelAllToAll::all_to_all_v(std::span<const T> send,
                                    std::span<const int64_t> send_counts, std::span<T> recv,
                                    std::span<const int64_t> recv_counts) {
  const std::vector<int64_t> ones(static_cast<size_t>(group_.size()), 1);
  std::vector<int64_t> received;
  TwoLevelPlan plan = all_to_all_counts(send_counts, ones, received);
  MOE_CHECK(received == std::vector<int64_t>(recv_counts.begin(), recv_counts.end()),
            "two-level all_to_all_v: recv_counts differ from what the sources send");
  all_to_all_v(plan, send, recv);
}

}  // namespace moe
