#pragma once
// Token embedding: out[i] = table[ids[i]], table (V, C).
// See framework/nn/linear.h for the layer conventions. The input is integer ids, so
// backward has no input gradient: it only accumulates into the table's gradient.

#include <cstdint>
#include <string>
#include <vector>

#include "framework/tensor/param_store.h"

namespace moe {

class Embedding {
 public:
  // `name` is the table's global name, e.g. "embed.weight".
  Embedding(ParamStore& store, const std::string& name, int64_t vocab, int64_t width,
            Init init);

  // ids (n) in [0, V) -> (n, C). The ids are copied, so the caller need not keep them.
  Tensor forward(const int32_t* ids, int64_t n);
  // dy (n, C): dtable[ids[i]] += dy[i]
  void backward(Tensor dy);

  Param& weight() { return table_; }
  int64_t vocab() const { return vocab_; }
  int64_t width() const { return width_; }

 private:
  Param& table_;  // (V, C)
  int64_t vocab_, width_;
  std::vector<int32_t> ids_;  // (n) ids of the last forward
  Buffer y_;                  // (n, C)
};

}  // namespace moe
