#pragma once
// Gradient synchronisation of data-parallel training.
//
// The loss of a step is the mean over the global batch, split into D = dp equal token
// slices: L = (1/D) sum_r L_r. Rank r's backward yields dL_r/dθ for what it holds:
//   replicated parameters (every dp rank holds them): the true gradient is the mean
//     over the dp group, all-reduce(sum) / D;
//   expert parameters (is_expert_shard): the all-to-all brought to the owner every
//     token of its ep group routed there, and with etp > 1 the all-gather over etp
//     every token of the ep groups of its etp group, so its gradient already sums
//     dL_r/dθ over the ep x etp ranks; summing over the edp group (the replicas of
//     the same expert blocks) covers every rank, and / D gives the mean;
//   replicated parameters of sequence-parallel regions (ParamSpec::sequence_parallel):
//     each tp rank saw only its rows, so the gradient is the sum over the tp group and
//     the mean over dp: one all-reduce(sum) over the dp x tp ranks (`sequence`), / D.
// Gradients are reduced in buckets of about parallel.grad_bucket_mb: parameters are
// packed into one flat buffer per bucket (in registration order, never mixing groups),
// all-reduced in one call, scaled and unpacked. Fewer, larger messages amortise the
// per-call latency; a bucket never splits a parameter.
//
// Sharded optimizer state (parallel.shard_optimizer, ZeRO-1/2): the ranks of a bucket's
// group hold the same parameters, so each keeps the AdamW state of, and updates, only a
// 1/n slice of each (n the group size): rank q's state range of a parameter of m
// elements is [floor(q m / n), floor((q + 1) m / n)) of its local block, flattened.
// reduce_scatter() then replaces all_reduce(): each bucket is packed rank-major (every
// rank's slices of its parameters in turn) and reduce-scattered (sums in rank order),
// leaving this rank's slices reduced and scaled (the rest of each gradient is stale and
// unused); after the optimizer step all_gather_params() all-gathers the updated slices,
// so every rank holds the whole parameters again. The same bytes as the all-reduce:
// its two halves, the second moving weights instead of gradients. Checkpoints stay
// logical: gather_state() assembles whole moments for the writer (and for a reader),
// slice_state() keeps this rank's slice again.
//
// global_grad_norm: every parameter counted exactly once. Replicated gradients are
// identical on all ranks after the sync; tensor-parallel blocks (kTpColumn, kTpRow,
// kVocab) differ within a tp group, so their squares are summed over tp; expert blocks
// differ within the ep and etp groups and repeat over edp, so theirs are summed over ep
// and then etp. Sharded slices count on their rank; their squares are summed over the
// bucket's group.

#include <cstdint>
#include <vector>

#include "framework/optim/adamw.h"
#include "framework/parallel/communicator.h"
#include "framework/tensor/param_store.h"

namespace moe {

class GradSync {
 public:
  // dp: the group replicating the dense parameters; edp: the group replicating this
  // rank's experts; token_shards = D. bucket_bytes > 0. sequence: the dp x tp ranks
  // (the world), needed when a parameter is marked sequence_parallel. shard_state: the
  // sharded optimizer (above).
  GradSync(ParamStore& store, Communicator& dp, Communicator& edp, int token_shards,
           int64_t bucket_bytes, Communicator* sequence = nullptr, bool shard_state = false);

  // Turns every rank's local gradients into the gradients of the global mean loss.
  // Without sharded state.
  void all_reduce();
  // The same with sharded state: this rank's slices of them.
  void reduce_scatter();
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }
  // After parameters of unsharded buckets changed size (their owners re-planned under
  // fssdp, parallel.reshard_interval): the buckets' element counts again.
  void refresh_sizes();
  bool shards_state() const { return shard_state_; }

  // Sharded state only (no-ops otherwise). After the optimizer updated this rank's
  // slices: every rank's slices into every parameter.
  void all_gather_params();
  // Keeps only this rank's slice of each sharded parameter's AdamW state (the
  // optimizer's state whole before, as built or as gather_state() left it).
  void slice_state(AdamW& optimizer);
  // Assembles the whole AdamW state of every sharded parameter on every rank of its
  // group (for a checkpoint); slice_state() undoes it.
  void gather_state(AdamW& optimizer);

  // Pre-clip global L2 norm of the synchronised gradients (see above).
  double global_grad_norm(Communicator& tp, Communicator& ep, Communicator& etp) const;

 private:
  struct Bucket {
    Communicator* comm = nullptr;
    float scale = 1.0f;  // 1 / D
    std::vector<Param*> params;
    int64_t numel = 0;
    bool sharded = false;  // optimizer state sharded over comm
  };
  // Rank q's slice of a parameter of `numel` elements in a sharded bucket.
  static StateRange slice(const Bucket& b, int64_t numel, int q);
  // Elements of rank q's slices of every parameter of the bucket, per q.
  static std::vector<int64_t> slice_counts(const Bucket& b);
  // Every rank's slices of the bucket's parameters (this rank's: slices[k] for
  // b.params[k]), assembled whole on every rank.
  std::vector<Buffer> gather_bucket(const Bucket& b, const std::vector<const float*>& slices);

  ParamStore& store_;
  bool shard_state_;
  std::vector<Bucket> buckets_;
  Buffer flat_, gathered_;  // the bucket being reduced; a collective's other side
};

// Pre-clip global L2 norm of the gradients (see above); tp, ep, etp: this rank's groups.
double global_grad_norm(const ParamStore& store, Communicator& tp, Communicator& ep,
                        Communicator& etp);

}  // namespace moe
