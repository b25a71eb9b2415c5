// SelfAttention::forward_cached: attention over a KV cache for generation
// (framework/nn/attention.h).

#include <algorithm>
#include <vector>

#include "framework/kernels/cpu/decode.h"
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
  const int64_t stride = 3 * width_;
  if (rotary_) {
    cpu::rope_apply_at(qkv.data, pos.data(), n, heads_, head_dim_, stride, rope_theta_);
    cpu::rope_apply_at(qkv.data + width_, pos.data(), n, heads_, head_dim_, stride,
                       rope_theta_);
  }
  int64_t longest = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* row = qkv.data + i * stride;
    cache.store(seq[i], pos[i], row + width_, row + 2 * width_);
    longest = std::max<int64_t>(longest, pos[i] + 1);
  }
  Tensor o = o_.view({n, width_});  // heads concatenated
#pragma omp parallel
  {
    std::vector<float> scratch(static_cast<size_t>(longest));
#pragma omp for schedule(dynamic)
    for (int64_t i = 0; i < n; ++i)
      cpu::attention_decode(qkv.data + i * stride, cache.keys(seq[i]), cache.values(seq[i]),
                            o.data + i * width_, scratch.data(), pos[i] + 1, heads_,
                            head_dim_);
  }
  return out_proj_.forward_all_reduce(o);  // no tp: the plain projection
}

}  // namespace moe
