#include "framework/parallel/device_group.h"

#include "framework/core/error.h"

#ifdef MOE_WITH_CUDA
#include "framework/parallel/cuda/nccl_communicator.h"
#include "framework/parallel/mpi_communicator.h"
#endif

namespace moe {

std::unique_ptr<Communicator> make_device_group(Device device, const Communicator& group) {
  if (device == Device::kCpu || group.size() == 1) return nullptr;
#ifdef MOE_WITH_CUDA
  const auto* mpi = dynamic_cast<const MpiCommunicator*>(&group);
  MOE_CHECK(mpi != nullptr, "make_device_group: the group is not an MPI communicator");
  return std::make_unique<NcclCommunicator>(*mpi);
#else
  (void)group;
  MOE_FAIL("make_device_group: a ", device_name(device), " group in a build without the "
           "CUDA backend");
#endif
}

}  // namespace moe
