#pragma once
// The run order of the routed experts' GEMM chains, shared by the fp32 and the bf16
// expert kernels (expert_ffn.cpp, expert_ffn_bf16.cpp). Private to framework/kernels/cpu.
//
// Run order: the experts with more rows than an even share of S over the threads first,
// alone and with every thread inside the GEMM (`wide`); the rest after, one expert per
// thread at a time, largest first (`narrow`).
//
// Why: an expert's GEMMs are only (~S/E, C) x (C, F) (about 512 x 256 x 256 in the main
// config), too small for the GEMM to split well over the threads, so running whole
// experts side by side, each on a single-threaded GEMM (OpenBLAS's OpenMP build and
// oneDNN run one thread inside a parallel region), keeps the cores busier. Routing is
// skewed, though: an expert holding more than its share would leave the other threads
// idle at the end, so those still run with threaded GEMMs. Largest-first makes the
// dynamic schedule finish evenly (LPT). The order depends only on the row counts and the
// thread count, so a run is reproducible.

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace moe::cpu::detail {

struct ExpertOrder {
  std::vector<int64_t> wide, narrow;
};

inline ExpertOrder expert_order(const int64_t* offsets, int64_t num, int threads) {
  const int64_t share = offsets[num] / std::max(threads, 1);
  auto rows = [&](int64_t i) { return offsets[i + 1] - offsets[i]; };
  std::vector<int64_t> order(static_cast<size_t>(num));
  std::iota(order.begin(), order.end(), int64_t{0});
  // stable: equal sizes keep expert order
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return rows(a) > rows(b); });
  ExpertOrder out;
  for (int64_t i : order) {
    if (rows(i) == 0) continue;
    (threads > 1 && rows(i) <= share ? out.narrow : out.wide).push_back(i);
  }
  return out;
}

// Calls fn(i) for every expert of `order`; the narrow ones concurrently. Each expert
// writes only its own rows and its own slice of the weight gradients: no races.
template <typename Fn>
void for_each_expert(const ExpertOrder& order, Fn fn) {
  for (int64_t i : order.wide) fn(i);
  const int64_t count = static_cast<int64_t>(order.narrow.size());
#pragma omp parallel for schedule(dynamic, 1) if (count > 1)
  for (int64_t j = 0; j < count; ++j) fn(order.narrow[j]);
}

}  // namespace moe::cpu::detail
