#include "framework/train/peak_flops.h"

#include <algorithm>

#include "framework/core/timer.h"
#include "framework/kernels/ops.h"
#include "framework/tensor/tensor.h"

namespace moe {

namespace {

// The best rate of c = a b over the repetitions, after a warm-up. Best of many: on a
// shared host a single slow repetition says nothing about the cores, and a peak
// measured low would inflate every MFU figure of the run.
double best_gflops(Tensor a, Tensor b, Tensor c, int min_repeats, double min_seconds) {
  ops::matmul(a, b, c, false, false);  // warm-up
  double best = 1e30;
  Stopwatch total;
  for (int r = 0; r < min_repeats || total.seconds() < min_seconds; ++r) {
    Stopwatch watch;
    ops::matmul(a, b, c, false, false);
    best = std::min(best, watch.seconds());
  }
  const double n = static_cast<double>(c.rows());
  return 2.0 * n * n * n / best * 1e-9;
}

}  // namespace

double measure_sgemm_gflops(int n, int min_repeats, double min_seconds) {
  Buffer a(int64_t{n} * n), b(int64_t{n} * n), c(int64_t{n} * n);
  for (int64_t i = 0; i < int64_t{n} * n; ++i) {
    a.data()[i] = 1e-3f * static_cast<float>(i % 97);
    b.data()[i] = 1e-3f * static_cast<float>(i % 89);
  }
  const Shape square{n, n};
  return best_gflops(a.view(square), b.view(square), c.view(square), min_repeats, min_seconds);
}

double measure_bf16_gemm_gflops(int n, int min_repeats, double min_seconds) {
  Buffer a(int64_t{n} * n), b(int64_t{n} * n), c(int64_t{n} * n);
  Buffer a16(Device::kCpu, DType::kBF16), b16(Device::kCpu, DType::kBF16);
  for (int64_t i = 0; i < int64_t{n} * n; ++i) {
    a.data()[i] = 1e-3f * static_cast<float>(i % 97);
    b.data()[i] = 1e-3f * static_cast<float>(i % 89);
  }
  const Shape square{n, n};
  ops::convert(a.view(square), a16.view(square));
  ops::convert(b.view(square), b16.view(square));
  return best_gflops(a16.view(square), b16.view(square), c.view(square), min_repeats,
                     min_seconds);
}

double measure_device_gemm_gflops(Device device, DType operands, int n, int min_repeats,
                                  double min_seconds) {
  const Shape square{n, n};
  Buffer host(int64_t{n} * n), a(device), b(device), c(device), done;
  Buffer a16(device, DType::kBF16), b16(device, DType::kBF16);
  for (int64_t i = 0; i < int64_t{n} * n; ++i) host.data()[i] = 1e-3f * static_cast<float>(i % 97);
  Tensor ta = a.view(square), tb = b.view(square);
  ops::copy(host.view(square), ta);
  ops::copy(host.view(square), tb);
  if (operands == DType::kBF16) {
    ops::convert(ta, a16.view(square));
    ops::convert(tb, b16.view(square));
    ta = a16.view(square);
    tb = b16.view(square);
  }
  const Tensor first = c.view(square).reshaped({int64_t{n} * n}).slice_rows(0, 1);
  auto product = [&] {  // to completion: the host waits for an element of c
    ops::matmul(ta, tb, c.view(square), false, false);
    ops::copy(first, done.view({1}));
  };
  product();  // warm-up
  double best = 1e30;
  Stopwatch total;
  for (int r = 0; r < min_repeats || total.seconds() < min_seconds; ++r) {
    Stopwatch watch;
    product();
    best = std::min(best, watch.seconds());
  }
  const double size = static_cast<double>(n);
  return 2.0 * size * size * size / best * 1e-9;
}

}  // namespace moe
