#include "framework/nn/embedding.h"

#include "framework/kernels/ops.h"

namespace moe {

Embedding::Embedding(ParamStore& store, const std::string& name, int64_t vocab,
                     int64_t width, Init init)
    : table_(store.add({name, Shape{vocab, width}, Shard::kReplicated, init})),
      vocab_(vocab),
      width_(width),
      y_(store.device()) {}

Tensor Embedding::forward(const int32_t* ids, int64_t n) {
  // An out-of-range id would read outside the table: check the data once here.
  for (int64_t i = 0; i < n; ++i)
    MOE_CHECK(ids[i] >= 0 && ids[i] < vocab_, "Embedding ", table_.spec.name, ": id ",
              ids[i], " at position ", i, " outside [0, ", vocab_, ")");
  ids_.assign(ids, ids + n);
  Tensor y = y_.view({n, width_});
  ops::embedding_forward(table_.data(), ids_, y);
  return y;
}

void Embedding::backward(Tensor dy) {
  const auto n = static_cast<int64_t>(ids_.size());
  MOE_CHECK(dy.rows() == n && dy.cols() == width_, "Embedding ", table_.spec.name,
            ": gradient shape ", dy.shape.str());
  ops::embedding_backward(dy, ids_, table_.dgrad());
}

}  // namespace moe
