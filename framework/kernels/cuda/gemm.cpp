// Dense and grouped GEMMs through cuBLAS: the op API's matmul (fp32, and bf16 operands
// with fp32 sums) and the helpers the attention and expert kernels share (blas.h).

#include <algorithm>

#include "framework/core/error.h"
#include "framework/kernels/cuda/blas.h"
#include "framework/kernels/cuda/check.h"
#include "framework/kernels/cuda/context.h"
#include "framework/kernels/cuda/cuda_ops.h"

namespace moe::cuda {
namespace {

cudaDataType_t operand_type(GemmTypes types) {
  return types == GemmTypes::kBF16 ? CUDA_R_16BF : CUDA_R_32F;
}

cublasOperation_t op(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

int narrow(int64_t v, const char* what) {
  MOE_CHECK(v >= 0 && v <= INT32_MAX, "cuBLAS ", what, " ", v, " exceeds 32 bits");
  return static_cast<int>(v);
}

// C = beta C for a product with nothing to sum (k = 0): zeros or C itself.
void scale_empty_product(Context& ctx, const RowMajorGemm& g, float beta) {
  if (beta == 1.0f || g.m == 0 || g.n == 0) return;
  MOE_CHECK(beta == 0.0f, "GEMM with k = 0 and beta ", beta);
  MOE_CUDA_CHECK(cudaMemset2DAsync(g.c, static_cast<size_t>(g.ldc) * sizeof(float), 0,
                                   static_cast<size_t>(g.n) * sizeof(float),
                                   static_cast<size_t>(g.m), ctx.stream()));
}

}  // namespace

void gemm(Context& ctx, const RowMajorGemm& g, float alpha, float beta, GemmTypes types) {
  if (g.m == 0 || g.n == 0) return;
  if (g.k == 0) return scale_empty_product(ctx, g, beta);
  const cudaDataType_t t = operand_type(types);
  // row-major C (m, n) = op(A) op(B)  <=>  column-major C^T (n, m) = op(B)^T op(A)^T
  MOE_CUBLAS_CHECK(cublasGemmEx(ctx.blas(), op(g.trans_b), op(g.trans_a), narrow(g.n, "n"),
                                narrow(g.m, "m"), narrow(g.k, "k"), &alpha, g.b, t,
                                narrow(g.ldb, "ldb"), g.a, t, narrow(g.lda, "lda"), &beta, g.c,
                                CUDA_R_32F, narrow(g.ldc, "ldc"), CUBLAS_COMPUTE_32F,
                                CUBLAS_GEMM_DEFAULT));
}

void grouped_gemm(Context& ctx, const std::vector<RowMajorGemm>& gemms, float alpha,
                  float beta, GemmTypes types) {
  std::vector<cublasOperation_t> trans_first, trans_second;
  std::vector<int> m, n, k, ld_first, ld_second, ldc, group_size;
  std::vector<const void*> first, second;
  std::vector<void*> out;
  for (const RowMajorGemm& g : gemms) {
    if (g.m == 0 || g.n == 0) continue;
    if (g.k == 0) {
      scale_empty_product(ctx, g, beta);
      continue;
    }
    // the column-major problem: (n, m) = op(B)^T (n, k) op(A)^T (k, m)
    trans_first.push_back(op(g.trans_b));
    trans_second.push_back(op(g.trans_a));
    m.push_back(narrow(g.n, "n"));
    n.push_back(narrow(g.m, "m"));
    k.push_back(narrow(g.k, "k"));
    first.push_back(g.b);
    ld_first.push_back(narrow(g.ldb, "ldb"));
    second.push_back(g.a);
    ld_second.push_back(narrow(g.lda, "lda"));
    out.push_back(g.c);
    ldc.push_back(narrow(g.ldc, "ldc"));
    group_size.push_back(1);
  }
  if (out.empty()) return;
  const int groups = static_cast<int>(out.size());
  const std::vector<float> alphas(out.size(), alpha), betas(out.size(), beta);
  // The pointer arrays live on the device; shapes, scalars and transposes on the host.
  const void* const* d_first = ctx.upload<const void*>(first);
  const void* const* d_second = ctx.upload<const void*>(second);
  void* const* d_out = ctx.upload<void*>(out);
  const cudaDataType_t t = operand_type(types);
  const cublasStatus_t status = cublasGemmGroupedBatchedEx(
      ctx.blas(), trans_first.data(), trans_second.data(), m.data(), n.data(), k.data(),
      alphas.data(), d_first, t, ld_first.data(), d_second, t, ld_second.data(), betas.data(),
      d_out, CUDA_R_32F, ldc.data(), groups, group_size.data(), CUBLAS_COMPUTE_32F);
  if (status != CUBLAS_STATUS_NOT_SUPPORTED) {
    MOE_CUBLAS_CHECK(status);
    return;
  }
  // A type combination the grouped kernels lack: the same products one by one.
  for (const RowMajorGemm& g : gemms) gemm(ctx, g, alpha, beta, types);
}

void matmul(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k,
            bool trans_a, bool trans_b, float alpha, float beta) {
  Context& ctx = current();
  ctx.begin_op();
  gemm(ctx,
       {trans_a, trans_b, m, n, k, a, trans_a ? m : k, b, trans_b ? k : n, c, n},
       alpha, beta, GemmTypes::kF32);
}

void matmul_bf16(const bf16* a, const bf16* b, float* c, int64_t m, int64_t n, int64_t k,
                 bool trans_a, bool trans_b, bool accumulate) {
  Context& ctx = current();
  ctx.begin_op();
  gemm(ctx,
       {trans_a, trans_b, m, n, k, a, trans_a ? m : k, b, trans_b ? k : n, c, n}, 1.0f,
       accumulate ? 1.0f : 0.0f, GemmTypes::kBF16);
}

void copy_bytes(const void* src, Device src_device, void* dst, Device dst_device,
                size_t bytes) {
  if (bytes == 0) return;
  Context& ctx = current();
  ctx.begin_op();
  const cudaMemcpyKind kind =
      src_device == Device::kCpu
          ? (dst_device == Device::kCpu ? cudaMemcpyHostToHost : cudaMemcpyHostToDevice)
          : (dst_device == Device::kCpu ? cudaMemcpyDeviceToHost : cudaMemcpyDeviceToDevice);
  MOE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, kind, ctx.stream()));
  // The host reads what arrives, or may reuse the pageable source: wait either way
  // except between device buffers, which stream order protects.
  if (kind != cudaMemcpyDeviceToDevice) ctx.synchronize();
}

}  // namespace moe::cuda
