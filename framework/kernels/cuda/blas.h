#pragma once
// Row-major GEMMs on cuBLAS (column-major): C = op(A) op(B) in row-major is
// C^T = op(B)^T op(A)^T in column-major, so every call swaps the operands. Leading
// dimensions are the row strides of the row-major storage. Internal to the CUDA kernels.

#include <cublas_v2.h>
#include <library_types.h>

#include <cstdint>
#include <vector>

namespace moe::cuda {

class Context;

// One row-major product: C (m, n) = alpha op(A) op(B) + beta C.
struct RowMajorGemm {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  const void* b = nullptr;
  int64_t ldb = 0;
  void* c = nullptr;
  int64_t ldc = 0;
};

// Operand types of a product family: fp32 x fp32 -> fp32, or bf16 x bf16 -> fp32; the
// sums are fp32 either way (no TF32).
enum class GemmTypes { kF32, kBF16 };

void gemm(Context& ctx, const RowMajorGemm& g, float alpha, float beta, GemmTypes types);
// Independent products of one shape family in one call (cublasGemmGroupedBatchedEx),
// one group per product; products with m, n or k of 0 are left out (k = 0 with beta = 0
// zeroes C).
void grouped_gemm(Context& ctx, const std::vector<RowMajorGemm>& gemms, float alpha,
                  float beta, GemmTypes types);

}  // namespace moe::cuda
