#pragma once
// The CPU kernels. Each exists twice with the same signature:
//   moe::cpu::ref::<op>  plain loops that read like the math (the executable spec)
//   moe::cpu::<op>       the fast version (OpenBLAS, OpenMP over the cores this rank
//                        may use, vectorisable inner loops), tested against ref
// Layers never call these directly: they call the op API (framework/kernels/ops.h),
// which checks shapes and picks the kernel by device and dtype. Only the op API, the
// kernels themselves and their tests include this header.
//
// Conventions: row-major; shapes in comments use the glossary of docs/architecture.md
// (B batch, T sequence, C width, H heads, D head dim, E experts, K top-k, F expert
// width, V vocabulary, N rows/tokens). "accumulate" means +=, otherwise outputs are
// overwritten. Backward kernels never allocate.

#include <cstdint>

#include "framework/core/dtype.h"

namespace moe::cpu {

// Selects OpenBLAS's AVX-512 kernels when the CPU has them. OpenBLAS reads
// OPENBLAS_CORETYPE when it loads, so this re-executes the program once with the
// variable set; call it first thing in main(), before MPI_Init. Returns normally
// when nothing needs changing.
void select_blas_kernels(char** argv);
// Name of the GEMM kernel OpenBLAS uses ("SkylakeX", "Haswell", ...).
const char* blas_core_name();
// Threads a kernel may use on this rank (OpenMP's max threads).
int num_threads();
// The bf16 GEMM (gemm_bf16.cpp): true when oneDNN runs it with bf16 instructions
// (AVX512_BF16 or newer); otherwise matmul_bf16 converts its operands to fp32 and calls
// the fp32 GEMM (same products and fp32 sums, about half the speed).
bool bf16_gemm_native();
// e.g. "oneDNN 2.6.3 gemm:jit, ISA avx512_core_bf16", for the start-up line.
const char* bf16_gemm_name();

namespace ref {
#include "framework/kernels/cpu/ops_list.inc"
}  // namespace ref

#include "framework/kernels/cpu/ops_list.inc"

}  // namespace moe::cpu
