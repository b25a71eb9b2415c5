// The training losses computed on the device: the squared error of DiT's prediction.
// Twin of framework/kernels/cpu/squared_error.cpp. The sum is a fixed-order two-pass
// reduction (block b sums its chunk in a tree, one block sums the partials in a tree):
// the same bits on every run, not the CPU's serial order (the two agree to rounding).

#include "framework/kernels/cuda/check.h"
#include "framework/kernels/cuda/context.h"
#include "framework/kernels/cuda/cuda_ops.h"
#include "framework/kernels/cuda/launch.h"
#include "framework/kernels/cuda/reduce.cuh"

namespace moe::cuda {
namespace {

constexpr int64_t kChunk = int64_t{kThreads} * 64;  // elements per block of pass 1

// Pass 1: block b writes dpred over its chunk and sums the chunk's squared differences.
__global__ void squared_error_partials(const float* pred, const float* target, float* dpred,
                                       float scale, int64_t n, double* partial) {
  __shared__ double shared[kThreads];
  const int64_t begin = blockIdx.x * kChunk, end = min(n, begin + kChunk);
  double s = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float diff = pred[i] - target[i];
    s += static_cast<double>(diff) * diff;
    dpred[i] = scale * diff;
  }
  const double total = block_reduce_sum(s, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// Pass 2: one block sums the partials.
__global__ void sum_of_partials(const double* partial, int64_t count, double* out) {
  __shared__ double shared[kThreads];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) s += partial[i];
  const double total = block_reduce_sum(s, shared);
  if (threadIdx.x == 0) *out = total;
}

}  // namespace

double squared_error(const float* pred, const float* target, float* dpred, float scale,
                     int64_t n) {
  Context& ctx = current();
  ctx.begin_op();
  if (n == 0) return 0.0;
  const int64_t blocks = (n + kChunk - 1) / kChunk;
  double* partial = ctx.scratch<double>(static_cast<size_t>(blocks) + 1);
  squared_error_partials<<<static_cast<unsigned>(blocks), kThreads, 0, ctx.stream()>>>(
      pred, target, dpred, scale, n, partial);
  MOE_CUDA_CHECK_LAUNCH();
  sum_of_partials<<<1, kThreads, 0, ctx.stream()>>>(partial, blocks, partial + blocks);
  MOE_CUDA_CHECK_LAUNCH();
  double total = 0.0;
  ctx.download(partial + blocks, &total, sizeof(total));  // the loss scalar for the host
  return total;
}

}  // namespace moe::cuda
