#pragma once
// The CUDA kernels: twins of the CPU kernels with the same signatures, from the same list
// (framework/kernels/cpu/ops_list.inc), so the two backends cannot drift. Data pointers
// are device memory of the current context (context.h); index arrays (token ids, slots,
// scales and weights of permutes, expert offsets, block counts, expert nodes) are host
// memory, as the op API passes them, and are uploaded by the kernel. Results the host
// asked for (topk's indices, gather_dot's out, sum_squares) come back to the host.
// Every kernel runs on the context's stream; none returns before its inputs may be
// reused by the host, and reductions that feed the loss use no atomics (a fixed order:
// the same bits run to run).
//
// Not on the device: attention_decode (the KV-cached decoder of moe-generate).

#include <cstddef>
#include <cstdint>

#include "framework/core/dtype.h"

namespace moe::cuda {

#include "framework/kernels/cpu/ops_list.inc"

// ---- bf16 mixed precision (the shape of the CPU bf16 kernels) ----
// y = bf16(x), round to nearest even; and back, exactly.
void convert_to_bf16(const float* x, bf16* y, int64_t n);
void convert_from_bf16(const bf16* x, float* y, int64_t n);
// C(m,n) = op(A) op(B) (+ C when accumulate) on bf16 operands, fp32 accumulation.
void matmul_bf16(const bf16* a, const bf16* b, float* c, int64_t m, int64_t n, int64_t k,
                 bool trans_a, bool trans_b, bool accumulate);

// ---- memory ----
// `bytes` bytes between any two of host and device memory (waits when the host reads).
void copy_bytes(const void* src, Device src_device, void* dst, Device dst_device,
                size_t bytes);

}  // namespace moe::cuda
