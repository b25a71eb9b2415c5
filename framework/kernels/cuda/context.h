#pragma once
// The per-rank state of the CUDA backend: the rank's GPU, one stream that every kernel
// and library call of the op API is queued on (so they run in program order and a
// buffer can be reused by the next op without a sync), the cuBLAS handle with its
// workspace, and two device arenas for the op in flight:
//   uploads: device copies of the host index arrays an op takes (token ids, slots,
//            expert offsets: the op API passes them as host spans);
//   scratch: temporaries of a kernel (partial sums of deterministic reductions,
//            pointer arrays of batched GEMMs).
// Both are reset when the next op starts: stream order makes the reuse safe.
//
// One Context per rank, owned by ComputeDevice (framework/kernels/device.h), which makes
// it current for the thread; the CUDA op wrappers read current().

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace moe::cuda {

// CUDA devices this process sees (0 when the driver or the devices are missing).
int device_count();

// Bump allocation from a device buffer; reset() frees everything at once. Pointers stay
// valid until reset(): a full arena chains a new chunk, and reset() merges the chunks
// into one large enough for the next op.
class DeviceArena {
 public:
  DeviceArena() = default;
  ~DeviceArena();
  DeviceArena(const DeviceArena&) = delete;
  DeviceArena& operator=(const DeviceArena&) = delete;

  void* allocate(size_t bytes);  // 256-byte aligned
  void reset();

 private:
  struct Chunk {
    char* base = nullptr;
    size_t size = 0, used = 0;
  };
  std::vector<Chunk> chunks_;
  size_t peak_ = 0;  // bytes the largest op has needed
};

class Context {
 public:
  explicit Context(int device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  // The context the op API uses on this thread (null: none).
  static void make_current(Context* context);

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasHandle_t blas() const { return blas_; }
  int multiprocessors() const { return multiprocessors_; }
  // "cuda:0 NVIDIA H200 (sm_90, 139.8 GiB)"
  const std::string& description() const { return description_; }

  // Called by every op wrapper first: the previous op's uploads and scratch are free.
  void begin_op();
  // A device copy of a host array, valid until the next begin_op().
  template <class T>
  const T* upload(std::span<const T> host) {
    return static_cast<const T*>(upload_bytes(host.data(), host.size_bytes()));
  }
  template <class T>
  T* scratch(size_t count) {
    return static_cast<T*>(scratch_.allocate(count * sizeof(T)));
  }
  // Copies device memory to the host and waits for it (and everything queued before).
  void download(const void* device, void* host, size_t bytes);
  void synchronize();

 private:
  const void* upload_bytes(const void* host, size_t bytes);

  int device_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  void* blas_workspace_ = nullptr;
  int multiprocessors_ = 0;
  std::string description_;
  DeviceArena uploads_, scratch_;
};

// Zeroes device memory in stream order: on the current context's stream, so the ops
// queued after it see zeros (without a context: at once, waiting for the device).
void zero_async(void* device, size_t bytes);

// The current context; an internal error when there is none (a CUDA tensor without a
// ComputeDevice).
Context& current();

}  // namespace moe::cuda
