#pragma once
// GroupedExperts: the routed experts of one MoE layer, SwiGLU or GELU FFNs.
//
//   SwiGLU: Expert_e(x) = W_down[e] (silu(W_gate[e] x) * (W_up[e] x))
//     <prefix>.experts.w_gate, .w_up  (E, F, C)  N(0, init_std)
//     <prefix>.experts.w_down         (E, C, F)  N(0, out_std)
//   GELU (V-MoE): Expert_e(x) = W_fc2[e] gelu(W_fc1[e] x)
//     <prefix>.experts.w_fc1          (E, F, C)  N(0, init_std)
//     <prefix>.experts.w_fc2          (E, C, F)  N(0, out_std)
// The leading expert axis is split over ep ranks and, with expert-tensor parallelism
// (etp > 1), the hidden axis F over the etp group (Megatron's MLP split inside each
// expert): etp rank j holds hidden units [j F/etp, (j + 1) F/etp), the rows of
// w_gate/w_up (Shard::kExpertColumn) and the columns of w_down (Shard::kExpertRow).
// Then forward returns this rank's partial output h_j W_down_j^T and backward its
// partial dx = dg_j W_gate_j + du_j W_up_j; the sum over the etp group is the
// unsplit expert's (the EtpDispatcher exchanges and sums them, etp_dispatcher.h).
//
// The input is the expert-ordered buffer of a dispatch: rows [off[i], off[i+1]) belong
// to local expert i, so each expert runs one GEMM chain on contiguous rows and empty
// experts cost nothing. This rank holds experts [first_expert, first_expert +
// num_local_experts) as the placement says: the local block of each (E, ., .) tensor.
// Layer conventions as in framework/nn/linear.h.
//
// Sharded sparse experts (parallel.expert_sharding = fssdp, fssdp_dispatcher.h): the
// block is the experts this rank owns, and each step materialize() adds the step's
// replicas: compute copies of the owned block followed by the replicas, their values
// fetched from the owners (sparse_all_gather), and zeroed gradients that backward fills;
// return_gradients() then adds the owned part to the parameters' gradients and sums the
// replicas' into their owners' (sparse_reduce_scatter, ascending rank order) and frees
// the copies, so no rank keeps another's expert between steps. With re-materialisation
// (parallel.rematerialize) release_replicas() frees the copies right after forward and
// rematerialize() fetches them again (the same all-gather, the same values) before
// backward, so between them the layer holds no replica.
//
// A rank may own no expert of the layer (E < R, ownership_plan.h): its block is empty
// (E_local = 0, every slice of the layer's parameters empty) and it computes only the
// replicas it materialises.
//
// Mixed precision (the weights' Param::matmul_dtype is bf16): forward rounds the input
// rows and the weights to bf16 copies (kept for backward with the bf16 hidden h; the
// pre-activations gate, up stay fp32), backward rounds dy; every product sums in fp32
// (ops::expert_ffn_forward/backward). Weight gradients stay fp32.

#include <span>
#include <string>
#include <vector>

#include "framework/config/config.h"
#include "framework/kernels/ops.h"
#include "framework/moe/placement.h"
#include "framework/parallel/sparse_collectives.h"
#include "framework/tensor/param_store.h"

namespace moe {

// How the hidden axis of every expert is split: this rank holds block `rank` of `size`.
struct ExpertTensorSplit {
  int size = 1;  // etp
  int rank = 0;  // etp rank
};

class GroupedExperts {
 public:
  GroupedExperts(ParamStore& store, const std::string& prefix, int64_t width,
                 int64_t hidden, const ExpertPlacement& placement, float init_std,
                 float out_std, ExpertActivation activation = ExpertActivation::kSwiGLU,
                 ExpertTensorSplit split = {});

  // x (S, C); offsets [num_local_experts + 1] with offsets.back() == S. Returns (S, C)
  // (with etp > 1 this rank's partial sum), written into `out` when it is given (a
  // dispatcher's expert_rows()), else into the experts' own buffer.
  Tensor forward(Tensor x, std::span<const int64_t> offsets, Tensor out = {});
  // dy (S, C) -> dx (S, C) (with etp > 1 partial; into `dx_out` when given);
  // accumulates the weight gradients of the experts that had rows.
  Tensor backward(Tensor dy, Tensor dx_out = {});

  // fssdp only: this step's holders (items.item is set here); group: the ranks the
  // experts are sharded over. Collective. Then forward takes offsets over the owned
  // experts and the replicas.
  void materialize(SparseItems items, Communicator& group);
  // fssdp only, after backward: the compute copies' gradients into the owners'. Collective.
  void return_gradients();
  // fssdp with re-materialisation: after forward, free the compute copies (values and
  // gradients); before backward, fetch the replicas again from their owners. Collective.
  void release_replicas();
  void rematerialize();
  // fssdp: bytes of the replicas' values and gradients in the compute copies as now
  // allocated (from materialize to return_gradients; 0 between steps), and the most
  // this layer has held at once.
  int64_t replica_bytes() const;
  int64_t replica_peak() const { return replica_peak_; }
  // fssdp with re-planned owners (parallel.reshard_interval): this rank now owns
  // `owners`' block; the parameters were moved there already (expert_ownership.h).
  void set_owners(const ExpertPlacement& owners);
  // The owners' ExpertPlacement::bounds (empty: the placement the layer was built with).
  const std::vector<int64_t>& owner_bounds() const { return owner_bounds_; }

  Param* w_gate() { return w_gate_; }  // null for GELU experts
  Param& w_up() { return w_up_; }      // w_fc1 for GELU experts
  Param& w_down() { return w_down_; }  // w_fc2 for GELU experts
  int64_t first_expert() const { return first_expert_; }
  int64_t num_local_experts() const { return num_local_; }
  int64_t local_hidden() const { return hidden_; }  // F / etp

 private:
  bool mixed() const { return w_up_.matmul_dtype == DType::kBF16; }
  ops::ExpertWeights weights();       // views of this rank's expert weights (bf16 copies
                                      // under mixed precision)
  ops::ExpertWeights weight_grads();  // and of their gradients
  ops::ExpertActivations activations(int64_t rows);  // (S, F/etp) views kept for backward
  std::vector<Param*> params();       // gate (when SwiGLU), up, down
  int64_t num_computed() const { return num_local_ + num_replicas_; }
  void round_weights();               // mixed precision: the bf16 copies of this step
  // an (rows, C) destination on the weights' device, or an internal error naming `what`
  void check_rows_of(Tensor t, int64_t rows, const char* what) const;
  void fetch_copies();                // fssdp: compute copies of items_, zeroed gradients

  Param* w_gate_;  // (E_local, F/etp, C), null for GELU
  Param& w_up_;    // (E_local, F/etp, C)
  Param& w_down_;  // (E_local, C, F/etp)
  int64_t width_, hidden_;             // C, F/etp (this rank's hidden units)
  int64_t first_expert_, num_local_;   // global index of local expert 0; E_local
  std::vector<int64_t> owner_bounds_;  // [R + 1] re-planned owners; empty: as built
  Tensor x_;                           // (S, C) saved input (mixed precision: bf16 copy)
  std::vector<int64_t> offsets_;       // [E_local + 1] saved row ranges
  Buffer gate_, up_, h_, y_;           // (S, F/etp) x3 pre-activations and hidden; (S, C)
                                       // (GELU: up_ is the pre-activation, gate_ unused)
  Buffer dh_, dgate_, dup_, dx_;       // (S, F/etp) x3; (S, C)
  // fssdp: the step's holders and group; compute copies and their gradients, one per
  // weight of params(), (E_local + replicas, ., .) each
  SparseItems items_;
  Communicator* group_ = nullptr;
  int64_t num_replicas_ = 0;
  std::vector<Buffer> copies_, copy_grads_;
  int64_t replica_peak_ = 0;  // bytes, the most replica_bytes() has been
  // Mixed precision: bf16 copies of the weights, the input x (S, C), h (S, F/etp), dy
  // (S, C), and the backward's GEMM operands dgate, dup (S, F/etp); h_, dgate_, dup_
  // then stay unused.
  // (all on the store's device)
  Buffer w_gate16_, w_up16_, w_down16_, x16_, h16_, dy16_, dgate16_, dup16_;
};

}  // namespace moe
