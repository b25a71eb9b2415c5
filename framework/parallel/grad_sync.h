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
// global_grad_norm: every parameter counted exactly once. Replicated gradients are
// identical on all ranks after the sync; tensor-parallel blocks (kTpColumn, kTpRow,
// kVocab) differ within a tp group, so their squares are summed over tp; expert blocks
// differ within the ep and etp groups and repeat over edp, so theirs are summed over ep
// and then etp.

#include <cstdint>
#include <vector>

#include "framework/parallel/communicator.h"
#include "framework/tensor/param_store.h"

namespace moe {

class GradSync {
 public:
  // dp: the group replicating the dense parameters; edp: the group replicating this
  // rank's experts; token_shards = D. bucket_bytes > 0. sequence: the dp x tp ranks
  // (the world), needed when a parameter is marked sequence_parallel.
  GradSync(ParamStore& store, Communicator& dp, Communicator& edp, int token_shards,
           int64_t bucket_bytes, Communicator* sequence = nullptr);

  // Turns every rank's local gradients into the gradients of the global mean loss.
  void all_reduce();
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    Communicator* comm = nullptr;
    float scale = 1.0f;  // 1 / D
    std::vector<Param*> params;
    int64_t numel = 0;
  };
  std::vector<Bucket> buckets_;
  Buffer flat_;  // the bucket being reduced
};

// Pre-clip global L2 norm of the gradients (see above); tp, ep, etp: this rank's groups.
double global_grad_norm(const ParamStore& store, Communicator& tp, Communicator& ep,
                        Communicator& etp);

}  // namespace moe
