// Attention on the GPU in the CPU twin's form: the probabilities att (B, H, T, T) are
// kept for backward. The products are batched cuBLAS GEMMs over the B*H heads (q, k, v
// are strided column blocks of the qkv rows), the softmax and its backward are row
// kernels that honour the causal mask (future columns are 0, as on the CPU).
// Twin of cpu::ref::attention_forward / attention_backward.

#include <cfloat>
#include <cmath>
#include <vector>

#include "framework/kernels/cuda/blas.h"
#include "framework/kernels/cuda/cuda_ops.h"
#include "framework/kernels/cuda/reduce.cuh"

namespace moe::cuda {
namespace {

// Row (b*H + h, t) of att: softmax over the visible columns (t + 1 when causal) of the
// scaled scores already there; the rest 0.
__global__ void masked_softmax_kernel(float* att, int64_t seq, bool causal) {
  __shared__ float shared[kThreads];
  const int64_t row = blockIdx.x, t = row % seq;
  float* a = att + row * seq;
  const int64_t visible = causal ? t + 1 : seq;
  float mx = -FLT_MAX;
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) mx = fmaxf(mx, a[s]);
  mx = block_reduce_max(mx, shared);
  float sum = 0.0f;
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) sum += expf(a[s] - mx);
  sum = block_reduce_sum(sum, shared);
  for (int64_t s = threadIdx.x; s < seq; s += blockDim.x)
    a[s] = s < visible ? expf(a[s] - mx) / sum : 0.0f;
}

// dscore = att (datt - sum_s att datt) / sqrt(D) over the visible columns, in place on
// datt; 0 elsewhere.
__global__ void softmax_grad_kernel(const float* att, float* datt, int64_t seq, bool causal,
                                    float scale) {
  __shared__ float shared[kThreads];
  const int64_t row = blockIdx.x, t = row % seq;
  const float* a = att + row * seq;
  float* d = datt + row * seq;
  const int64_t visible = causal ? t + 1 : seq;
  float dot = 0.0f;
  for (int64_t s = threadIdx.x; s < visible; s += blockDim.x) dot += a[s] * d[s];
  dot = block_reduce_sum(dot, shared);
  for (int64_t s = threadIdx.x; s < seq; s += blockDim.x)
    d[s] = s < visible ? a[s] * (d[s] - dot) * scale : 0.0f;
}

// The B*H per-head products of one step, as pointer arithmetic on the row layouts:
// qkv (B*T, 3*H*D), out / dout (B*T, H*D), att / scratch (B*H, T, T).
struct HeadViews {
  int64_t batch, seq, heads, head_dim;
  int64_t qkv_row() const { return 3 * heads * head_dim; }
  int64_t out_row() const { return heads * head_dim; }
  // part 0, 1, 2 = q, k, v of head h of sequence b
  template <class T>
  T* qkv(T* base, int64_t b, int64_t h, int64_t part) const {
    return base + b * seq * qkv_row() + part * heads * head_dim + h * head_dim;
  }
  template <class T>
  T* out(T* base, int64_t b, int64_t h) const {
    return base + b * seq * out_row() + h * head_dim;
  }
  template <class T>
  T* scores(T* base, int64_t b, int64_t h) const {
    return base + (b * heads + h) * seq * seq;
  }
};

// One product per head: fn(b, h) -> RowMajorGemm, in one grouped call.
template <class Fn>
void per_head(Context& ctx, const HeadViews& v, float alpha, float beta, Fn fn) {
  std::vector<RowMajorGemm> gemms;
  gemms.reserve(static_cast<size_t>(v.batch * v.heads));
  for (int64_t b = 0; b < v.batch; ++b)
    for (int64_t h = 0; h < v.heads; ++h) gemms.push_back(fn(b, h));
  grouped_gemm(ctx, gemms, alpha, beta, GemmTypes::kF32);
}

}  // namespace

void attention_forward(const float* qkv, float* att, float* out, int64_t B, int64_t T,
                       int64_t H, int64_t D, bool causal) {
  Context& ctx = current();
  ctx.begin_op();
  if (B * T * H == 0) return;
  const HeadViews v{B, T, H, D};
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  // scores (T, T) = q (T, D) k^T / sqrt(D)
  per_head(ctx, v, scale, 0.0f, [&](int64_t b, int64_t h) {
    return RowMajorGemm{false, true, T, T, D, v.qkv(qkv, b, h, 0), v.qkv_row(),
                        v.qkv(qkv, b, h, 1), v.qkv_row(), v.scores(att, b, h), T};
  });
  masked_softmax_kernel<<<static_cast<unsigned>(B * H * T), kThreads, 0, ctx.stream()>>>(
      att, T, causal);
  MOE_CUDA_CHECK_LAUNCH();
  // out (T, D) = att (T, T) v (T, D)
  per_head(ctx, v, 1.0f, 0.0f, [&](int64_t b, int64_t h) {
    return RowMajorGemm{false, false, T, D, T, v.scores(att, b, h), T, v.qkv(qkv, b, h, 2),
                        v.qkv_row(), v.out(out, b, h), v.out_row()};
  });
}

void attention_backward(const float* qkv, const float* att, const float* dout, float* dqkv,
                        float* scratch, int64_t B, int64_t T, int64_t H, int64_t D,
                        bool causal) {
  Context& ctx = current();
  ctx.begin_op();
  if (B * T * H == 0) return;
  const HeadViews v{B, T, H, D};
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(D)));
  // dv (T, D) = att^T (T, T) dout (T, D)
  per_head(ctx, v, 1.0f, 0.0f, [&](int64_t b, int64_t h) {
    return RowMajorGemm{true, false, T, D, T, v.scores(att, b, h), T, v.out(dout, b, h),
                        v.out_row(), v.qkv(dqkv, b, h, 2), v.qkv_row()};
  });
  // datt (T, T) = dout (T, D) v^T, into scratch; then the softmax backward in place
  per_head(ctx, v, 1.0f, 0.0f, [&](int64_t b, int64_t h) {
    return RowMajorGemm{false, true, T, T, D, v.out(dout, b, h), v.out_row(),
                        v.qkv(qkv, b, h, 2), v.qkv_row(), v.scores(scratch, b, h), T};
  });
  softmax_grad_kernel<<<static_cast<unsigned>(B * H * T), kThreads, 0, ctx.stream()>>>(
      att, scratch, T, causal, scale);
  MOE_CUDA_CHECK_LAUNCH();
  // dq (T, D) = ds (T, T) k (T, D);  dk (T, D) = ds^T q
  per_head(ctx, v, 1.0f, 0.0f, [&](int64_t b, int64_t h) {
    return RowMajorGemm{false, false, T, D, T, v.scores(scratch, b, h), T,
                        v.qkv(qkv, b, h, 1), v.qkv_row(), v.qkv(dqkv, b, h, 0), v.qkv_row()};
  });
  per_head(ctx, v, 1.0f, 0.0f, [&](int64_t b, int64_t h) {
    return RowMajorGemm{true, false, T, D, T, v.scores(scratch, b, h), T,
                        v.qkv(qkv, b, h, 0), v.qkv_row(), v.qkv(dqkv, b, h, 1), v.qkv_row()};
  });
}

}  // namespace moe::cuda
