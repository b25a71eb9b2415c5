#pragma once
// Deterministic reductions shared by the CUDA kernels: block sums in a fixed tree order
// and column sums of a (rows, cols) matrix given by a functor, in two passes over fixed
// row chunks (no atomics: the same bits every run). Internal to the CUDA kernels.

#include <cuda_runtime.h>

#include <cstdint>

#include "framework/kernels/cuda/check.h"
#include "framework/kernels/cuda/context.h"
#include "framework/kernels/cuda/launch.h"

namespace moe::cuda {

// The sum over the block of one value per thread (blockDim.x a power of two <= kThreads),
// in a fixed order; every thread gets it. `shared` holds blockDim.x values.
template <class T>
__device__ T block_reduce_sum(T value, T* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  const T total = shared[0];
  __syncthreads();
  return total;
}

template <class T>
__device__ T block_reduce_max(T value, T* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int half = blockDim.x / 2; half > 0; half /= 2) {
    if (threadIdx.x < half)
      shared[threadIdx.x] = max(shared[threadIdx.x], shared[threadIdx.x + half]);
    __syncthreads();
  }
  const T total = shared[0];
  __syncthreads();
  return total;
}

// *out = the sum of count partial sums, in a fixed order: the second pass of a two-pass
// sum, one block of kThreads threads.
template <class T>
__global__ void sum_partials_kernel(const T* partial, int64_t count, T* out) {
  __shared__ T shared[kThreads];
  T s = 0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  const T total = block_reduce_sum(s, shared);
  if (threadIdx.x == 0) *out = total;
}

constexpr int64_t kRowsPerChunk = 128;

// value(r, c) -> float; partial[chunk][c] = sum over the chunk's rows in order.
template <class Value>
__global__ void column_partials_kernel(Value value, int64_t rows, int64_t cols,
                                       double* partial) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = blockIdx.y * kRowsPerChunk;
  const int64_t r1 = min(rows, r0 + kRowsPerChunk);
  double s = 0.0;
  for (int64_t r = r0; r < r1; ++r) s += value(r, c);
  partial[blockIdx.y * cols + c] = s;
}

// out(c, sum): the column's total over the chunks, in chunk order.
template <class Out>
__global__ void column_finish_kernel(const double* partial, int64_t chunks, int64_t cols,
                                     Out out) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  double s = 0.0;
  for (int64_t k = 0; k < chunks; ++k) s += partial[k * cols + c];
  out(c, s);
}

// Column sums of value over rows x cols handed to out(c, sum), deterministic.
template <class Value, class Out>
void column_sums(Context& ctx, int64_t rows, int64_t cols, Value value, Out out) {
  if (cols == 0) return;
  const int64_t chunks = rows == 0 ? 1 : (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  double* partial = ctx.scratch<double>(static_cast<size_t>(chunks * cols));
  const dim3 grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads),
                  static_cast<unsigned>(chunks));
  column_partials_kernel<<<grid, kThreads, 0, ctx.stream()>>>(value, rows, cols, partial);
  MOE_CUDA_CHECK_LAUNCH();
  column_finish_kernel<<<static_cast<unsigned>((cols + kThreads - 1) / kThreads), kThreads, 0,
                         ctx.stream()>>>(partial, chunks, cols, out);
  MOE_CUDA_CHECK_LAUNCH();
}

}  // namespace moe::cuda
