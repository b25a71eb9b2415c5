#include "framework/kernels/cuda/context.h"

#include <algorithm>
#include <cstdio>

#include "framework/core/error.h"
#include "framework/kernels/cuda/check.h"

namespace moe::cuda {
namespace {

thread_local Context* current_context = nullptr;

// cuBLAS workspace: fixed, so that cuBLAS never allocates during a step and picks the
// same kernels every run (its results are then reproducible on one GPU model).
constexpr size_t kBlasWorkspaceBytes = size_t{32} << 20;
constexpr size_t kAlignment = 256;

}  // namespace

int device_count() {
  int count = 0;
  // No driver or no device is "none visible", not a failure: the caller says so.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

DeviceArena::~DeviceArena() {
  for (const Chunk& c : chunks_) cudaFree(c.base);  // a destructor: nowhere to report
}

void* DeviceArena::allocate(size_t bytes) {
  bytes = (std::max<size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  if (chunks_.empty() || chunks_.back().used + bytes > chunks_.back().size) {
    Chunk c;
    c.size = std::max({bytes, peak_, size_t{1} << 20});
    MOE_CUDA_CHECK(cudaMalloc(&c.base, c.size));
    chunks_.push_back(c);
  }
  Chunk& c = chunks_.back();
  void* p = c.base + c.used;
  c.used += bytes;
  return p;
}

void DeviceArena::reset() {
  size_t used = 0;
  for (const Chunk& c : chunks_) used += c.used;
  peak_ = std::max(peak_, used);
  if (chunks_.size() > 1) {
    // cudaFree waits for the device: queued kernels that read the chunks finish first.
    for (const Chunk& c : chunks_) MOE_CUDA_CHECK(cudaFree(c.base));
    chunks_.clear();
  }
  for (Chunk& c : chunks_) c.used = 0;
}

Context::Context(int device) : device_(device) {
  MOE_CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop{};
  MOE_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  multiprocessors_ = prop.multiProcessorCount;
  char text[512];
  std::snprintf(text, sizeof(text), "cuda:%d %s (sm_%d%d, %.1f GiB)", device, prop.name,
                prop.major, prop.minor,
                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  description_ = text;
  MOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  MOE_CUBLAS_CHECK(cublasCreate(&blas_));
  MOE_CUBLAS_CHECK(cublasSetStream(blas_, stream_));
  MOE_CUDA_CHECK(cudaMalloc(&blas_workspace_, kBlasWorkspaceBytes));
  MOE_CUBLAS_CHECK(cublasSetWorkspace(blas_, blas_workspace_, kBlasWorkspaceBytes));
  // fp32 products stay fp32 (no TF32): the fp32 mode is compared with the CPU.
  MOE_CUBLAS_CHECK(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH));
}

Context::~Context() {
  if (current_context == this) current_context = nullptr;
  cudaStreamSynchronize(stream_);  // a destructor: errors have nowhere to go
  cublasDestroy(blas_);
  cudaFree(blas_workspace_);
  cudaStreamDestroy(stream_);
}

void Context::make_current(Context* context) {
  if (context != nullptr) MOE_CUDA_CHECK(cudaSetDevice(context->device_));
  current_context = context;
}

void Context::begin_op() {
  uploads_.reset();
  scratch_.reset();
}

const void* Context::upload_bytes(const void* host, size_t bytes) {
  void* device = uploads_.allocate(bytes);
  // From pageable memory the copy returns once the source has been staged, so the
  // caller may reuse its array at once.
  if (bytes > 0)
    MOE_CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_));
  return device;
}

void Context::download(const void* device, void* host, size_t bytes) {
  if (bytes > 0)
    MOE_CUDA_CHECK(cudaMemcpyAsync(host, device, bytes, cudaMemcpyDeviceToHost, stream_));
  synchronize();
}

void Context::synchronize() { MOE_CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void zero_async(void* device, size_t bytes) {
  if (bytes == 0) return;
  if (current_context != nullptr) {
    MOE_CUDA_CHECK(cudaMemsetAsync(device, 0, bytes, current_context->stream()));
    return;
  }
  MOE_CUDA_CHECK(cudaMemset(device, 0, bytes));
  MOE_CUDA_CHECK(cudaDeviceSynchronize());
}

Context& current() {
  MOE_CHECK(current_context != nullptr,
            "a CUDA tensor reached the op API without a CUDA device (run.device = cuda)");
  return *current_context;
}

}  // namespace moe::cuda
