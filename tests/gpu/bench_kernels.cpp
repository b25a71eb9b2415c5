// gpu_bench_kernels: throughput of the CUDA backend's products on GPU 0 (a benchmark,
// not a test; tests/gpu/run.sh prints it). Dense cuBLAS GEMMs in fp32 and bf16 (fp32
// sums), the grouped expert GEMM (cublasGemmGroupedBatchedEx, uneven rows per expert
// with an empty one) beside one dense GEMM of the same FLOPs, and the attention op.
// Inputs are zero: throughput does not depend on the values.

#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "framework/kernels/cuda/blas.h"
#include "framework/kernels/cuda/check.h"
#include "framework/kernels/cuda/context.h"
#include "framework/kernels/cuda/cuda_ops.h"
#include "framework/kernels/device.h"

namespace moe::cuda {
namespace {

constexpr int kRepeats = 20;

void* device_zeros(size_t bytes) {
  void* p = nullptr;
  MOE_CUDA_CHECK(cudaMalloc(&p, bytes));
  MOE_CUDA_CHECK(cudaMemset(p, 0, bytes));
  return p;
}

// Milliseconds per call of fn (after one warm-up call), timed on the context's stream.
template <class Fn>
double time_ms(Context& ctx, Fn fn) {
  fn();
  cudaEvent_t begin, end;
  MOE_CUDA_CHECK(cudaEventCreate(&begin));
  MOE_CUDA_CHECK(cudaEventCreate(&end));
  MOE_CUDA_CHECK(cudaEventRecord(begin, ctx.stream()));
  for (int i = 0; i < kRepeats; ++i) fn();
  MOE_CUDA_CHECK(cudaEventRecord(end, ctx.stream()));
  MOE_CUDA_CHECK(cudaEventSynchronize(end));
  float ms = 0.0f;
  MOE_CUDA_CHECK(cudaEventElapsedTime(&ms, begin, end));
  cudaEventDestroy(begin);
  cudaEventDestroy(end);
  return ms / kRepeats;
}

void report(const char* what, double flops, double ms) {
  std::printf("%-58s %9.3f ms %8.1f TFLOP/s\n", what, ms, flops / (ms * 1e-3) / 1e12);
}

// C (m, n) = A (m, k) B^T with B (n, k): the layout of x W^T.
RowMajorGemm xwt(int64_t m, int64_t n, int64_t k, const void* a, const void* b, void* c) {
  return {false, true, m, n, k, a, k, b, k, c, n};
}

void dense(Context& ctx, int64_t size) {
  const size_t elems = static_cast<size_t>(size * size);
  void* a = device_zeros(elems * 4);
  void* b = device_zeros(elems * 4);
  void* c = device_zeros(elems * 4);
  const double flops = 2.0 * size * size * size;
  char name[96];
  for (const GemmTypes t : {GemmTypes::kF32, GemmTypes::kBF16}) {
    std::snprintf(name, sizeof(name), "dense GEMM %ldx%ldx%ld %s", static_cast<long>(size),
                  static_cast<long>(size), static_cast<long>(size),
                  t == GemmTypes::kF32 ? "fp32" : "bf16 (fp32 sums)");
    report(name, flops, time_ms(ctx, [&] {
             gemm(ctx, xwt(size, size, size, a, b, c), 1.0f, 0.0f, t);
           }));
  }
  cudaFree(a), cudaFree(b), cudaFree(c);
}

// E experts of width C and hidden F over S rows split unevenly (expert 0 gets none):
// up = x W^T per expert, as the MoE layer's first projection.
void grouped(Context& ctx, int64_t rows, int64_t experts, int64_t width, int64_t hidden) {
  std::vector<int64_t> count(static_cast<size_t>(experts));
  int64_t total = 0;
  for (int64_t e = 1; e < experts; ++e) {
    count[e] = rows / (experts - 1) + (e % 3 == 0 ? 16 : e % 3 == 1 ? -16 : 0);
    total += count[e];
  }
  char* x = static_cast<char*>(device_zeros(static_cast<size_t>(total * width) * 2));
  char* w = static_cast<char*>(device_zeros(static_cast<size_t>(experts * hidden * width) * 2));
  char* y = static_cast<char*>(device_zeros(static_cast<size_t>(total * hidden) * 4));
  std::vector<RowMajorGemm> gemms;
  int64_t first = 0;
  for (int64_t e = 0; e < experts; ++e) {
    gemms.push_back(xwt(count[e], hidden, width, x + first * width * 2,
                        w + e * hidden * width * 2, y + first * hidden * 4));
    first += count[e];
  }
  const double flops = 2.0 * total * width * hidden;
  char name[96];
  std::snprintf(name, sizeof(name), "grouped GEMM bf16: %ld experts, %ld rows, %ldx%ld",
                static_cast<long>(experts), static_cast<long>(total), static_cast<long>(width),
                static_cast<long>(hidden));
  report(name, flops, time_ms(ctx, [&] {
           ctx.begin_op();
           grouped_gemm(ctx, gemms, 1.0f, 0.0f, GemmTypes::kBF16);
         }));
  report("  one dense bf16 GEMM of the same FLOPs", flops, time_ms(ctx, [&] {
           gemm(ctx, xwt(total, hidden, width, x, w, y), 1.0f, 0.0f, GemmTypes::kBF16);
         }));
  cudaFree(x), cudaFree(w), cudaFree(y);
}

void attention(Context& ctx, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim) {
  const int64_t width = heads * head_dim;
  auto* qkv = static_cast<float*>(device_zeros(static_cast<size_t>(batch * seq * 3 * width) * 4));
  auto* att = static_cast<float*>(device_zeros(static_cast<size_t>(batch * heads * seq * seq) * 4));
  auto* out = static_cast<float*>(device_zeros(static_cast<size_t>(batch * seq * width) * 4));
  // causal: half of the 4 B H T^2 D products' FLOPs are needed, all are computed
  const double flops = 4.0 * batch * heads * seq * seq * head_dim;
  char name[96];
  std::snprintf(name, sizeof(name), "attention forward fp32 B=%ld T=%ld H=%ld D=%ld causal",
                static_cast<long>(batch), static_cast<long>(seq), static_cast<long>(heads),
                static_cast<long>(head_dim));
  report(name, flops, time_ms(ctx, [&] {
           attention_forward(qkv, att, out, batch, seq, heads, head_dim, true);
         }));
  cudaFree(qkv), cudaFree(att), cudaFree(out);
}

}  // namespace
}  // namespace moe::cuda

int main() {
  if (moe::visible_cuda_devices() == 0) {
    std::printf("gpu_bench_kernels: no CUDA device is visible\n");
    return 77;
  }
  const moe::ComputeDevice device(moe::Device::kCuda, 0, 1, /*share_gpus=*/false);
  std::printf("GPU kernel throughput on %s (%d repeats each)\n", device.description().c_str(),
              moe::cuda::kRepeats);
  moe::cuda::Context& ctx = moe::cuda::current();
  moe::cuda::dense(ctx, 4096);
  moe::cuda::dense(ctx, 8192);
  moe::cuda::grouped(ctx, 16384, 64, 2048, 1024);
  moe::cuda::grouped(ctx, 16384, 8, 2048, 4096);
  moe::cuda::attention(ctx, 4, 1024, 16, 64);
  return 0;
}
