#pragma once
// The communicator of a process group for device buffers: with run.device = cuda the
// collectives over tensors on the GPU (the gradient buckets) go through NCCL, made from
// the group's MPI communicator (framework/parallel/cuda/nccl_communicator.h); MPI keeps
// the host scalars and control (losses, norms, routing counts, checkpoints).

#include <memory>

#include "framework/core/dtype.h"
#include "framework/parallel/communicator.h"

namespace moe {

// For `device`: the CPU, or a group of one rank (nothing to exchange): null, the MPI
// group serves; cuda: an NcclCommunicator over the ranks of `group` (an MPI
// communicator). Collective over the group. An internal error without the CUDA backend.
std::unique_ptr<Communicator> make_device_group(Device device, const Communicator& group);

}  // namespace moe
