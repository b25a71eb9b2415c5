#include "framework/train/peak_flops.h"

#include <algorithm>

#include "framework/core/timer.h"
#include "framework/kernels/ops.h"
#include "framework/tensor/tensor.h"

namespace moe {

double measure_sgemm_gflops(int n, int min_repeats, double min_seconds) {
  Buffer a(int64_t{n} * n), b(int64_t{n} * n), c(int64_t{n} * n);
  for (int64_t i = 0; i < int64_t{n} * n; ++i) {
    a.data()[i] = 1e-3f * static_cast<float>(i % 97);
    b.data()[i] = 1e-3f * static_cast<float>(i % 89);
  }
  const Shape square{n, n};
  ops::matmul(a.view(square), b.view(square), c.view(square), false, false);  // warm-up
  // Best of many: on a shared host a single slow repetition says nothing about the
  // cores, and a peak measured low would inflate every MFU figure of the run.
  double best = 1e30;
  Stopwatch total;
  for (int r = 0; r < min_repeats || total.seconds() < min_seconds; ++r) {
    Stopwatch watch;
    ops::matmul(a.view(square), b.view(square), c.view(square), false, false);
    best = std::min(best, watch.seconds());
  }
  return 2.0 * n * static_cast<double>(n) * n / best * 1e-9;
}

}  // namespace moe
