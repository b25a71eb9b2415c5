#pragma once
// Launch helpers and the kernel launchers one CUDA file borrows from another (the
// expert kernels run the activations). Launchers queue on the stream they are given and
// do not reset the context's arenas, so an op may call several. Internal to the CUDA
// kernels.

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "framework/core/dtype.h"

namespace moe::cuda {

constexpr int kThreads = 256;

// Blocks for n elements at kThreads per block, capped: kernels loop grid-stride.
inline int blocks_for(int64_t n) {
  return static_cast<int>(std::clamp<int64_t>((n + kThreads - 1) / kThreads, 1, 65535L * 8));
}

void launch_swiglu_forward(cudaStream_t s, const float* g, const float* u, float* h, int64_t n);
void launch_swiglu_backward(cudaStream_t s, const float* g, const float* u, const float* dh,
                            float* dg, float* du, int64_t n);
void launch_gelu_forward(cudaStream_t s, const float* x, float* y, int64_t n);
void launch_gelu_backward(cudaStream_t s, const float* x, const float* dy, float* dx,
                          int64_t n);
// n values to bf16 (nearest, ties to even) and back (exact); bf16 as in moe::bf16.
void launch_to_bf16(cudaStream_t s, const float* x, bf16* y, int64_t n);
void launch_from_bf16(cudaStream_t s, const bf16* x, float* y, int64_t n);

}  // namespace moe::cuda
