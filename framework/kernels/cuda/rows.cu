// Row-wise CUDA kernels: softmax, RMSNorm, LayerNorm, cross-entropy, row tables (bias,
// positions) and adaLN modulation. A block per row; parameter gradients are column sums
// in a fixed order (reduce.cuh). Twins of framework/kernels/cpu/ref_ops.cpp.

#include <cfloat>

#include "framework/core/error.h"
#include "framework/kernels/cuda/cuda_ops.h"
#include "framework/kernels/cuda/reduce.cuh"

namespace moe::cuda {
namespace {

// ---- softmax ----

__global__ void softmax_forward_kernel(const float* x, float* y, int64_t cols) {
  __shared__ float shared[kThreads];
  const float* xr = x + blockIdx.x * cols;
  float* yr = y + blockIdx.x * cols;
  float mx = -FLT_MAX;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) mx = fmaxf(mx, xr[c]);
  mx = block_reduce_max(mx, shared);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) sum += expf(xr[c] - mx);
  sum = block_reduce_sum(sum, shared);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = expf(xr[c] - mx) / sum;
}

__global__ void softmax_backward_kernel(const float* y, const float* dy, float* dx,
                                        int64_t cols) {
  __shared__ float shared[kThreads];
  const int64_t base = blockIdx.x * cols;
  float dot = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dot += y[base + c] * dy[base + c];
  dot = block_reduce_sum(dot, shared);
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    dx[base + c] = y[base + c] * (dy[base + c] - dot);
}

// ---- RMSNorm, LayerNorm ----

__global__ void rmsnorm_forward_kernel(const float* x, const float* w, float* y, float* rstd,
                                       int64_t cols, float eps) {
  __shared__ float shared[kThreads];
  const int64_t base = blockIdx.x * cols;
  float ms = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) ms += x[base + c] * x[base + c];
  ms = block_reduce_sum(ms, shared);
  const float rs = rsqrtf(ms / cols + eps);
  if (threadIdx.x == 0) rstd[blockIdx.x] = rs;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) y[base + c] = x[base + c] * rs * w[c];
}

// dx_c = rs w_c dy_c - x_c rs^3 / C * sum_j dy_j w_j x_j
__global__ void rmsnorm_backward_kernel(const float* x, const float* w, const float* rstd,
                                        const float* dy, float* dx, int64_t cols) {
  __shared__ float shared[kThreads];
  const int64_t base = blockIdx.x * cols;
  float dot = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dot += dy[base + c] * w[c] * x[base + c];
  dot = block_reduce_sum(dot, shared);
  const float rs = rstd[blockIdx.x];
  const float coef = rs * rs * rs * dot / cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    dx[base + c] = rs * w[c] * dy[base + c] - x[base + c] * coef;
}

__global__ void layernorm_forward_kernel(const float* x, const float* w, const float* b,
                                         float* y, float* mean, float* rstd, int64_t cols,
                                         float eps) {
  __shared__ float shared[kThreads];
  const int64_t base = blockIdx.x * cols;
  float s = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) s += x[base + c];
  const float mu = block_reduce_sum(s, shared) / cols;
  float var = 0.0f;  // biased, as torch.nn.LayerNorm
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    var += (x[base + c] - mu) * (x[base + c] - mu);
  const float rs = rsqrtf(block_reduce_sum(var, shared) / cols + eps);
  if (threadIdx.x == 0) {
    mean[blockIdx.x] = mu;
    rstd[blockIdx.x] = rs;
  }
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    y[base + c] = (x[base + c] - mu) * rs * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
}

// dx = rs (g - mean(g) - xhat mean(g xhat)), g = dy w
__global__ void layernorm_backward_kernel(const float* x, const float* w, const float* mean,
                                          const float* rstd, const float* dy, float* dx,
                                          int64_t cols) {
  __shared__ float shared[kThreads];
  const int64_t base = blockIdx.x * cols;
  const float mu = mean[blockIdx.x], rs = rstd[blockIdx.x];
  float sg = 0.0f, sgx = 0.0f;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float g = dy[base + c] * (w ? w[c] : 1.0f);
    sg += g;
    sgx += g * (x[base + c] - mu) * rs;
  }
  const float mean_g = block_reduce_sum(sg, shared) / cols;
  const float mean_gx = block_reduce_sum(sgx, shared) / cols;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
    const float xhat = (x[base + c] - mu) * rs;
    const float g = dy[base + c] * (w ? w[c] : 1.0f);
    dx[base + c] = rs * (g - mean_g - xhat * mean_gx);
  }
}

// Column values of the norms' parameter gradients.
struct RmsWeightGrad {
  const float *x, *dy, *rstd;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const {
    return dy[r * cols + c] * x[r * cols + c] * rstd[r];
  }
};
struct LayerWeightGrad {
  const float *x, *dy, *mean, *rstd;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const {
    return dy[r * cols + c] * (x[r * cols + c] - mean[r]) * rstd[r];
  }
};
// the matrix itself
struct Plain {
  const float* v;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t c) const { return v[r * cols + c]; }
};
// out[c] += sum
struct AddTo {
  float* out;
  __device__ void operator()(int64_t c, double sum) const {
    out[c] = static_cast<float>(out[c] + sum);
  }
};

// ---- cross-entropy ----

__global__ void cross_entropy_kernel(const float* logits, const int32_t* targets,
                                     float* losses, float* dlogits, float scale,
                                     int64_t vocab) {
  __shared__ float shared[kThreads];
  const int64_t base = blockIdx.x * vocab;
  const int32_t target = targets[blockIdx.x];
  if (target < 0) {  // ignored: zero loss and gradient
    if (threadIdx.x == 0) losses[blockIdx.x] = 0.0f;
    if (dlogits)
      for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) dlogits[base + c] = 0.0f;
    return;
  }
  float mx = -FLT_MAX;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) mx = fmaxf(mx, logits[base + c]);
  mx = block_reduce_max(mx, shared);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) sum += expf(logits[base + c] - mx);
  const float log_sum = mx + logf(block_reduce_sum(sum, shared));
  // every thread has read what it needs of the target logit before any write below
  const float target_logit = logits[base + target];
  __syncthreads();
  if (threadIdx.x == 0) losses[blockIdx.x] = log_sum - target_logit;
  if (!dlogits) return;
  // dlogits may alias logits: each element is read, then written, by one thread
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
    const float p = expf(logits[base + c] - log_sum);
    dlogits[base + c] = scale * (p - (c == target ? 1.0f : 0.0f));
  }
}

// ---- row tables and adaLN ----

__global__ void add_rows_kernel(const float* x, const float* table, float* y, int64_t rows,
                                int64_t cols, int64_t period) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, j = i % cols;
    y[i] = x[i] + table[(r % period) * cols + j];
  }
}

// Row r = q * period + p of dy is element (q, p * cols + j) of a (ceil(rows/period),
// period * cols) matrix whose column sums are the table's gradient.
struct PeriodicRows {
  const float* dy;
  int64_t rows, cols, period;
  __device__ float operator()(int64_t q, int64_t cc) const {
    const int64_t r = q * period + cc / cols;
    return r < rows ? dy[r * cols + cc % cols] : 0.0f;
  }
};

__global__ void modulate_forward_kernel(const float* x, const float* shift, const float* scale,
                                        int64_t stride, float* y, int64_t tokens,
                                        int64_t width, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (tokens * width), j = i % width;
    y[i] = x[i] * (1.0f + scale[b * stride + j]) + shift[b * stride + j];
  }
}

__global__ void modulate_dx_kernel(const float* scale, int64_t stride, const float* dy,
                                   float* dx, int64_t tokens, int64_t width, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (tokens * width), j = i % width;
    dx[i] = dy[i] * (1.0f + scale[b * stride + j]);
  }
}

__global__ void gated_add_forward_kernel(const float* h, const float* gate, int64_t stride,
                                         const float* f, float* out, int64_t tokens,
                                         int64_t width, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (tokens * width), j = i % width;
    out[i] = h[i] + gate[b * stride + j] * f[i];
  }
}

__global__ void gated_add_df_kernel(const float* gate, int64_t stride, const float* dout,
                                    float* df, int64_t tokens, int64_t width, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / (tokens * width), j = i % width;
    df[i] = gate[b * stride + j] * dout[i];
  }
}

// Per image b and channel j, sums over its tokens: a (tokens, batch * width) matrix.
struct ImageTokens {
  const float *a, *b;  // product a * b, or a alone when b is null
  int64_t tokens, width;
  __device__ float operator()(int64_t t, int64_t cc) const {
    const int64_t img = cc / width, j = cc % width;
    const int64_t i = (img * tokens + t) * width + j;
    return b ? a[i] * b[i] : a[i];
  }
};
// dmod[b * stride + j] += sum
struct AddToChunk {
  float* out;
  int64_t stride, width;
  __device__ void operator()(int64_t cc, double sum) const {
    float* o = out + (cc / width) * stride + cc % width;
    *o = static_cast<float>(*o + sum);
  }
};

unsigned rows_grid(int64_t rows) { return static_cast<unsigned>(rows); }

}  // namespace

void softmax_forward(const float* x, float* y, int64_t rows, int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows == 0) return;
  softmax_forward_kernel<<<rows_grid(rows), kThreads, 0, ctx.stream()>>>(x, y, cols);
  MOE_CUDA_CHECK_LAUNCH();
}

void softmax_backward(const float* y, const float* dy, float* dx, int64_t rows, int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows == 0) return;
  softmax_backward_kernel<<<rows_grid(rows), kThreads, 0, ctx.stream()>>>(y, dy, dx, cols);
  MOE_CUDA_CHECK_LAUNCH();
}

void rmsnorm_forward(const float* x, const float* w, float* y, float* rstd, int64_t rows,
                     int64_t cols, float eps) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows == 0) return;
  rmsnorm_forward_kernel<<<rows_grid(rows), kThreads, 0, ctx.stream()>>>(x, w, y, rstd, cols,
                                                                        eps);
  MOE_CUDA_CHECK_LAUNCH();
}

void rmsnorm_backward(const float* x, const float* w, const float* rstd, const float* dy,
                      float* dx, float* dw, int64_t rows, int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows == 0) return;
  rmsnorm_backward_kernel<<<rows_grid(rows), kThreads, 0, ctx.stream()>>>(x, w, rstd, dy, dx,
                                                                         cols);
  MOE_CUDA_CHECK_LAUNCH();
  column_sums(ctx, rows, cols, RmsWeightGrad{x, dy, rstd, cols}, AddTo{dw});
}

void layernorm_forward(const float* x, const float* w, const float* b, float* y, float* mean,
                       float* rstd, int64_t rows, int64_t cols, float eps) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows == 0) return;
  layernorm_forward_kernel<<<rows_grid(rows), kThreads, 0, ctx.stream()>>>(x, w, b, y, mean,
                                                                          rstd, cols, eps);
  MOE_CUDA_CHECK_LAUNCH();
}

void layernorm_backward(const float* x, const float* w, const float* mean, const float* rstd,
                        const float* dy, float* dx, float* dw, float* db, int64_t rows,
                        int64_t cols) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows == 0) return;
  layernorm_backward_kernel<<<rows_grid(rows), kThreads, 0, ctx.stream()>>>(x, w, mean, rstd,
                                                                           dy, dx, cols);
  MOE_CUDA_CHECK_LAUNCH();
  if (dw) column_sums(ctx, rows, cols, LayerWeightGrad{x, dy, mean, rstd, cols}, AddTo{dw});
  if (db) column_sums(ctx, rows, cols, Plain{dy, cols}, AddTo{db});
}

void cross_entropy(const float* logits, const int32_t* targets, float* losses, float* dlogits,
                   float scale, int64_t rows, int64_t vocab) {
  Context& ctx = current();
  ctx.begin_op();
  for (int64_t r = 0; r < rows; ++r)
    MOE_CHECK(targets[r] < vocab, "cross_entropy target ", targets[r], " >= vocab ", vocab);
  if (rows == 0) return;
  const int32_t* d_targets = ctx.upload<int32_t>({targets, static_cast<size_t>(rows)});
  cross_entropy_kernel<<<rows_grid(rows), kThreads, 0, ctx.stream()>>>(logits, d_targets,
                                                                      losses, dlogits, scale,
                                                                      vocab);
  MOE_CUDA_CHECK_LAUNCH();
}

void add_rows(const float* x, const float* table, float* y, int64_t rows, int64_t cols,
              int64_t period) {
  Context& ctx = current();
  ctx.begin_op();
  if (rows * cols == 0) return;
  add_rows_kernel<<<blocks_for(rows * cols), kThreads, 0, ctx.stream()>>>(x, table, y, rows,
                                                                         cols, period);
  MOE_CUDA_CHECK_LAUNCH();
}

void sum_rows(const float* dy, float* dtable, int64_t rows, int64_t cols, int64_t period) {
  Context& ctx = current();
  ctx.begin_op();
  column_sums(ctx, (rows + period - 1) / period, period * cols,
              PeriodicRows{dy, rows, cols, period}, AddTo{dtable});
}

void modulate_forward(const float* x, const float* shift, const float* scale, int64_t stride,
                      float* y, int64_t batch, int64_t tokens, int64_t width) {
  Context& ctx = current();
  ctx.begin_op();
  const int64_t n = batch * tokens * width;
  if (n == 0) return;
  modulate_forward_kernel<<<blocks_for(n), kThreads, 0, ctx.stream()>>>(x, shift, scale, stride,
                                                                       y, tokens, width, n);
  MOE_CUDA_CHECK_LAUNCH();
}

void modulate_backward(const float* x, const float* scale, int64_t stride, const float* dy,
                       float* dx, float* dshift, float* dscale, int64_t batch, int64_t tokens,
                       int64_t width) {
  Context& ctx = current();
  ctx.begin_op();
  const int64_t n = batch * tokens * width;
  if (n == 0) return;
  // the sums read dy before dx is written (dx may be dy's buffer)
  column_sums(ctx, tokens, batch * width, ImageTokens{dy, nullptr, tokens, width},
              AddToChunk{dshift, stride, width});
  column_sums(ctx, tokens, batch * width, ImageTokens{dy, x, tokens, width},
              AddToChunk{dscale, stride, width});
  modulate_dx_kernel<<<blocks_for(n), kThreads, 0, ctx.stream()>>>(scale, stride, dy, dx,
                                                                  tokens, width, n);
  MOE_CUDA_CHECK_LAUNCH();
}

void gated_add_forward(const float* h, const float* gate, int64_t stride, const float* f,
                       float* out, int64_t batch, int64_t tokens, int64_t width) {
  Context& ctx = current();
  ctx.begin_op();
  const int64_t n = batch * tokens * width;
  if (n == 0) return;
  gated_add_forward_kernel<<<blocks_for(n), kThreads, 0, ctx.stream()>>>(h, gate, stride, f,
                                                                        out, tokens, width, n);
  MOE_CUDA_CHECK_LAUNCH();
}

void gated_add_backward(const float* gate, int64_t stride, const float* f, const float* dout,
                        float* df, float* dgate, int64_t batch, int64_t tokens, int64_t width) {
  Context& ctx = current();
  ctx.begin_op();
  const int64_t n = batch * tokens * width;
  if (n == 0) return;
  column_sums(ctx, tokens, batch * width, ImageTokens{dout, f, tokens, width},
              AddToChunk{dgate, stride, width});
  gated_add_df_kernel<<<blocks_for(n), kThreads, 0, ctx.stream()>>>(gate, stride, dout, df,
                                                                   tokens, width, n);
  MOE_CUDA_CHECK_LAUNCH();
}

}  // namespace moe::cuda
