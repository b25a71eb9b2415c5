#include "models/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "framework/core/error.h"
#include "framework/core/rng.h"

namespace moe {

int32_t choose_token(std::span<const float> logits, const SamplingOptions& o,
                     uint64_t sequence, uint64_t step) {
  MOE_CHECK(!logits.empty(), "choose_token: no logits");
  if (o.temperature == 0.0f)  // max_element keeps the first of equal maxima
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) -
                                logits.begin());
  const int64_t vocab = static_cast<int64_t>(logits.size());
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  // most probable first; equal logits in id order
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  const int64_t kept = o.top_k > 0 ? std::min<int64_t>(o.top_k, vocab) : vocab;
  std::vector<double> p(static_cast<size_t>(kept));
  const double top = logits[order[0]];
  double total = 0.0;
  for (int64_t i = 0; i < kept; ++i) {
    p[i] = std::exp((logits[order[i]] - top) / o.temperature);
    total += p[i];
  }
  // nucleus: the shortest prefix whose probability reaches top_p
  int64_t nucleus = 0;
  double mass = 0.0;
  while (nucleus < kept && (nucleus == 0 || mass < o.top_p * total)) mass += p[nucleus++];
  const PhiloxKey key = philox_key(o.seed, hash_name("generate.sample"));
  const double u = static_cast<double>(random_u64(key, sequence, step) >> 11) * 0x1.0p-53;
  double cumulative = 0.0;
  for (int64_t i = 0; i < nucleus; ++i) {
    cumulative += p[i];
    if (cumulative > u * mass) return order[i];
  }
  return order[nucleus - 1];  // u * mass rounded up to the full mass
}

}  // namespace moe
