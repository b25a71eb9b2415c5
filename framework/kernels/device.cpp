#include "framework/kernels/device.h"

#include "framework/core/error.h"

#ifdef MOE_WITH_CUDA
#include "framework/kernels/cuda/context.h"
#else
namespace moe::cuda {
class Context {};  // never made without the backend
}  // namespace moe::cuda
#endif

namespace moe {

int visible_cuda_devices() {
#ifdef MOE_WITH_CUDA
  return cuda::device_count();
#else
  return 0;
#endif
}

int choose_gpu(int local_rank, int local_size, int visible, bool share_gpus) {
  MOE_USER_CHECK(visible > 0, "run.device: cuda, but no CUDA device is visible to this "
                 "process (check the driver and CUDA_VISIBLE_DEVICES)");
  MOE_USER_CHECK(local_size <= visible || share_gpus, "run.device: cuda with ", local_size,
                 " ranks on this node but ", visible, " visible GPU", visible == 1 ? "" : "s",
                 "; start at most ", visible, " ranks per node or set run.share_gpus = true");
  return local_rank % visible;
}

ComputeDevice::ComputeDevice(Device device, int local_rank, int local_size, bool share_gpus)
    : device_(device) {
  if (device == Device::kCpu) return;
#ifdef MOE_WITH_CUDA
  const int gpu = choose_gpu(local_rank, local_size, visible_cuda_devices(), share_gpus);
  context_ = std::make_unique<cuda::Context>(gpu);
  cuda::Context::make_current(context_.get());
#else
  (void)local_rank, (void)local_size, (void)share_gpus;
  MOE_USER_FAIL("run.device: cuda, but this build has no CUDA backend");
#endif
}

ComputeDevice::~ComputeDevice() {
#ifdef MOE_WITH_CUDA
  if (context_) cuda::Context::make_current(nullptr);
#endif
}

std::string ComputeDevice::description() const {
#ifdef MOE_WITH_CUDA
  if (context_) return context_->description();
#endif
  return device_name(device_);
}

}  // namespace moe
