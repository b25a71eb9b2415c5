// The training losses computed on the device: the squared error of DiT's prediction and
// the vocabulary-parallel LM loss. Twins of framework/kernels/cpu/squared_error.cpp and
// vocab_loss.cpp. Sums are fixed-order reductions (tree sums within a block, partials in
// order): the same bits on every run, not the CPU's serial order (the two agree to
// rounding).

#include <cfloat>

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

// ---- the vocabulary-parallel LM loss: one block per row (grid-stride over rows) ----

unsigned row_blocks(int64_t rows) {
  return static_cast<unsigned>(std::min<int64_t>(std::max<int64_t>(rows, 1), 65535));
}

__global__ void vocab_row_max_kernel(const float* logits, float* max, int64_t rows,
                                     int64_t cols) {
  __shared__ float shared[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float m = -FLT_MAX;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, logits[r * cols + c]);
    m = block_reduce_max(m, shared);
    if (threadIdx.x == 0) max[r] = m;
  }
}

__global__ void vocab_row_sums_kernel(const float* logits, const float* max,
                                      const int32_t* targets, int64_t begin, float* sums,
                                      int64_t rows, int64_t cols) {
  __shared__ double shared[kThreads];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* x = logits + r * cols;
    double s = 0.0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      s += exp(static_cast<double>(x[c] - max[r]));
    s = block_reduce_sum(s, shared);
    if (threadIdx.x != 0) continue;
    sums[r] = static_cast<float>(s);
    const int64_t t = targets[r];
    sums[rows + r] = t >= begin && t < begin + cols ? x[t - begin] : 0.0f;
  }
}

__global__ void vocab_loss_kernel(const float* logits, const float* max, const float* sums,
                                  const int32_t* targets, int64_t begin, float scale,
                                  float* losses, float* dlogits, int64_t rows, int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t t = targets[r];
    const float* x = logits + r * cols;
    float* dx = dlogits + r * cols;
    if (t < 0) {  // ignored position: no loss, no gradient
      if (threadIdx.x == 0) losses[r] = 0.0f;
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dx[c] = 0.0f;
      continue;
    }
    const float sum = sums[r], m = max[r];
    if (threadIdx.x == 0)
      losses[r] = static_cast<float>(log(static_cast<double>(sum)) + m - sums[rows + r]);
    const float p_scale = scale / sum;
    // dlogits may alias logits: each element is read, then written, by one thread
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
      float d = p_scale * expf(x[c] - m);
      if (c == t - begin) d -= scale;
      dx[c] = d;
    }
  }
}

}  // namespace

void vocab_row_max(const float* logits, float* max, int64_t rows, int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows == 0) return;
  vocab_row_max_kernel<<<row_blocks(rows), kThreads, 0, ctx.stream()>>>(logits, max, rows,
                                                                          cols);
  MOE_CUDA_CHECK_LAUNCH();
}

void vocab_row_sums(const float* logits, const float* max, const int32_t* targets,
                    int64_t begin, float* sums, int64_t rows, int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows == 0) return;
  const int32_t* d_targets = ctx.upload<int32_t>({targets, static_cast<size_t>(rows)});
  vocab_row_sums_kernel<<<row_blocks(rows), kThreads, 0, ctx.stream()>>>(
      logits, max, d_targets, begin, sums, rows, cols);
  MOE_CUDA_CHECK_LAUNCH();
}

void vocab_loss(const float* logits, const float* max, const float* sums,
                const int32_t* targets, int64_t begin, float scale, float* losses,
                float* dlogits, int64_t rows, int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows == 0) return;
  const int32_t* d_targets = ctx.upload<int32_t>({targets, static_cast<size_t>(rows)});
  vocab_loss_kernel<<<row_blocks(rows), kThreads, 0, ctx.stream()>>>(
      logits, max, sums, d_targets, begin, scale, losses, dlogits, rows, cols);
  MOE_CUDA_CHECK_LAUNCH();
}

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
  sum_partials_kernel<<<1, kThreads, 0, ctx.stream()>>>(partial, blocks, partial + blocks);
  MOE_CUDA_CHECK_LAUNCH();
  double total = 0.0;
  ctx.download(partial + blocks, &total, sizeof(total));  // the loss scalar for the host
  return total;
}

}  // namespace moe::cuda
