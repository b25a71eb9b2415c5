#pragma once
// The next-token rule of moe-generate (docs/generation.md), applied to one row of logits:
//
//   temperature 0   greedy: the largest logit (ties: the lower token id)
//   otherwise       p = softmax(logits / temperature), restricted to the top_k largest
//                   (0: all), then to the smallest set of the most probable tokens whose
//                   mass reaches top_p (1: all), renormalised; the token is drawn with
//                   one uniform number u, a pure function of (seed, sequence, step)
//                   through Philox: the first token (most probable first) whose
//                   cumulative probability exceeds u.
//
// So a run is reproducible for a fixed seed, and a sequence's draws do not depend on
// the batch it is generated in, only on its index in the batch.

#include <cstdint>
#include <span>

namespace moe {

struct SamplingOptions {
  float temperature = 1.0f;  // >= 0; 0 = greedy
  int top_k = 0;             // >= 0; 0 = no limit
  float top_p = 1.0f;        // (0, 1]
  uint64_t seed = 0;
};

// The token chosen for sequence `sequence` at generation step `step` from its logits (V).
int32_t choose_token(std::span<const float> logits, const SamplingOptions& options,
                     uint64_t sequence, uint64_t step);

}  // namespace moe
