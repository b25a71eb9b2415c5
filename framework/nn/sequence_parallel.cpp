#include "framework/nn/sequence_parallel.h"

#include <algorithm>

#include "framework/nn/tp_linear.h"

namespace moe {

RowRange sequence_rows(int64_t rows, const Communicator* tp) {
  const int tps = tp_size(tp);
  MOE_CHECK(rows % tps == 0, "sequence parallelism: ", rows, " rows not divisible by tp = ",
            tps);
  const int64_t block = rows / tps;
  return {tp_rank(tp) * block, (tp_rank(tp) + 1) * block};
}

Tensor all_gather_rows(Communicator* tp, Tensor local, Buffer& out) {
  const int tps = tp_size(tp);
  if (tps == 1) return local;
  Tensor full = out.view({local.rows() * tps, local.cols()});
  tp->all_gather<float>({local.data, static_cast<size_t>(local.numel())},
                        {full.data, static_cast<size_t>(full.numel())});
  return full;
}

Tensor reduce_scatter_rows(Communicator* tp, Tensor full, Buffer& out) {
  const int tps = tp_size(tp);
  if (tps == 1) return full;
  MOE_CHECK(full.rows() % tps == 0, "reduce_scatter_rows: ", full.rows(),
            " rows not divisible by tp = ", tps);
  Tensor local = out.view({full.rows() / tps, full.cols()});
  tp->reduce_scatter<float>({full.data, static_cast<size_t>(full.numel())},
                            {local.data, static_cast<size_t>(local.numel())});
  return local;
}

Tensor local_rows(const Communicator* tp, Tensor full) {
  const RowRange r = sequence_rows(full.rows(), tp);
  return Tensor(full.data + r.begin * full.cols(), Shape{r.size(), full.cols()});
}

Tensor scatter_rows_zero(const Communicator* tp, Tensor local, int64_t rows, Buffer& out) {
  if (tp_size(tp) == 1) return local;
  const RowRange r = sequence_rows(rows, tp);
  MOE_CHECK(local.rows() == r.size(), "scatter_rows_zero: ", local.rows(), " rows, expected ",
            r.size());
  Tensor full = out.view({rows, local.cols()});
  const int64_t c = local.cols();
  std::fill(full.data, full.data + full.numel(), 0.0f);
  std::copy(local.data, local.data + local.numel(), full.data + r.begin * c);
  return full;
}

void mark_sequence_parallel(ParamStore& store, std::initializer_list<std::string_view> except) {
  for (Param& p : store.params()) {
    if (p.spec.shard != Shard::kReplicated) continue;
    bool excluded = false;
    for (std::string_view prefix : except) excluded = excluded || p.spec.name.starts_with(prefix);
    p.spec.sequence_parallel = !excluded;
  }
}

}  // namespace moe
