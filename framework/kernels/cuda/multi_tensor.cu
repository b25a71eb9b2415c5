// The multi-tensor optimizer kernels: the sums of squares of every gradient (for the
// global grad norm) and the clip + AdamW update of every parameter, each in one launch
// over a table of fixed-size chunks of all the tensors. Twins of the per-tensor kernels
// (elementwise.cu; the update in cpu::ref's form): the chunks depend on the sizes alone
// and every sum has a fixed order, so a run repeats bit for bit.

#include <cmath>
#include <vector>

#include "framework/kernels/cuda/check.h"
#include "framework/kernels/cuda/context.h"
#include "framework/kernels/cuda/cuda_ops.h"
#include "framework/kernels/cuda/launch.h"
#include "framework/kernels/cuda/reduce.cuh"

namespace moe::cuda {
namespace {

constexpr int64_t kChunk = int64_t{kThreads} * 64;  // elements per block

// Elements [begin, end) of tensor `tensor`.
struct Chunk {
  int64_t tensor, begin, end;
};

// One parameter's pointers, as the update kernel reads them.
struct AdamWTensor {
  float* p;
  float* g;
  float* m;
  float* v;
  float weight_decay;
};

// The chunks of tensors of sizes n[0..count), tensor by tensor; first[t] is tensor t's
// first chunk (first[count] the total).
std::vector<Chunk> chunks_of(const int64_t* n, int64_t count, std::vector<int64_t>& first) {
  std::vector<Chunk> chunks;
  first.assign(static_cast<size_t>(count) + 1, 0);
  for (int64_t t = 0; t < count; ++t) {
    first[t] = static_cast<int64_t>(chunks.size());
    for (int64_t b = 0; b < n[t]; b += kChunk) chunks.push_back({t, b, std::min(n[t], b + kChunk)});
  }
  first[count] = static_cast<int64_t>(chunks.size());
  return chunks;
}

__global__ void chunk_sum_squares(const float* const* x, const Chunk* chunks, double* partial) {
  __shared__ double shared[kThreads];
  const Chunk c = chunks[blockIdx.x];
  const float* xs = x[c.tensor];
  double s = 0.0;
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x)
    s += static_cast<double>(xs[i]) * xs[i];
  const double total = block_reduce_sum(s, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

// out[t] = the partials of tensor t's chunks, in chunk order (one thread per tensor).
__global__ void tensor_sums(const double* partial, const int64_t* first, int64_t count,
                            double* out) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= count) return;
  double s = 0.0;
  for (int64_t k = first[t]; k < first[t + 1]; ++k) s += partial[k];
  out[t] = s;
}

// m, v in fp32; the bias-corrected step in double, as cpu::ref::adamw and cuda::adamw.
__global__ void chunk_adamw(const AdamWTensor* tensors, const Chunk* chunks, float lr,
                            float beta1, float beta2, float eps, double bc1, double bc2,
                            float grad_scale) {
  const Chunk c = chunks[blockIdx.x];
  const AdamWTensor t = tensors[c.tensor];
  for (int64_t i = c.begin + threadIdx.x; i < c.end; i += blockDim.x) {
    float g = t.g[i];
    if (grad_scale != 1.0f) {  // the clip, kept in the gradient as the per-tensor path does
      g *= grad_scale;
      t.g[i] = g;
    }
    t.m[i] = beta1 * t.m[i] + (1.0f - beta1) * g;
    t.v[i] = beta2 * t.v[i] + (1.0f - beta2) * g * g;
    const double mhat = t.m[i] / bc1, vhat = t.v[i] / bc2;
    t.p[i] = static_cast<float>(t.p[i] - lr * (mhat / (sqrt(vhat) + eps) + t.weight_decay * t.p[i]));
  }
}

}  // namespace

void sum_squares_multi(const float* const* x, const int64_t* n, int64_t count, double* out) {
  Context& ctx = current();
  ctx.begin_op();
  if (count == 0) return;
  std::vector<int64_t> first;
  const std::vector<Chunk> chunks = chunks_of(n, count, first);
  if (chunks.empty()) {  // every tensor is empty
    for (int64_t t = 0; t < count; ++t) out[t] = 0.0;
    return;
  }
  const float* const* d_x = ctx.upload<const float*>({x, static_cast<size_t>(count)});
  const Chunk* d_chunks = ctx.upload<Chunk>(chunks);
  const int64_t* d_first = ctx.upload<int64_t>(first);
  double* partial = ctx.scratch<double>(chunks.size() + static_cast<size_t>(count));
  double* totals = partial + chunks.size();
  chunk_sum_squares<<<static_cast<unsigned>(chunks.size()), kThreads, 0, ctx.stream()>>>(
      d_x, d_chunks, partial);
  MOE_CUDA_CHECK_LAUNCH();
  tensor_sums<<<static_cast<unsigned>((count + kThreads - 1) / kThreads), kThreads, 0,
                ctx.stream()>>>(partial, d_first, count, totals);
  MOE_CUDA_CHECK_LAUNCH();
  // the host needs the sums (the global norm): one download for every tensor
  ctx.download(totals, out, static_cast<size_t>(count) * sizeof(double));
}

void adamw_multi(float* const* p, float* const* g, float* const* m, float* const* v,
                 const int64_t* n, const float* weight_decay, int64_t count, float lr,
                 float beta1, float beta2, float eps, int64_t step, float grad_scale) {
  MOE_CHECK(step >= 1, "adamw step counts from 1, got ", step);
  Context& ctx = current();
  ctx.begin_op();
  std::vector<int64_t> first;
  const std::vector<Chunk> chunks = chunks_of(n, count, first);
  if (chunks.empty()) return;
  std::vector<AdamWTensor> tensors(static_cast<size_t>(count));
  for (int64_t t = 0; t < count; ++t) tensors[t] = {p[t], g[t], m[t], v[t], weight_decay[t]};
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  const AdamWTensor* d_tensors = ctx.upload<AdamWTensor>(tensors);
  const Chunk* d_chunks = ctx.upload<Chunk>(chunks);
  chunk_adamw<<<static_cast<unsigned>(chunks.size()), kThreads, 0, ctx.stream()>>>(
      d_tensors, d_chunks, lr, beta1, beta2, eps, bc1, bc2, grad_scale);
  MOE_CUDA_CHECK_LAUNCH();
}

}  // namespace moe::cuda
