#pragma once
// The checked-call policy for the CUDA libraries (STYLE.md): a failed CUDA runtime,
// cuBLAS, cuDNN or NCCL call throws moe::Error with the call, file:line and the rank.
// Kernel launches are checked with MOE_CUDA_CHECK_LAUNCH() right after the <<<...>>>.

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "framework/core/error.h"

#define MOE_CUDA_CHECK(call)                                                             \
  do {                                                                                   \
    const cudaError_t moe_cuda_status = (call);                                          \
    if (moe_cuda_status != cudaSuccess) [[unlikely]]                                     \
      ::moe::detail::throw_error(#call, __FILE__, __LINE__,                              \
                                 cudaGetErrorString(moe_cuda_status), false);            \
  } while (0)

#define MOE_CUDA_CHECK_LAUNCH() MOE_CUDA_CHECK(cudaGetLastError())

#define MOE_CUBLAS_CHECK(call)                                                           \
  do {                                                                                   \
    const cublasStatus_t moe_cublas_status = (call);                                     \
    if (moe_cublas_status != CUBLAS_STATUS_SUCCESS) [[unlikely]]                         \
      ::moe::detail::throw_error(#call, __FILE__, __LINE__,                              \
                                 cublasGetStatusString(moe_cublas_status), false);       \
  } while (0)
