#pragma once
// Gradient synchronisation of data-parallel training.
//
// The loss of a step is the mean over the global batch, split into D = dp equal token
// slices: L = (1/D) sum_r L_r. Rank r's backward yields dL_r/dθ for what it holds:
//   replicated parameters (every dp rank holds them): the true gradient is the mean
//     over the dp group, all-reduce(sum) / D;
//   expert parameters (Shard::kExpert): the all-to-all brought to the owner every
//     token of its ep group routed there, so its gradient already sums dL_r/dθ over
//     the ep group; summing over the edp group (the replicas of the same experts)
//     covers every rank, and / D gives the mean. Under tensor parallelism with etp = 1
//     the tp ranks of a dp rank hold the same tokens and each dispatches them all, so
//     every token reaches its experts tp times: expert gradients are divided by D * tp
//     (token_copies = tp).
// Gradients are reduced in buckets of about parallel.grad_bucket_mb: parameters are
// packed into one flat buffer per bucket (in registration order, never mixing groups),
// all-reduced in one call, scaled and unpacked. Fewer, larger messages amortise the
// per-call latency; a bucket never splits a parameter.
//
// global_grad_norm: every parameter counted exactly once. Replicated gradients are
// identical on all ranks after the sync; tensor-parallel blocks (kTpColumn, kTpRow,
// kVocab) differ within a tp group, so their squares are summed over tp; expert shards
// differ within an ep group and repeat over edp, so theirs are summed over ep.

#include <cstdint>
#include <vector>

#include "framework/parallel/communicator.h"
#include "framework/tensor/param_store.h"

namespace moe {

class GradSync {
 public:
  // dp: the group replicating the dense parameters; edp: the group replicating this
  // rank's experts; token_shards = D; token_copies: how many ranks dispatch each token
  // to the experts (tp). bucket_bytes > 0.
  GradSync(ParamStore& store, Communicator& dp, Communicator& edp, int token_shards,
           int64_t bucket_bytes, int token_copies = 1);

  // Turns every rank's local gradients into the gradients of the global mean loss.
  void all_reduce();
  int64_t num_buckets() const { return static_cast<int64_t>(buckets_.size()); }

 private:
  struct Bucket {
    Communicator* comm = nullptr;
    float scale = 1.0f;  // 1 / D, or 1 / (D * token_copies) for experts
    std::vector<Param*> params;
    int64_t numel = 0;
  };
  std::vector<Bucket> buckets_;
  Buffer flat_;  // the bucket being reduced
};

// Pre-clip global L2 norm of the gradients (see above); tp, ep: this rank's groups.
double global_grad_norm(const ParamStore& store, Communicator& tp, Communicator& ep);

}  // namespace moe
