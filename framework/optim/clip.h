#pragma once
// Global gradient-norm clipping: norm = sqrt(sum over all parameters of sum(g^2)),
// and when norm > max_norm every gradient is scaled by max_norm / norm.
//
// Split in two so that the distributed trainer can all-reduce the partial sums of
// squares between them (sharded parameters counted once, replicated ones on one rank):
//   double sq = grad_sum_squares(store, filter);   // local partial
//   sq = all_reduce_sum(sq);                         // distributed only
//   double norm = std::sqrt(sq);
//   scale_grads(store, clip_coefficient(norm, max_norm));

#include <functional>
#include <vector>

#include "framework/tensor/param_store.h"

namespace moe {

// Sum of squares of the gradients of the parameters `include` accepts (all when
// empty), accumulated in double (ops::sum_squares).
double grad_sum_squares(const ParamStore& store,
                        const std::function<bool(const Param&)>& include = {});

// Every parameter's gradient sum of squares, in store order: one multi-tensor op (one
// launch and one download on the GPU), each sum that of ops::sum_squares.
std::vector<double> grad_squares_each(const ParamStore& store);

// Factor to multiply gradients by: max_norm / norm when norm > max_norm > 0, else 1.
// A non-finite norm gives 1 (nothing is scaled; the caller decides what to do).
float clip_coefficient(double norm, float max_norm);

// g *= scale for every gradient (no-op when scale == 1).
void scale_grads(ParamStore& store, float scale);

// Single-process clip: returns the pre-clip global norm. max_norm <= 0 only measures.
double clip_grad_norm(ParamStore& store, float max_norm);

}  // namespace moe
