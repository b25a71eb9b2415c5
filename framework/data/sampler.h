#pragma once
// The (seed, step) batch sampler: the global batch of a step is a pure function of
// (seed, step), and data-parallel rank r takes rows [r * B_local, (r + 1) * B_local)
// of it, so runs on 1 or N ranks see the same data (DESIGN decision 3).
//
// Sample b of the global batch of step s starts at token
//   o = random_u64(philox_key(seed, hash_name("data.train")), s, b) % (count - T - 1)
// and is inputs = tokens[o, o + T), targets = tokens[o + 1, o + T + 1) (next token).
//
// Evaluation reads fixed windows in order instead: window w is tokens [w T, w T + T)
// with targets shifted by one, for w < W = min((count - 1) / T, max_tokens / T), so
// the evaluated text is the first W T tokens of the shard whatever the batch size,
// layout or step. Evaluation batch k holds windows [k B, k B + B) (rank r its slice of
// B_local); rows past the last window repeat window 0 and do not count.

#include <cstdint>
#include <span>

#include "framework/core/rng.h"
#include "framework/data/token_shard.h"

namespace moe {

class BatchSampler {
 public:
  // `shard` must outlive the sampler and hold at least seq_len + 2 tokens (a user error
  // naming the file otherwise). global_batch = B, the sequences of one step on all ranks.
  BatchSampler(const TokenShard& shard, int64_t seq_len, int64_t global_batch, uint64_t seed);

  int64_t seq_len() const { return seq_len_; }
  int64_t global_batch() const { return global_batch_; }
  // B_local = B / dp_size (dp_size must divide B).
  int64_t local_batch(int dp_size) const;

  // Training batch of `step` for dp rank `dp_rank` of `dp_size`:
  // inputs, targets (B_local, T) row-major, B_local * T entries each.
  void batch(int64_t step, int dp_rank, int dp_size, std::span<int32_t> inputs,
             std::span<int32_t> targets) const;
  // W, the evaluation windows of the first `max_tokens` tokens (at least 1).
  int64_t eval_windows(int64_t max_tokens) const;
  // Evaluation batch `index` of `windows` windows, same layout as batch(); returns the
  // rows of this rank that hold a window (the rest are padding).
  int64_t eval_batch(int64_t index, int64_t windows, int dp_rank, int dp_size,
                     std::span<int32_t> inputs, std::span<int32_t> targets) const;

  // First token of sample b of the global training batch of `step`.
  int64_t sample_offset(int64_t step, int64_t b) const;

 private:
  // Row r of this rank starts at token start(r) (B_local rows).
  template <class Start>
  void fill(int dp_rank, int dp_size, std::span<int32_t> inputs, std::span<int32_t> targets,
            Start start) const;
  int64_t offset(const PhiloxKey& key, int64_t counter, int64_t b) const;

  const TokenShard& shard_;
  int64_t seq_len_;       // T
  int64_t global_batch_;  // B
  PhiloxKey train_key_;
};

}  // namespace moe
