#pragma once
// The device a rank computes on (run.device): the CPU, or one GPU per rank with the
// CUDA backend. A rank takes GPU (local rank mod visible GPUs); a node with more ranks
// than visible GPUs is refused unless run.share_gpus lets ranks share them.
//
// ComputeDevice owns the backend's per-rank state (framework/kernels/cuda/context.h:
// the stream, the cuBLAS handle, the workspaces) and makes it the one the op API uses
// on this thread while it lives, as CUDA itself keeps a current device per thread.

#include <memory>
#include <string>

#include "framework/core/dtype.h"

namespace moe {

namespace cuda {
class Context;
}

// True when the library was built with the CUDA backend (MOE_WITH_CUDA).
constexpr bool cuda_backend_built() {
#ifdef MOE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// CUDA devices this process sees: 0 without the backend, a driver or a GPU.
int visible_cuda_devices();

// The GPU of node-local rank `local_rank` of `local_size` with `visible` GPUs: local
// rank mod visible. Throws a user error naming run.device (no GPU) or run.share_gpus
// (more ranks than GPUs without it).
int choose_gpu(int local_rank, int local_size, int visible, bool share_gpus);

class ComputeDevice {
 public:
  // run.device = cpu: nothing to set up. cuda: picks this rank's GPU (choose_gpu) and
  // creates its stream and library handles.
  ComputeDevice(Device device, int local_rank, int local_size, bool share_gpus);
  ~ComputeDevice();
  ComputeDevice(const ComputeDevice&) = delete;
  ComputeDevice& operator=(const ComputeDevice&) = delete;

  Device device() const { return device_; }
  // "cpu", or "cuda:1 NVIDIA H200 (sm_90, 139.8 GiB)": for the start-up line
  std::string description() const;

 private:
  Device device_;
  std::unique_ptr<cuda::Context> context_;  // cuda only
};

}  // namespace moe
