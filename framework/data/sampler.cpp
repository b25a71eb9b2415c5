#include "framework/data/sampler.h"

#include <algorithm>
#include <vector>

#include "framework/core/error.h"

namespace moe {

BatchSampler::BatchSampler(const TokenShard& shard, int64_t seq_len, int64_t global_batch,
                           uint64_t seed)
    : shard_(shard),
      seq_len_(seq_len),
      global_batch_(global_batch),
      train_key_(philox_key(seed, hash_name("data.train"))) {
  MOE_CHECK(seq_len > 0 && global_batch > 0, "BatchSampler: seq_len ", seq_len,
            " and global batch ", global_batch, " must be > 0");
  MOE_USER_CHECK(shard.size() >= seq_len + 2, shard.path(), ": ", shard.size(),
                 " tokens are too few for sequences of ", seq_len, " (need at least ",
                 seq_len + 2, ")");
}

int64_t BatchSampler::local_batch(int dp_size) const {
  MOE_CHECK(dp_size > 0 && global_batch_ % dp_size == 0, "global batch ", global_batch_,
            " is not divisible by dp size ", dp_size);
  return global_batch_ / dp_size;
}

int64_t BatchSampler::offset(const PhiloxKey& key, int64_t counter, int64_t b) const {
  const uint64_t starts = static_cast<uint64_t>(shard_.size() - seq_len_ - 1);
  return static_cast<int64_t>(
      random_u64(key, static_cast<uint64_t>(counter), static_cast<uint64_t>(b)) % starts);
}

int64_t BatchSampler::sample_offset(int64_t step, int64_t b) const {
  return offset(train_key_, step, b);
}

template <class Start>
void BatchSampler::fill(int dp_rank, int dp_size, std::span<int32_t> inputs,
                        std::span<int32_t> targets, Start start) const {
  const int64_t rows = local_batch(dp_size);  // B_local
  MOE_CHECK(dp_rank >= 0 && dp_rank < dp_size, "dp rank ", dp_rank, " of ", dp_size);
  const size_t n = static_cast<size_t>(rows * seq_len_);
  MOE_CHECK(inputs.size() == n && targets.size() == n, "batch buffers hold ", inputs.size(),
            " and ", targets.size(), " tokens, expected (", rows, ", ", seq_len_, ")");
  std::vector<int32_t> window(static_cast<size_t>(seq_len_ + 1));  // (T + 1) tokens
  for (int64_t r = 0; r < rows; ++r) {
    shard_.read(start(dp_rank * rows + r), window);  // row of the global batch
    for (int64_t t = 0; t < seq_len_; ++t) {
      inputs[r * seq_len_ + t] = window[t];
      targets[r * seq_len_ + t] = window[t + 1];
    }
  }
}

void BatchSampler::batch(int64_t step, int dp_rank, int dp_size, std::span<int32_t> inputs,
                         std::span<int32_t> targets) const {
  fill(dp_rank, dp_size, inputs, targets,
       [&](int64_t b) { return offset(train_key_, step, b); });
}

int64_t BatchSampler::eval_windows(int64_t max_tokens) const {
  // The constructor guarantees count >= T + 2: one window at least.
  return std::max<int64_t>(1, std::min((shard_.size() - 1) / seq_len_, max_tokens / seq_len_));
}

int64_t BatchSampler::eval_batch(int64_t index, int64_t windows, int dp_rank, int dp_size,
                                 std::span<int32_t> inputs, std::span<int32_t> targets) const {
  const int64_t first = index * global_batch_ + dp_rank * local_batch(dp_size);
  fill(dp_rank, dp_size, inputs, targets, [&](int64_t b) {
    const int64_t w = index * global_batch_ + b;
    return (w < windows ? w : 0) * seq_len_;
  });
  return std::clamp<int64_t>(windows - first, 0, local_batch(dp_size));
}

}  // namespace moe
