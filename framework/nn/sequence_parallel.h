#pragma once
// Sequence parallelism (Megatron-LM, Korthikanti et al. 2022): between the
// tensor-parallel blocks (norms, residual adds, the MoE router and its experts' input)
// the (N, C) row stream is split over the tp ranks instead of replicated: tp rank r
// holds rows [r N/tp, (r + 1) N/tp), a contiguous block of the rank's token order, so
// the tp ranks of dp rank d hold, in world-rank order, the dp rank's rows in order.
// A block's column-parallel entry all-gathers the rows (backward: reduce-scatters dx),
// its row-parallel exit reduce-scatters the partial sums (backward: all-gathers dy):
// the same bytes as the all-reduce each replaces (an all-reduce is a reduce-scatter
// followed by an all-gather), and the activations between the blocks are 1/tp.
//
// Parameters that act on the split rows (norm weights, the router, per-image
// conditioning whose gradient comes from a rank's rows) get this rank's share of their
// gradient; ParamSpec::sequence_parallel marks them and GradSync sums them over tp.
//
// Only the functions named for it communicate: all_gather_rows, reduce_scatter_rows.
// A null tp (or one rank) is no split: the functions return their input.

#include <cstdint>
#include <initializer_list>
#include <string_view>

#include "framework/parallel/communicator.h"
#include "framework/tensor/param_store.h"
#include "framework/tensor/tensor.h"

namespace moe {

struct RowRange {
  int64_t begin = 0, end = 0;  // rows [begin, end) of the whole stream
  int64_t size() const { return end - begin; }
};
// This tp rank's rows of a stream of `rows` rows; tp must divide rows.
RowRange sequence_rows(int64_t rows, const Communicator* tp);

// local (N/tp, C) -> (N, C): every tp rank's rows in rank order, in `out`.
Tensor all_gather_rows(Communicator* tp, Tensor local, Buffer& out);
// full (N, C), this rank's partial sums -> (N/tp, C): this rank's rows summed over tp.
Tensor reduce_scatter_rows(Communicator* tp, Tensor full, Buffer& out);
// full (N, C), the same on every tp rank -> view of this rank's rows (no exchange).
Tensor local_rows(const Communicator* tp, Tensor full);
// local (N/tp, C) -> (N, C) in `out`: this rank's rows in place, zeros elsewhere (the
// gradient of a replicated computation whose output this rank uses only its rows of).
Tensor scatter_rows_zero(const Communicator* tp, Tensor local, int64_t rows, Buffer& out);

// Marks every replicated parameter of `store` as sequence-parallel except those whose
// name starts with one of `except` (parameters that see all rows, e.g. a head after the
// all-gather). A model calls it when its whole body between embedding and head is split.
void mark_sequence_parallel(ParamStore& store, std::initializer_list<std::string_view> except);

}  // namespace moe
