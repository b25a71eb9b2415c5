// CPU kernel throughput in FLOP/s: matmul (OpenBLAS) at model shapes and attention
// forward+backward, fast against reference. Counters are rates, so runs with
// different iteration counts or shapes compare directly.
//
//   bench_kernels                      OpenBLAS kernel chosen by select_blas_kernels
//   MOE_BLAS_REEXEC=1 bench_kernels    OpenBLAS's own choice (no re-exec)
//
// Rates use wall time (UseRealTime): OpenBLAS and OpenMP work on other threads, so
// the main thread's CPU time would overstate them. Pin OMP_NUM_THREADS and
// OPENBLAS_NUM_THREADS for reproducible numbers.
//
// FLOPs counted are those of the products (2 per multiply-add); softmax and masking
// are not counted. Causal attention counts only the visible (t >= s) pairs.

#include <benchmark/benchmark.h>
#include <cblas.h>

#include <cmath>
#include <vector>

#include "framework/kernels/cpu/cpu_ops.h"
#include "framework/kernels/ops.h"
#include "framework/core/rng.h"

namespace {

// Uniform in [-1, 1): benchmark inputs only need to be finite and not all equal.
std::vector<float> random_vector(int64_t n, uint64_t seed) {
  const moe::PhiloxKey key = moe::philox_key(seed, 0xbe9cu);
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[i] = 2.0f * moe::uniform_from_bits(static_cast<uint32_t>(moe::random_u64(key, i, 0))) - 1.0f;
  return v;
}

void set_flop_rate(benchmark::State& state, double flops_per_iteration) {
  state.counters["FLOP/s"] = benchmark::Counter(
      flops_per_iteration * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// args: m, n, k, trans_a, trans_b
template <bool kFast>
void BM_matmul(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const bool ta = state.range(3) != 0, tb = state.range(4) != 0;
  const std::vector<float> a = random_vector(m * k, 1), b = random_vector(k * n, 2);
  std::vector<float> c(m * n, 0.0f);
  auto matmul = kFast ? moe::cpu::matmul : moe::cpu::ref::matmul;
  for (auto _ : state) {
    matmul(a.data(), b.data(), c.data(), m, n, k, ta, tb, 1.0f, 0.0f);
    benchmark::DoNotOptimize(c.data());
  }
  set_flop_rate(state, 2.0 * m * n * k);
  state.SetLabel(moe::cpu::blas_core_name());
}

void matmul_shapes(benchmark::internal::Benchmark* bench) {
  bench->ArgNames({"m", "n", "k", "ta", "tb"});
  bench->Args({4096, 256, 256, 0, 1});   // qkv-like projection, y = x W^T
  bench->Args({4096, 768, 256, 0, 1});   // fused qkv, C = 256
  bench->Args({256, 256, 4096, 1, 0});   // weight gradient dW = dy^T x
  bench->Args({4096, 256, 256, 0, 0});   // input gradient dx = dy W
  bench->Args({512, 256, 256, 0, 1});    // one expert's rows
  bench->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_matmul<true>)->Apply(matmul_shapes);
BENCHMARK(BM_matmul<false>)->ArgNames({"m", "n", "k", "ta", "tb"})->Args({512, 256, 256, 0, 1})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// Visible (query, key) pairs of one head.
double attention_pairs(int64_t T, bool causal) {
  return causal ? 0.5 * static_cast<double>(T) * (T + 1) : static_cast<double>(T) * T;
}

// args: B, T, H, D. Forward 2 products (QK^T, PV), backward 4 (dP, dQ, dK, dV).
template <bool kFast>
void BM_attention_fwd_bwd(benchmark::State& state) {
  const int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = state.range(3);
  const std::vector<float> qkv = random_vector(B * T * 3 * H * D, 3);
  const std::vector<float> dout = random_vector(B * T * H * D, 4);
  std::vector<float> att(B * H * T * T), scratch(B * H * T * T), out(B * T * H * D),
      dqkv(qkv.size());
  auto fwd = kFast ? moe::cpu::attention_forward : moe::cpu::ref::attention_forward;
  auto bwd = kFast ? moe::cpu::attention_backward : moe::cpu::ref::attention_backward;
  for (auto _ : state) {
    fwd(qkv.data(), att.data(), out.data(), B, T, H, D, true);
    bwd(qkv.data(), att.data(), dout.data(), dqkv.data(), scratch.data(), B, T, H, D, true);
    benchmark::DoNotOptimize(dqkv.data());
  }
  set_flop_rate(state, 12.0 * D * B * H * attention_pairs(T, true));
}

BENCHMARK(BM_attention_fwd_bwd<true>)->ArgNames({"B", "T", "H", "D"})
    ->Args({16, 256, 16, 16})->Args({16, 256, 8, 32})->Args({4, 1024, 4, 64})->Unit(benchmark::kMillisecond)->UseRealTime();
// Mixed precision: the same on bf16 q, k, v with bf16 products (attention_bf16.cpp).
void BM_attention_fwd_bwd_bf16(benchmark::State& state) {
  const int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = state.range(3);
  const std::vector<float> qkv32 = random_vector(B * T * 3 * H * D, 3);
  std::vector<moe::bf16> qkv(qkv32.size());
  moe::cpu::convert_to_bf16(qkv32.data(), qkv.data(), static_cast<int64_t>(qkv.size()));
  const std::vector<float> dout = random_vector(B * T * H * D, 4);
  std::vector<float> stats(B * H * T * 2), out(B * T * H * D), dqkv(qkv.size());
  for (auto _ : state) {
    moe::cpu::attention_forward_bf16(qkv.data(), stats.data(), out.data(), B, T, H, D, true);
    moe::cpu::attention_backward_bf16(qkv.data(), stats.data(), out.data(), dout.data(),
                                      dqkv.data(), B, T, H, D, true);
    benchmark::DoNotOptimize(dqkv.data());
  }
  set_flop_rate(state, 12.0 * D * B * H * attention_pairs(T, true));
}
BENCHMARK(BM_attention_fwd_bwd_bf16)->ArgNames({"B", "T", "H", "D"})
    ->Args({16, 256, 16, 16})->Args({16, 256, 8, 32})->Args({4, 1024, 4, 64})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// The reference takes seconds at B=16: one sequence gives the same per-FLOP rate.
BENCHMARK(BM_attention_fwd_bwd<false>)->ArgNames({"B", "T", "H", "D"})
    ->Args({1, 256, 16, 16})->Unit(benchmark::kMillisecond)->UseRealTime();

// The alternative the fast kernel was measured against: per-head sgemm calls for
// S = QK^T and O = PV (strided views of qkv, outside any OpenMP region) around an
// OpenMP causal softmax. Forward only; compare with BM_attention_fwd.
void BM_attention_fwd_sgemm(benchmark::State& state) {
  const int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = state.range(3);
  const int64_t row = 3 * H * D;
  const std::vector<float> qkv = random_vector(B * T * row, 3);
  std::vector<float> att(B * H * T * T), out(B * T * H * D);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  for (auto _ : state) {
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const float* q = qkv.data() + (bh / H) * T * row + (bh % H) * D;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, D, scale, q, row, q + H * D,
                  row, 0.0f, att.data() + bh * T * T, T);
    }
    // Causal softmax of every row: zero the future, normalise the past.
#pragma omp parallel for
    for (int64_t r = 0; r < B * H * T; ++r) {
      float* a = att.data() + r * T;
      const int64_t n = r % T + 1;
      moe::cpu::softmax_forward(a, a, 1, n);
      for (int64_t s = n; s < T; ++s) a[s] = 0.0f;
    }
    for (int64_t bh = 0; bh < B * H; ++bh) {
      const float* v = qkv.data() + (bh / H) * T * row + 2 * H * D + (bh % H) * D;
      float* o = out.data() + (bh / H) * T * H * D + (bh % H) * D;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, D, T, 1.0f,
                  att.data() + bh * T * T, T, v, row, 0.0f, o, H * D);
    }
    benchmark::DoNotOptimize(out.data());
  }
  set_flop_rate(state, 4.0 * D * B * H * attention_pairs(T, true));
}

void BM_attention_fwd(benchmark::State& state) {
  const int64_t B = state.range(0), T = state.range(1), H = state.range(2), D = state.range(3);
  const std::vector<float> qkv = random_vector(B * T * 3 * H * D, 3);
  std::vector<float> att(B * H * T * T), out(B * T * H * D);
  for (auto _ : state) {
    moe::cpu::attention_forward(qkv.data(), att.data(), out.data(), B, T, H, D, true);
    benchmark::DoNotOptimize(out.data());
  }
  set_flop_rate(state, 4.0 * D * B * H * attention_pairs(T, true));
}

BENCHMARK(BM_attention_fwd)->ArgNames({"B", "T", "H", "D"})->Args({16, 256, 16, 16})
    ->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_attention_fwd_sgemm)->ArgNames({"B", "T", "H", "D"})->Args({16, 256, 16, 16})
    ->Unit(benchmark::kMillisecond)->UseRealTime();

// Memory-bound row kernels at model shapes, as elements per second: rmsnorm
// forward+backward (N=4096, C=256) and cross-entropy with gradient (N=4096, V=256).
template <bool kFast>
void BM_rmsnorm_fwd_bwd(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  const std::vector<float> x = random_vector(rows * cols, 5), w = random_vector(cols, 6);
  std::vector<float> y(rows * cols), rstd(rows), dx(rows * cols), dw(cols);
  auto fwd = kFast ? moe::cpu::rmsnorm_forward : moe::cpu::ref::rmsnorm_forward;
  auto bwd = kFast ? moe::cpu::rmsnorm_backward : moe::cpu::ref::rmsnorm_backward;
  for (auto _ : state) {
    fwd(x.data(), w.data(), y.data(), rstd.data(), rows, cols, 1e-6f);
    bwd(x.data(), w.data(), rstd.data(), y.data(), dx.data(), dw.data(), rows, cols);
    benchmark::DoNotOptimize(dx.data());
  }
  state.counters["elements/s"] = benchmark::Counter(
      static_cast<double>(rows * cols) * state.iterations(), benchmark::Counter::kIsRate);
}

template <bool kFast>
void BM_cross_entropy(benchmark::State& state) {
  const int64_t rows = state.range(0), vocab = state.range(1);
  const std::vector<float> logits = random_vector(rows * vocab, 7);
  std::vector<int32_t> targets(rows);
  for (int64_t r = 0; r < rows; ++r) targets[r] = static_cast<int32_t>(r % vocab);
  std::vector<float> losses(rows), dlogits(rows * vocab);
  auto ce = kFast ? moe::cpu::cross_entropy : moe::cpu::ref::cross_entropy;
  for (auto _ : state) {
    ce(logits.data(), targets.data(), losses.data(), dlogits.data(), 1.0f / rows, rows, vocab);
    benchmark::DoNotOptimize(dlogits.data());
  }
  state.counters["elements/s"] = benchmark::Counter(
      static_cast<double>(rows * vocab) * state.iterations(), benchmark::Counter::kIsRate);
}

BENCHMARK(BM_rmsnorm_fwd_bwd<true>)->Args({4096, 256})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_rmsnorm_fwd_bwd<false>)->Args({4096, 256})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_cross_entropy<true>)->Args({4096, 256})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_cross_entropy<false>)->Args({4096, 256})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  moe::cpu::select_blas_kernels(argv);  // may re-execute with OPENBLAS_CORETYPE set
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
