// Element-wise CUDA kernels: activations, vector arithmetic, bf16 conversion, AdamW and
// the sum of squares (a fixed-order two-pass reduction: the same bits every run).
// Twins of framework/kernels/cpu/ref_ops.cpp.

#include <cuda_bf16.h>

#include <cmath>

#include "framework/kernels/cuda/check.h"
#include "framework/kernels/cuda/context.h"
#include "framework/kernels/cuda/cuda_ops.h"
#include "framework/kernels/cuda/launch.h"
#include "framework/kernels/cuda/reduce.cuh"

namespace moe::cuda {
namespace {

#define MOE_GRID_STRIDE(i, n)                                                        \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__device__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void silu_forward_kernel(const float* x, float* y, int64_t n) {
  MOE_GRID_STRIDE(i, n) y[i] = x[i] * sigmoid(x[i]);
}

__global__ void silu_backward_kernel(const float* x, const float* dy, float* dx, int64_t n) {
  // d/dx [x s(x)] = s + x s (1 - s)
  MOE_GRID_STRIDE(i, n) {
    const float s = sigmoid(x[i]);
    dx[i] = dy[i] * s * (1.0f + x[i] * (1.0f - s));
  }
}

__global__ void gelu_forward_kernel(const float* x, float* y, int64_t n) {
  MOE_GRID_STRIDE(i, n) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

__global__ void gelu_backward_kernel(const float* x, const float* dy, float* dx, int64_t n) {
  // d/dx [x Phi(x)] = Phi(x) + x phi(x)
  MOE_GRID_STRIDE(i, n) {
    const float cdf = 0.5f * (1.0f + erff(x[i] * 0.70710678118654752f));
    const float pdf = 0.39894228040143268f * expf(-0.5f * x[i] * x[i]);
    dx[i] = dy[i] * (cdf + x[i] * pdf);
  }
}

__global__ void swiglu_forward_kernel(const float* g, const float* u, float* h, int64_t n) {
  MOE_GRID_STRIDE(i, n) h[i] = g[i] * sigmoid(g[i]) * u[i];
}

__global__ void swiglu_backward_kernel(const float* g, const float* u, const float* dh,
                                       float* dg, float* du, int64_t n) {
  MOE_GRID_STRIDE(i, n) {
    const float s = sigmoid(g[i]);
    dg[i] = dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    du[i] = dh[i] * g[i] * s;
  }
}

__global__ void add_kernel(const float* a, const float* b, float* out, int64_t n) {
  MOE_GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}

__global__ void axpy_kernel(float alpha, const float* x, float* y, int64_t n) {
  MOE_GRID_STRIDE(i, n) y[i] += alpha * x[i];
}

__global__ void scale_kernel(float* x, float alpha, int64_t n) {
  MOE_GRID_STRIDE(i, n) x[i] *= alpha;
}

__global__ void to_bf16_kernel(const float* x, __nv_bfloat16* y, int64_t n) {
  MOE_GRID_STRIDE(i, n) y[i] = __float2bfloat16_rn(x[i]);  // nearest, ties to even
}

__global__ void from_bf16_kernel(const __nv_bfloat16* x, float* y, int64_t n) {
  MOE_GRID_STRIDE(i, n) y[i] = __bfloat162float(x[i]);
}

// m, v in fp32 as the CPU keeps them; the bias-corrected step in double (cpu::ref).
__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, float lr,
                             float beta1, float beta2, float eps, float weight_decay,
                             double bc1, double bc2) {
  MOE_GRID_STRIDE(i, n) {
    m[i] = beta1 * m[i] + (1.0f - beta1) * g[i];
    v[i] = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
    const double mhat = m[i] / bc1, vhat = v[i] / bc2;
    p[i] = static_cast<float>(p[i] - lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p[i]));
  }
}

// Pass 1: block b sums elements b*chunk .. (b+1)*chunk; pass 2: one block sums the
// partials. Chunks depend on n alone, so the order is the same on every run and GPU.
__global__ void sum_squares_partials(const float* x, int64_t n, int64_t chunk, double* partial) {
  __shared__ double shared[kThreads];
  const int64_t begin = blockIdx.x * chunk, end = min(n, begin + chunk);
  double s = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    s += static_cast<double>(x[i]) * x[i];
  const double total = block_reduce_sum(s, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

}  // namespace

void launch_swiglu_forward(cudaStream_t s, const float* g, const float* u, float* h, int64_t n) {
  if (n == 0) return;
  swiglu_forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(g, u, h, n);
  MOE_CUDA_CHECK_LAUNCH();
}

void launch_swiglu_backward(cudaStream_t s, const float* g, const float* u, const float* dh,
                            float* dg, float* du, int64_t n) {
  if (n == 0) return;
  swiglu_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(g, u, dh, dg, du, n);
  MOE_CUDA_CHECK_LAUNCH();
}

void launch_gelu_forward(cudaStream_t s, const float* x, float* y, int64_t n) {
  if (n == 0) return;
  gelu_forward_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, y, n);
  MOE_CUDA_CHECK_LAUNCH();
}

void launch_gelu_backward(cudaStream_t s, const float* x, const float* dy, float* dx,
                          int64_t n) {
  if (n == 0) return;
  gelu_backward_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, dy, dx, n);
  MOE_CUDA_CHECK_LAUNCH();
}

void launch_to_bf16(cudaStream_t s, const float* x, bf16* y, int64_t n) {
  if (n == 0) return;
  to_bf16_kernel<<<blocks_for(n), kThreads, 0, s>>>(x, reinterpret_cast<__nv_bfloat16*>(y), n);
  MOE_CUDA_CHECK_LAUNCH();
}

void launch_from_bf16(cudaStream_t s, const bf16* x, float* y, int64_t n) {
  if (n == 0) return;
  from_bf16_kernel<<<blocks_for(n), kThreads, 0, s>>>(reinterpret_cast<const __nv_bfloat16*>(x),
                                                      y, n);
  MOE_CUDA_CHECK_LAUNCH();
}

// Public wrappers: one op each (begin_op), then the launch on the context's stream.
#define MOE_ELEMENTWISE_OP(n, kernel, ...)                                            \
  do {                                                                                 \
    Context& ctx = current();                                                          \
    ctx.begin_op();                                                                    \
    if ((n) == 0) return;                                                              \
    kernel<<<blocks_for(n), kThreads, 0, ctx.stream()>>>(__VA_ARGS__);                 \
    MOE_CUDA_CHECK_LAUNCH();                                                           \
  } while (0)

void silu_forward(const float* x, float* y, int64_t n) {
  MOE_ELEMENTWISE_OP(n, silu_forward_kernel, x, y, n);
}
void silu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  MOE_ELEMENTWISE_OP(n, silu_backward_kernel, x, dy, dx, n);
}
void gelu_forward(const float* x, float* y, int64_t n) {
  MOE_ELEMENTWISE_OP(n, gelu_forward_kernel, x, y, n);
}
void gelu_backward(const float* x, const float* dy, float* dx, int64_t n) {
  MOE_ELEMENTWISE_OP(n, gelu_backward_kernel, x, dy, dx, n);
}
void swiglu_forward(const float* g, const float* u, float* h, int64_t n) {
  MOE_ELEMENTWISE_OP(n, swiglu_forward_kernel, g, u, h, n);
}
void swiglu_backward(const float* g, const float* u, const float* dh, float* dg, float* du,
                     int64_t n) {
  MOE_ELEMENTWISE_OP(n, swiglu_backward_kernel, g, u, dh, dg, du, n);
}
void add(const float* a, const float* b, float* out, int64_t n) {
  MOE_ELEMENTWISE_OP(n, add_kernel, a, b, out, n);
}
void axpy(float alpha, const float* x, float* y, int64_t n) {
  MOE_ELEMENTWISE_OP(n, axpy_kernel, alpha, x, y, n);
}
void scale(float* x, float alpha, int64_t n) { MOE_ELEMENTWISE_OP(n, scale_kernel, x, alpha, n); }
void convert_to_bf16(const float* x, bf16* y, int64_t n) {
  MOE_ELEMENTWISE_OP(n, to_bf16_kernel, x, reinterpret_cast<__nv_bfloat16*>(y), n);
}
void convert_from_bf16(const bf16* x, float* y, int64_t n) {
  MOE_ELEMENTWISE_OP(n, from_bf16_kernel, reinterpret_cast<const __nv_bfloat16*>(x), y, n);
}

void adamw(float* p, const float* g, float* m, float* v, int64_t n, float lr, float beta1,
           float beta2, float eps, float weight_decay, int64_t step) {
  MOE_CHECK(step >= 1, "adamw step counts from 1, got ", step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(beta1), static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(static_cast<double>(beta2), static_cast<double>(step));
  MOE_ELEMENTWISE_OP(n, adamw_kernel, p, g, m, v, n, lr, beta1, beta2, eps, weight_decay, bc1,
                     bc2);
}

double sum_squares(const float* x, int64_t n) {
  Context& ctx = current();
  ctx.begin_op();
  if (n == 0) return 0.0;
  constexpr int64_t kChunk = int64_t{kThreads} * 64;
  const int64_t blocks = (n + kChunk - 1) / kChunk;
  double* partial = ctx.scratch<double>(static_cast<size_t>(blocks) + 1);
  sum_squares_partials<<<static_cast<unsigned>(blocks), kThreads, 0, ctx.stream()>>>(
      x, n, kChunk, partial);
  MOE_CUDA_CHECK_LAUNCH();
  sum_partials_kernel<<<1, kThreads, 0, ctx.stream()>>>(partial, blocks, partial + blocks);
  MOE_CUDA_CHECK_LAUNCH();
  double total = 0.0;
  ctx.download(partial + blocks, &total, sizeof(total));
  return total;
}

}  // namespace moe::cuda
