#pragma once
// The keys and values one attention layer has computed for each sequence being
// generated (incremental decoding, SelfAttention::forward_cached): sequence s holds
// rows (T_s, C) of k (rotary applied) and of v, heads concatenated, position t at row t.

#include <cstdint>
#include <vector>

#include "framework/core/error.h"

namespace moe {

class KvCache {
 public:
  explicit KvCache(int64_t width) : width_(width) {}

  // Empty caches for `sequences` sequences.
  void reset(int64_t sequences) {
    k_.assign(static_cast<size_t>(sequences), {});
    v_.assign(static_cast<size_t>(sequences), {});
  }
  int64_t sequences() const { return static_cast<int64_t>(k_.size()); }
  int64_t length(int64_t seq) const {
    return static_cast<int64_t>(k_.at(static_cast<size_t>(seq)).size()) / width_;
  }
  // k and v (C) of sequence `seq` at position `pos` <= length(seq): appended, or, for
  // an earlier position, replacing that position and dropping those after it.
  void store(int64_t seq, int64_t pos, const float* k, const float* v) {
    MOE_CHECK(seq >= 0 && seq < sequences(), "KvCache: sequence ", seq, " of ", sequences());
    MOE_CHECK(pos >= 0 && pos <= length(seq), "KvCache: position ", pos, " after ",
              length(seq), " cached positions of sequence ", seq);
    std::vector<float>& ks = k_[static_cast<size_t>(seq)];
    std::vector<float>& vs = v_[static_cast<size_t>(seq)];
    ks.resize(static_cast<size_t>(pos * width_));
    vs.resize(static_cast<size_t>(pos * width_));
    ks.insert(ks.end(), k, k + width_);
    vs.insert(vs.end(), v, v + width_);
  }
  const float* keys(int64_t seq) const { return k_.at(static_cast<size_t>(seq)).data(); }
  const float* values(int64_t seq) const { return v_.at(static_cast<size_t>(seq)).data(); }

 private:
  int64_t width_;                        // C
  std::vector<std::vector<float>> k_, v_;  // [sequence] (T_s, C)
};

}  // namespace moe
