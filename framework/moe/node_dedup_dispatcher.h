#pragma once
// NodeDedupDispatcher: expert parallelism that sends every token across the inter-node
// links at most once per destination node (moe.dispatcher = node_dedup; DeepSeek-V3's
// IB-then-NVLink dispatch, SMILE's two-stage dispatch). The flat and two-level
// dispatchers send one row per (token, expert); this one sends one row per (token,
// node), so node-limited and bi-level routing, which cap the nodes a token reaches,
// cut the inter-node bytes too.
//
// The ep group must be blocked (topology.h): N nodes of G ranks, ep rank r = n*G + l.
// A token of rank (n, l) lands on node m at the rank with the same local index,
// (m, l), over the `inter` group (the N ranks of local index l); the landing rank
// fans it out over the `intra` group (the G ranks of node m) to the owners of its
// experts there. dispatch:
//
//   1. records   per destination node m, in token order, one row per token with a kept
//                assignment on m and its routing record [count, (expert, weight)...]
//                (the weight as its float bits), int32
//   2. inter     counts [rows, record entries] per node (int64), then the records, then
//                the rows: all_to_all_v over `inter` (the block for this rank's own node
//                stays on the rank)                        landed (R_land, C)
//   3. fan out   landed rows -> one row per (row, expert) in fan order [owner][expert]
//                [source node][row]; counts per (expert, source node) to each owner over
//                `intra` (int64), then the rows             (S_recv, C) [landing][expert]
//                [source node]
//   4. regroup   [landing l][local expert][source node] -> [local expert][source node]
//                [landing l]: each local expert sees source (n, l) in ep rank order, rows
//                in token order: the layout of the flat dispatcher, row for row
//
// combine reverses 4 and 3 into the handle's `returned` rows at the landing rank (one
// per fanned pair), sums them there with the combine weights of the records
// (P_{t,m} = sum over t's kept experts e on m of w_e Expert_e(x_t)), sends the one
// partial sum per (token, node) back over `inter` and adds the partial sums of the nodes:
// y_t = sum_m P_{t,m}. The backward passes go the same way:
//   combine_backward  dy_t to the landing ranks (one row per (token, node)), there
//                     d_out = w dy_t and dweights = <dy_t, returned> per pair; d_out fans
//                     out to the experts, dweights travel back over `inter` (one float per
//                     pair); dropped assignments get dweights 0
//   dispatch_backward expert rows back to the landing ranks, summed per landed row,
//                     one row per (token, node) back, summed per token
// So each MoE layer and step moves 4 row exchanges over each of `inter` (rows per token:
// the nodes it reaches, its own included but not crossing the links) and `intra` (rows
// per token: its kept assignments), plus the records (4 + 8 bytes per pair forward) and
// the dweights (4 bytes per pair back). The kept (token, expert) pairs are the plan's:
// capacity and dropless differ only in the records, and the experts compute exactly the
// rows of the flat dispatcher in the same order. The sums over a token's nodes and over
// the experts within a node add the same terms in another order than the flat
// dispatcher's one sum over k, so outputs and gradients agree to float rounding (exactly
// where a token reaches one node).
//
// Only the four Dispatcher functions communicate. State between them travels in the
// handle (NodeDedupState); the scratch buffers are consumed within a call.

#include <memory>
#include <vector>

#include "framework/moe/dispatcher.h"
#include "framework/moe/placement.h"
#include "framework/parallel/communicator.h"

namespace moe {

// What combine and the backward passes need to reverse one dispatch. R_sent: rows this
// rank sent (its tokens, once per node reached); R_land: rows that landed here;
// P_land: (landed row, expert) pairs fanned out from here.
struct NodeDedupState final : DispatchState {
  // this rank's tokens
  std::vector<int64_t> sent_rows;           // [N] token rows to each node
  std::vector<int64_t> sent_pairs;          // [N] kept assignments on each node
  std::vector<int32_t> token_of_row;        // [R_sent] token of each sent row, node-major
  std::vector<int32_t> row_of_token_node;   // [T*N] sent row of (token, node), -1: none
  std::vector<int32_t> assignment_of_pair;  // [P_sent] t*K+k of each pair, record order
  // rows landed here from the ranks of this local index
  std::vector<int64_t> landed_rows;   // [N] from each source node
  std::vector<int64_t> landed_pairs;  // [N] pairs in their records
  std::vector<int32_t> fan_of_row;    // [R_land*K] fan position of each landed row's
                                      // pairs, -1 past its count
  std::vector<float> weight_of_row;   // [R_land*K] their combine weights
  std::vector<int32_t> row_of_fan;    // [P_land] landed row of each fanned pair
  std::vector<float> weight_of_fan;   // [P_land] its combine weight
  std::vector<int32_t> pair_of_fan;   // [P_land] its index in the landed records
  std::vector<int64_t> fan_rows;      // [G] fanned rows to each rank of the node
  // rows arrived here for the local experts
  std::vector<int64_t> expert_rows;   // [G] from each landing rank
  std::vector<int64_t> block_rows;    // [G * E_local * N] block (landing l, local expert
                                      // i, source node n) at (l * E_local + i) * N + n
  // (P_land, C) the experts' outputs of the fanned pairs, in fan order: written by
  // combine, read by combine_backward (dweights need them, at the landing rank).
  std::shared_ptr<Buffer> returned;
};

class NodeDedupDispatcher final : public Dispatcher {
 public:
  // ep: the expert-parallel group, blocked into intra.size() ranks per node;
  // intra: the ranks of this rank's node by local index; inter: the ranks of its local
  // index by node (TwoLevelAllToAll::intra()/inter() split them). placement.ep_size ==
  // ep.size(), placement.ep_rank == ep.rank(). All must outlive the dispatcher.
  NodeDedupDispatcher(Communicator& ep, Communicator& intra, Communicator& inter,
                      ExpertPlacement placement);

  DispatchHandle dispatch(Tensor x, std::shared_ptr<const RoutingPlan> plan) override;
  void combine(const DispatchHandle& handle, Tensor expert_out, Tensor y) override;
  void combine_backward(const DispatchHandle& handle, Tensor expert_out, Tensor dy,
                        Tensor d_expert_out, float* dweights) override;
  void dispatch_backward(const DispatchHandle& handle, Tensor d_rows, Tensor dx) override;

 private:
  int node_of_expert(int64_t expert) const;
  // Step 1: the records of this rank's tokens, node-major; fills the source fields of
  // state and sizes [N] (record entries for each node).
  std::vector<int32_t> make_records(const RoutingPlan& plan, NodeDedupState& state,
                                    std::vector<int64_t>& sizes) const;
  // Step 2's first half and step 3's bookkeeping: the records to the landing ranks, the
  // fan order, the counts of the stage inside the node.
  void land_records(const std::vector<int32_t>& records, const std::vector<int64_t>& sizes,
                    int64_t top_k, NodeDedupState& state);
  // Rows over `inter`: sent (R_sent, C) -> landed (R_land, C), or back.
  void across_nodes(const NodeDedupState& state, const float* src, float* dst, int64_t cols,
                    bool back);
  // Rows over `intra`: fanned (P_land, C) in fan order -> expert-major (S_recv, C), or back.
  void inside_node(const NodeDedupState& state, const float* src, float* dst, int64_t cols,
                   bool back);

  Communicator& intra_;
  Communicator& inter_;
  ExpertPlacement placement_;
  RowStoragePool storage_;   // handle rows
  RowStoragePool returned_;  // NodeDedupState::returned
  Buffer scratch_a_, scratch_b_, scratch_c_;  // per-call staging
};

}  // namespace moe
