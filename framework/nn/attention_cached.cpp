// SelfAttention::forward_cached: attention over a KV cache for generation
// (framework/nn/attention.h).

#include <vector>

#include "framework/kernels/ops.h"
#include "framework/nn/attention.h"

namespace moe {

Tensor SelfAttention::forward_cached(Tensor x, std::span<const int32_t> seq,
                                     std::span<const int32_t> pos, KvCache& cache) {
  const int64_t n = x.rows();
  MOE_CHECK(local_width_ == width_ && !sequence_parallel_,
            "SelfAttention::forward_cached runs on one process (no tensor parallelism)");
  MOE_CHECK(causal_, "SelfAttention::forward_cached needs causal attention");
  MOE_CHECK(x.cols() == width_ && static_cast<int64_t>(seq.size()) == n &&
                static_cast<int64_t>(pos.size()) == n,
            "SelfAttention::forward_cached: input ", x.shape.str(), " with ", seq.size(),
            " sequence ids and ", pos.size(), " positions");
  Tensor qkv = qkv_proj_.forward(x);  // (N, 3C): q, k, v of each row
  if (rotary_) {  // q at column 0, k at column C of each row
    ops::rope_apply_at(qkv, pos, heads_, head_dim_, 0, rope_theta_);
    ops::rope_apply_at(qkv, pos, heads_, head_dim_, width_, rope_theta_);
  }
  std::vector<const float*> keys(static_cast<size_t>(n)), values(keys.size());
  std::vector<int64_t> len(keys.size());
  for (int64_t i = 0; i < n; ++i) {
    const float* row = qkv.data + i * qkv.cols();
    cache.store(seq[i], pos[i], row + width_, row + 2 * width_);
  }
  // after every store: a store may move a sequence's cache
  for (int64_t i = 0; i < n; ++i) {
    keys[i] = cache.keys(seq[i]);
    values[i] = cache.values(seq[i]);
    len[i] = pos[i] + 1;
  }
  Tensor o = o_.view({n, width_});  // heads concatenated
  ops::attention_decode(qkv, keys, values, len, o, heads_);
  return out_proj_.forward_all_reduce(o);  // no tp: the plain projection
}

}  // namespace moe
