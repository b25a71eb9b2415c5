#include "framework/tensor/device_memory.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "framework/core/error.h"

#ifdef MOE_WITH_CUDA
#include <cuda_runtime.h>

#include "framework/kernels/cuda/context.h"
#include "framework/kernels/cuda/cuda_ops.h"
#endif

namespace moe {

namespace {

#ifdef MOE_WITH_CUDA
void cuda_check(cudaError_t status, const char* call) {
  MOE_CHECK(status == cudaSuccess, call, ": ", cudaGetErrorString(status));
}
#endif

}  // namespace

void* device_allocate(Device device, size_t bytes) {
  if (bytes == 0) return nullptr;
  if (device == Device::kCpu) {
    const size_t rounded = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (p == nullptr) throw std::bad_alloc();  // main() reports it (exit 2)
    std::memset(p, 0, rounded);
    return p;
  }
#ifdef MOE_WITH_CUDA
  void* p = nullptr;
  cuda_check(cudaMalloc(&p, bytes), "cudaMalloc");
  cuda::zero_async(p, bytes);
  return p;
#else
  MOE_FAIL("device memory on ", device_name(device), ": this build has no CUDA backend");
#endif
}

void device_free(Device device, void* ptr) {
  if (ptr == nullptr) return;
  if (device == Device::kCpu) {
    std::free(ptr);
    return;
  }
#ifdef MOE_WITH_CUDA
  cudaFree(ptr);  // a destructor: errors here have nowhere to go
#endif
}

void device_zero(Device device, void* ptr, size_t bytes) {
  if (ptr == nullptr || bytes == 0) return;
  if (device == Device::kCpu) {
    std::memset(ptr, 0, bytes);
    return;
  }
#ifdef MOE_WITH_CUDA
  cuda::zero_async(ptr, bytes);
#else
  MOE_FAIL("device memory on ", device_name(device), ": this build has no CUDA backend");
#endif
}

double device_free_bytes(Device device) {
  MOE_CHECK(device != Device::kCpu, "device_free_bytes: the CPU's memory is the host's");
#ifdef MOE_WITH_CUDA
  size_t free = 0, total = 0;
  cuda_check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  return static_cast<double>(free);
#else
  MOE_FAIL("device memory on ", device_name(device), ": this build has no CUDA backend");
#endif
}

void copy_bytes(Device dst_device, void* dst, Device src_device, const void* src,
                size_t bytes) {
  if (bytes == 0) return;
  if (dst_device == Device::kCpu && src_device == Device::kCpu) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef MOE_WITH_CUDA
  cuda::copy_bytes(src, src_device, dst, dst_device, bytes);
#else
  MOE_FAIL("device memory on ", device_name(Device::kCuda), ": this build has no CUDA backend");
#endif
}

}  // namespace moe
